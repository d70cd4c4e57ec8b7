"""oe evidence wikitext: the arms' overrides, verdicts on seed ranges, the gap's trend, and the
outputs (CSVs, curves, evidence.md, the m-law through oe report) from finished run folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from oe.analysis.evidence import SUPPORTS, UNDECIDED, EvidenceError, Spread
from oe.analysis.wikitext_study import (ARMS, LAW_MODULI, QUICK_MODULUS, arm_finals, catch_up,
                                        judge_arms, law_arms)
from oe.cli.evidence import main as evidence_main

STEPS = [49, 99, 149, 199]
TOKENS_PER_STEP = 2048


def history(losses: list[float]) -> dict:
    tokens = [(s, float((s + 1) * TOKENS_PER_STEP)) for s in STEPS]
    return {"train/tokens": tokens, "val/loss": list(zip(STEPS, losses))}


def test_every_oe_arm_names_its_combine_and_m():
    for arm in ARMS.values():
        if arm.name != "baseline":
            assert "--model.over_encoding.combine" in arm.overrides, arm.name
            assert arm.modulus in LAW_MODULI, arm.name
    assert [ARMS[a].modulus for a in law_arms("oe3_sum")] == LAW_MODULI
    assert QUICK_MODULUS in LAW_MODULI


def test_judge_arms_uses_the_seed_ranges():
    finals = {"baseline": Spread.of([5.30, 5.32]), "oe3_sum": Spread.of([5.20, 5.22]),
              "oe3_mean": Spread.of([5.31, 5.40])}
    verdicts = {(arm, ref): v.verdict for _, arm, ref, v in judge_arms(finals)}
    assert verdicts[("oe3_sum", "baseline")] == SUPPORTS
    assert verdicts[("oe3_sum", "oe3_mean")] == SUPPORTS
    assert verdicts[("oe3_mean", "baseline")] == UNDECIDED     # ranges overlap
    assert ("oe3_sum_tlr10", "baseline") not in verdicts       # not run: not judged


def test_catch_up_extrapolates_a_shrinking_gap_in_log_tokens():
    base = [history([6.0, 5.6, 5.4, 5.3])]
    # the gap: 0.4, 0.3, 0.2, 0.1 at tokens 1e5 * (1, 2, 3, 4): shrinking
    arm = [history([6.4, 5.9, 5.6, 5.4])]
    gap = catch_up(arm, base)
    assert np.allclose(gap.gap, [0.4, 0.3, 0.2, 0.1])
    assert gap.closes_at is not None and gap.closes_at > gap.tokens[-1]
    leads = catch_up([history([5.9, 5.5, 5.3, 5.2])], base)
    assert leads.closes_at is None and leads.trend == "leads at the end"
    widening = catch_up([history([6.1, 5.8, 5.7, 5.7])], base)
    assert widening.closes_at is None and "does not shrink" in widening.trend


def test_arm_finals_compare_at_the_tokens_every_run_reached():
    short = {"train/tokens": [(49, 50.0 * TOKENS_PER_STEP), (99, 100.0 * TOKENS_PER_STEP)],
             "val/loss": [(49, 6.0), (99, 5.0)]}
    tokens, finals = arm_finals({"baseline": [history([6.0, 5.6, 5.4, 5.3]), short]})
    assert tokens == 100 * TOKENS_PER_STEP
    assert finals["baseline"].n == 2 and finals["baseline"].mean == pytest.approx(5.3)


def fake_run(runs_dir: Path, arm: str, seed: int, losses: list[float]) -> None:
    """A finished oe.fit run folder: csv/version_0/{metrics.csv, config.yaml}, finished.json."""
    folder = runs_dir / f"{arm}_s{seed}"
    csv = folder / "csv" / "version_0"
    csv.mkdir(parents=True)
    rows = ["step,train/tokens,val/loss"]
    rows += [f"{s},{(s + 1) * TOKENS_PER_STEP},{loss}" for s, loss in zip(STEPS, losses)]
    (csv / "metrics.csv").write_text("\n".join(rows) + "\n")
    modulus = ARMS[arm].modulus
    model = {"backbone": {"n_layer": 4, "n_embd": 128}}
    if modulus:
        model["over_encoding"] = {"orders": [2, 3], "k": 1, "modulus": modulus}
    (csv / "config.yaml").write_text(yaml.safe_dump({"model": model, "run_group": "wikitext"}))
    (folder / "finished.json").write_text(json.dumps({"step": STEPS[-1]}))


def test_report_only_writes_the_study_from_finished_runs(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    for seed in (0, 1):
        fake_run(runs, "baseline", seed, [6.0, 5.6, 5.4, 5.30 + 0.01 * seed])
        fake_run(runs, "oe3_mean", seed, [6.4, 5.9, 5.6, 5.45 + 0.01 * seed])
        for m, arm in zip(LAW_MODULI, law_arms("oe3_sum")):
            final = 5.25 - 0.02 * np.log10(m) + 0.01 * seed
            fake_run(runs, arm, seed, [5.9, 5.5, 5.3, final])
    (runs / "oe3_sum_tlr10_s0").mkdir()  # unfinished: left out
    assert evidence_main(["wikitext", "--report_only", "--runs_dir", str(runs),
                          "--out", str(out)]) == 0
    assert (out / "wikitext_curves.png").stat().st_size > 0
    assert (out / "oe3_mean_s1.csv").is_file() and not (out / "oe3_sum_tlr10_s0.csv").exists()
    text = (out / "evidence.md").read_text()
    assert "| OE-3 with sum beats the baseline | supports |" in text
    assert "| OE-3 with the paper's mean beats the baseline | contradicts |" in text
    assert "`oe3_sum` (m = 1,009, 10,007, 100,003, 1,000,003; 8 runs)" in text
    assert "-0.0200 log10(m)" in text
    assert (out / "mlaw_oe3_sum" / "loglinear.png").is_file()
    assert "-0.0200" in (out / "mlaw_oe3_sum" / "report.md").read_text()


def test_bad_requests_are_one_clear_error(tmp_path, capsys):
    assert evidence_main(["wikitext", "--arms", "oe3_avg", "--runs_dir", str(tmp_path)]) == 2
    assert "no arm oe3_avg" in capsys.readouterr().err
    assert evidence_main(["wikitext", "--report_only", "--runs_dir", str(tmp_path / "none"),
                          "--out", str(tmp_path / "out")]) == 2
    assert "no finished run" in capsys.readouterr().err
    with pytest.raises(EvidenceError, match="two or more validations"):
        catch_up([{"train/tokens": [(0, 1.0)], "val/loss": [(0, 1.0)]}], [history([1, 1, 1, 1])])


def test_paired_differences_pair_runs_of_one_seed():
    from oe.analysis.wikitext_study import paired_differences

    histories = {"baseline": [history([6, 5.6, 5.4, 5.3]), history([6, 5.7, 5.5, 5.4])],
                 "oe3_sum": [history([6, 5.6, 5.4, 5.35])]}
    seeds = {"baseline": [0, 1], "oe3_sum": [1]}
    paired = paired_differences(histories, seeds, 200 * TOKENS_PER_STEP, "oe3_sum")
    assert list(paired) == [1] and paired[1] == pytest.approx(-0.05)
