"""oe.analysis.report: reading runs (CSV versions, offline W&B files), the log-linear fit, the rendering."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from lightning.pytorch.loggers import CSVLogger

from oe.analysis.plot import read_csv_history
from oe.analysis.report import PAPER_SLOPE
from oe.analysis.runs import ReportError, read_run_dir
from oe.analysis.statistics import fit_log_linear, student_t_quantile
from oe.cli.report import main


def make_run(root: Path, name: str, group: str, m: int | None,
             versions: list[list[tuple[int, dict]]]) -> Path:
    """A run folder as oe.cli.fit writes it: csv/version_N/metrics.csv (by CSVLogger) + config.yaml."""
    run_dir = root / name
    for rows in versions:
        logger = CSVLogger(run_dir, name="csv")
        for step, metrics in rows:
            logger.log_metrics(metrics, step=step)
        logger.save()
        config = {"run_name": name, "run_group": group,
                  "model": {"over_encoding": None if m is None else {"modulus": m, "orders": [2]}}}
        (Path(logger.log_dir) / "config.yaml").write_text(yaml.safe_dump(config))
    return run_dir


@pytest.mark.parametrize("dof, expected", [(1, 12.7062), (2, 4.3027), (10, 2.2281), (100, 1.9840)])
def test_student_t_quantile_matches_tables(dof, expected):
    assert student_t_quantile(0.975, dof) == pytest.approx(expected, abs=2e-3)


def test_quantile_and_fit_agree_with_scipy():
    """scipy is not a dependency of oe (the statistics are computed in oe.analysis.statistics);
    where it is installed (the dev extras bring it), both agree with scipy.stats."""
    stats = pytest.importorskip("scipy.stats")
    for dof, p in [(1, 0.975), (3, 0.975), (7, 0.9), (30, 0.99)]:
        assert student_t_quantile(p, dof) == pytest.approx(stats.t.ppf(p, dof), rel=1e-4)
    rng = np.random.default_rng(1)
    m = [1009, 10007, 100003, 1000003, 1009, 100003]
    loss = [2.0 - 0.03 * math.log10(x) + rng.normal(0, 0.01) for x in m]
    ours, theirs = fit_log_linear(m, loss), stats.linregress(np.log10(m), loss)
    assert (ours.slope, ours.intercept) == pytest.approx((theirs.slope, theirs.intercept), rel=1e-9)
    assert ours.slope_stderr == pytest.approx(theirs.stderr, rel=1e-9)
    half = stats.t.ppf(0.975, len(m) - 2) * theirs.stderr
    assert ours.ci95 == pytest.approx((theirs.slope - half, theirs.slope + half), rel=1e-4)


def test_fit_recovers_the_slope_and_its_interval_covers_it():
    m = [10**k for k in (2, 3, 4, 5, 6)]
    exact = fit_log_linear(m, [2.6754 + PAPER_SLOPE * math.log10(x) for x in m])
    assert exact.slope == pytest.approx(PAPER_SLOPE, abs=1e-12)
    assert exact.intercept == pytest.approx(2.6754, abs=1e-12)
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(200):
        noisy = [2.6754 + PAPER_SLOPE * math.log10(x) + rng.normal(0, 0.01) for x in m]
        fit = fit_log_linear(m, noisy)
        covered += fit.ci95[0] <= PAPER_SLOPE <= fit.ci95[1]
    assert 0.88 <= covered / 200 <= 0.99  # a 95% interval, 200 draws
    two = fit_log_linear([100, 1000], [2.0, 1.9])
    assert two.slope == pytest.approx(-0.1) and math.isnan(two.slope_stderr)
    with pytest.raises(ReportError, match="two or more values of m"):
        fit_log_linear([7, 7], [1.0, 1.1])


def test_resumed_run_versions_are_merged_at_the_resume_step(tmp_path):
    run = make_run(tmp_path, "r", "g", 7, [
        [(s, {"train/loss": 3.0 - 0.01 * s}) for s in range(0, 50, 5)],   # preempted after 45
        [(s, {"train/loss": 2.0 - 0.01 * s}) for s in range(30, 80, 5)],  # resumed from step 30
    ])
    history = read_csv_history(run / "csv")["train/loss"]
    assert [s for s, _ in history] == list(range(0, 80, 5))
    assert dict(history)[25] == pytest.approx(2.75) and dict(history)[30] == pytest.approx(1.7)


def test_offline_wandb_run_is_read_when_there_is_no_csv(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "w"
    run_dir.mkdir()
    run = wandb.init(dir=str(run_dir), project="p", group="grp", name="wrun",
                     config={"model": {"over_encoding": {"modulus": 37}}})
    for step in range(0, 600, 10):  # enough rows to cross the file's 32 KiB blocks
        run.log({"val/loss": 2.0 - step / 1000, "trainer/global_step": step,
                 "note": "x" * 200})
    run.finish()
    wandb.teardown()  # the W&B service writes the file's last blocks when it shuts down
    loaded = read_run_dir(run_dir)
    assert (loaded.name, loaded.group, loaded.modulus) == ("wrun", "grp", 37)
    steps, values = zip(*loaded.history["val/loss"])
    assert list(steps) == list(range(0, 600, 10))
    assert values[-1] == pytest.approx(2.0 - 0.59)
    assert "note" not in loaded.history  # only numbers are metrics


def test_report_renders_curves_fit_and_downstream(tmp_path):
    runs = tmp_path / "runs" / "sw"
    losses = {7: 1.30, 37: 1.27, 211: 1.25}
    for m, final in losses.items():
        rows = [(s, {"train/loss": final + 0.5 / (1 + s)}) for s in range(0, 100, 10)]
        rows += [(99, {"val/loss": final, "val/gen_acc": 0.5,
                       "downstream/piqa/acc": 0.6, "downstream/piqa/acc_stderr": 0.01})]
        make_run(runs, f"m={m}", "sw", m, [rows])
    make_run(runs, "baseline", "sw", None, [[(99, {"val/loss": 1.4, "train/loss": 1.4,
                                                    "val/gen_acc": 0.4})]])
    out = tmp_path / "report"
    assert main([str(runs), "--out", str(out)]) == 0
    for png in ("curves_sw.png", "loglinear.png"):
        assert (out / png).stat().st_size > 10_000
    text = (out / "report.md").read_text()
    fit = fit_log_linear(list(losses), list(losses.values()))
    assert f"{fit.slope:+.4f}" in text and f"{PAPER_SLOPE:+.4f}" in text
    assert f"[{fit.ci95[0]:+.4f}, {fit.ci95[1]:+.4f}]" in text
    assert "| m=37 | sw | 0.6000 ± 0.0100 |" in text  # downstream table
    assert "| baseline | sw | – |" in text


def test_a_metric_some_run_lacks_is_one_error_before_rendering(tmp_path, capsys):
    runs = tmp_path / "runs"
    make_run(runs, "a", "g", 7, [[(10, {"val/loss": 1.0})]])
    make_run(runs, "b", "g", 37, [[(10, {"train/loss": 1.0})]])
    out = tmp_path / "out"
    assert main([str(runs / "a"), str(runs / "b"), "--out", str(out), "--metrics", "val/loss"]) == 2
    err = capsys.readouterr().err
    assert "'val/loss' is missing from 1 run(s): b" in err and "train/loss" in err
    assert not out.exists()
    assert main([str(tmp_path / "nothing-here"), "--out", str(out)]) == 2


def test_runs_that_never_validated_report_without_the_fit_unless_it_is_asked_for(tmp_path, capsys):
    runs = tmp_path / "runs"
    for m in (7, 37):
        make_run(runs, f"m={m}", "g", m, [[(s, {"train/loss": 2.0 - s / 100}) for s in (0, 10)]])
    out = tmp_path / "out"
    assert main([str(runs), "--out", str(out)]) == 0
    assert ("Not fitted: `val/loss` was never logged by m=37, m=7 (a run that never validated)"
            in (out / "report.md").read_text())
    assert main([str(runs), "--out", str(tmp_path / "asked"), "--fit_metric", "val/loss"]) == 2
    assert "the fit's metric 'val/loss' is missing from" in capsys.readouterr().err
    assert main([str(runs), "--out", str(tmp_path / "train"), "--fit_metric", "train/loss"]) == 0


def test_default_report_shows_excess_loss_and_viable_fraction_and_wikitext_runs_without_them(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "cfg", "g", 7, [[(s, {"train/loss": 1.0, "train/tokens": 100.0 * (s + 1)})
                                    for s in range(10)]
                                   + [(9, {"val/loss": 0.9, "val/excess_loss": 0.16,
                                           "val/gen_viable_frac": 0.42})]])
    make_run(runs, "wikitext", "g", None, [[(9, {"train/loss": 3.0, "val/loss": 3.1})]])
    out = tmp_path / "out"
    assert main([str(runs), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "final val/excess_loss" in text and "final val/gen_viable_frac" in text
    assert "final val/gen_acc" not in text  # no run logged it
    assert "| cfg | g | 7 | 9 | 1,000 | 1.0000 | 0.9000 | 0.1600 | 0.4200 |" in text
    assert "| wikitext | g | – | 9 | – | 3.0000 | 3.1000 | – | – |" in text
    assert "Not compared" in text and "wikitext" in text.split("## At equal tokens")[1]


def test_runs_are_compared_at_equal_tokens_not_equal_steps(tmp_path):
    runs = tmp_path / "runs"
    # "small" trains 100 tokens a step, "big" 300: at step 9 they saw 1,000 and 3,000 tokens.
    for name, per_step, losses in (("small", 100, {4: 2.0, 9: 1.5}), ("big", 300, {1: 2.4, 4: 1.2, 9: 0.8})):
        rows = [(s, {"train/loss": 1.0, "train/tokens": float(per_step * (s + 1))}) for s in range(10)]
        rows += [(s, {"val/loss": v}) for s, v in losses.items()]
        make_run(runs, name, "g", None, [rows])
    out = tmp_path / "out"
    assert main([str(runs), "--out", str(out)]) == 0
    section = (out / "report.md").read_text().split("## At equal tokens")[1].split("##")[0]
    assert "val/loss @ 1,000 tokens" in section
    # big at 1,000 tokens: between step 1 (600 tokens, 2.4) and step 4 (1,500 tokens, 1.2)
    assert f"| big | g | {2.4 + (1.2 - 2.4) * 400 / 900:.4f} |" in section
    assert "| small | g | 1.5000 |" in section


def _csv(path: Path, rows: list[dict]) -> None:
    """A metrics.csv as CSVLogger writes it (step column, empty cells where nothing was logged)."""
    keys = sorted({k for r in rows for k in r} - {"step"})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(",".join(["step", *keys]) + "\n" + "".join(
        ",".join([str(r["step"]), *(str(r.get(k, "")) for k in keys)]) + "\n" for r in rows))


def test_evidence_layouts_are_read_and_seeds_form_one_series(tmp_path):
    from oe.analysis.runs import expand_run_dirs, read_run

    flat = tmp_path / "cpu_tiny"  # docs/evidence/cfg3f_cpu_tiny: one CSV file per run
    folders = tmp_path / "gpu"    # docs/evidence/cfg3f_gpu: one folder with metrics.csv per run
    for seed in (0, 1):
        rows = [{"step": s, "train/loss": 2.0 - s / 100 + seed / 10, "train/tokens": 64 * (s + 1)}
                for s in range(0, 40, 4)]
        _csv(flat / f"oe3_s{seed}.csv", rows)
        _csv(folders / f"cfg_oe3-seed{seed}" / "metrics.csv", rows)
    for root, name in ((flat, "oe3_s1"), (folders, "cfg_oe3-seed1")):
        runs = [read_run(p) for p in expand_run_dirs([root])]
        assert [r.name for r in runs][1] == name and len({r.label for r in runs}) == 1
        assert runs[1].final("train/loss") == pytest.approx(2.0 - 36 / 100 + 0.1)
        x, _ = runs[0].curve("train/loss", "train/tokens")
        assert x.tolist() == [64.0 * (s + 1) for s in range(0, 40, 4)]
        out = tmp_path / f"report-{root.name}"
        assert main([str(root), "--out", str(out), "--x", "tokens"]) == 0
        assert (out / f"curves_{root.name}.png").stat().st_size > 10_000


def test_evaluation_results_in_the_run_folder_reach_the_downstream_table(tmp_path):
    import json

    run = make_run(tmp_path / "runs", "r", "g", None, [[(s, {"val/loss": 1.0}) for s in (10, 20)]])
    (run / "eval").mkdir()
    (run / "eval" / "last.json").write_text(json.dumps({
        "source": "x", "step": 20, "not_run": {},
        "tasks": {"piqa": {"acc": 0.625, "acc_stderr": 0.05, "acc_norm": 0.5,
                           "acc_norm_stderr": 0.05, "n": 40}}}))
    loaded = read_run_dir(run)
    assert loaded.history["downstream/piqa/acc"] == [(20, 0.625)]
    out = tmp_path / "out"
    assert main([str(run), "--out", str(out)]) == 0
    assert "| r | g | 0.6250 ± 0.0500 | 0.5000 ± 0.0500 |" in (out / "report.md").read_text()


def test_fit_per_group_at_the_aligned_step(tmp_path):
    from oe.analysis.statistics import fit_groups

    runs_dir = tmp_path / "runs"
    for k in (1, 2):
        for m, slope_sign in ((7, 0), (37, 1), (211, 2)):
            rows = [(s, {"val/loss": 2.0 - 0.01 * k * slope_sign - s / 1000}) for s in (10, 20, 30)]
            rows += [(40, {"val/loss": 0.0})] if m == 211 else []  # only one run got further
            run = make_run(runs_dir, f"k{k}-m{m}", "g", m, [rows])
            config_file = next(run.glob("csv/version_*/config.yaml"))
            config = yaml.safe_load(config_file.read_text())
            config["model"]["over_encoding"]["k"] = k
            config_file.write_text(yaml.safe_dump(config))
    runs = [read_run_dir(p) for p in sorted(runs_dir.iterdir())]
    fits = fit_groups(runs, "val/loss", 1)
    assert [g.group for g in fits] == ["orders=1+2, k=1, size=?", "orders=1+2, k=2, size=?"]
    for k, g in zip((1, 2), fits):
        assert g.step == 30  # not the longer run's step 40
        expected = fit_log_linear([7, 37, 211], [1.97 - 0.01 * k * i for i in range(3)])
        assert g.fit.slope == pytest.approx(expected.slope)
    out = tmp_path / "out"
    assert main([str(runs_dir), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "| orders=1+2, k=2, size=? | 30 | 3 |" in text


def test_robust_range_ignores_one_spike_and_smoothing_keeps_short_curves():
    from oe.analysis.plot import robust_limits, smooth

    values = np.concatenate([np.linspace(2.0, 1.0, 200), [50.0]])
    low, high = robust_limits(values)
    assert high < 2.2 and low < 1.0
    assert smooth(np.array([1.0, 5.0, 1.0]), 0.9).tolist() == [1.0, 5.0, 1.0]  # few points: as logged
    long = smooth(np.full(30, 3.0), 0.9)
    assert np.allclose(long, 3.0)  # debiased: a constant stays constant from the first point


def test_out_is_checked_before_anything_is_read(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main([str(tmp_path / "nothing-here"), "--out", str(blocker / "report")]) == 2
    assert "cannot be written" in capsys.readouterr().err  # not the missing runs
