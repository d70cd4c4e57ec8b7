"""oe.evidence: sizing and its refusal, values at equal tokens, the claims' verdicts, the outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from oe.analysis.evidence import (CONTRADICTS, PAPER_TARGET_TOKENS, SUPPORTS, UNDECIDED,
                                  Calibration, EvidenceError, Spread, budget_share, chain_verdict,
                                  common_tokens, curve_against_tokens, final_spreads, judge_against,
                                  judge_claims,
                                  order_verdict, steps_in_budget, render_markdown, value_at_tokens,
                                  warmup_for)

REPO = Path(__file__).resolve().parents[2]


def spread(*values: float) -> Spread:
    return Spread.of(list(values))


# -- verdicts --------------------------------------------------------------------------------------

def test_order_verdict_supports_when_means_ordered_and_ranges_apart():
    verdict = order_verdict(spread(0.80, 0.82), spread(0.90, 0.95), lower_is_better=True,
                            better_name="OE-3", worse_name="baseline")
    assert verdict.verdict == SUPPORTS
    assert "OE-3 0.8100 (0.8000..0.8200, n=2)" in verdict.reason


def test_order_verdict_contradicts_the_opposite_order_with_ranges_apart():
    assert order_verdict(spread(0.90, 0.95), spread(0.80, 0.82), True).verdict == CONTRADICTS


def test_order_verdict_cannot_decide_overlapping_ranges_or_one_seed():
    overlap = order_verdict(spread(0.80, 0.91), spread(0.90, 0.95), True)
    assert overlap.verdict == UNDECIDED and "overlap" in overlap.reason
    assert order_verdict(spread(0.5), spread(0.9), True).verdict == UNDECIDED


def test_order_verdict_higher_is_better_for_accuracy():
    assert order_verdict(spread(0.6, 0.7), spread(0.1, 0.2), lower_is_better=False).verdict == SUPPORTS
    assert order_verdict(spread(0.1, 0.2), spread(0.6, 0.7), lower_is_better=False).verdict == CONTRADICTS


def test_chain_verdict_needs_every_link_and_any_contradiction_wins():
    yes, no = order_verdict(spread(1, 2), spread(3, 4), True), order_verdict(spread(3, 4), spread(1, 2), True)
    maybe = order_verdict(spread(1, 3), spread(2, 4), True)
    assert chain_verdict([yes, yes]).verdict == SUPPORTS
    assert chain_verdict([yes, maybe]).verdict == UNDECIDED
    assert chain_verdict([maybe, no]).verdict == CONTRADICTS


def test_judge_claims_on_constructed_finals():
    def kind(loss, acc, viable):
        return {"val/loss": spread(*loss), "val/gen_acc": spread(*acc),
                "val/gen_viable_frac": spread(*viable)}
    finals = {"baseline": kind((1.0, 1.1), (0.0, 0.0), (0.2, 0.3)),
              "oe2": kind((0.9, 0.95), (0.0, 0.0), (0.4, 0.5)),
              "oe3": kind((0.8, 0.85), (0.0, 0.0), (0.6, 0.7)),
              "od3": kind((0.7, 0.75), (0.0, 0.0), (0.6, 0.7))}
    verdicts = dict(judge_claims(finals))
    assert verdicts["OE-3 < OE-2 < baseline in loss"].verdict == SUPPORTS
    assert verdicts["OE-3 > OE-2 > baseline in generation accuracy"].verdict == UNDECIDED
    assert "accuracy is 0" in verdicts["OE-3 > OE-2 > baseline in generation accuracy"].reason
    assert verdicts["OE-3 > OE-2 > baseline in viable prefix (graded generation)"].verdict == SUPPORTS
    assert verdicts["OD-3 hurts the 2.4M model: its loss > baseline"].verdict == CONTRADICTS
    assert verdicts["OT-3 <= OE-3 in loss"].verdict == UNDECIDED
    assert "not run: ot3" in verdicts["OT-3 <= OE-3 in loss"].reason


def test_each_kind_against_a_reference_on_seed_ranges():
    def kind(loss, viable):
        return {"val/loss": spread(*loss), "val/gen_acc": spread(0.0, 0.0),
                "val/gen_viable_frac": spread(*viable)}
    finals = {"ref": kind((1.0, 1.1), (0.2, 0.3)),
              "apart": kind((0.8, 0.85), (0.1, 0.15)),   # lower loss, lower viable prefix
              "overlap": kind((1.05, 1.2), (0.25, 0.4))}
    judged = {(k, m): (v, n) for k, m, v, n in judge_against(finals, "ref")}
    assert judged["apart", "val/loss"][0] == "better"
    assert judged["apart", "val/gen_viable_frac"][0] == "worse"
    assert judged["overlap", "val/loss"][0] == "cannot decide"
    assert "ranges overlap" in judged["overlap", "val/loss"][1]
    assert judged["apart", "val/gen_acc"] == ("cannot decide", "0 for every run of both")
    with pytest.raises(EvidenceError, match="reference kind 'oe3' is not among"):
        judge_against(finals, "oe3")
    text = render_markdown(command="c", device="CPU", steps=10, tokens_per_run={
        k: spread(100.0, 100.0) for k in finals}, compared_tokens=100.0, minutes=1, seeds=[0, 1],
        finals=finals, png_name="e.png", metrics=["val/loss"], reference="ref")
    assert "## Each kind against ref" in text
    assert "| apart | val/loss | better | means ordered, ranges apart" in text


def test_a_reference_outside_the_kinds_is_refused_before_anything_runs(capsys):
    from oe.cli.evidence import main

    assert main(["cfg3f", "--minutes", "5", "--kinds", "baseline,oe3", "--seeds", "0",
                 "--reference", "oe2"]) == 2
    assert "--reference oe2 is not one of the kinds (baseline, oe3)" in capsys.readouterr().err


# -- sizing, budget share --------------------------------------------------------------------------

def test_steps_in_budget_fits_the_budget_and_is_a_multiple_of_the_validations():
    calibration = Calibration(seconds_per_step=0.5, startup_seconds=20, validation_seconds=10)
    steps = steps_in_budget(600, runs=4, validations=4, calibration=calibration, margin=0.8, min_steps=10)
    # 150 s per run - 20 - 40 = 90 s; 0.8 * 90 / 0.5 = 144 steps
    assert steps == 144
    assert 4 * (20 + 4 * 10 + steps * 0.5) <= 600


def test_steps_in_budget_counts_validations_without_generation_as_a_step():
    calibration = Calibration(seconds_per_step=0.5, startup_seconds=20, validation_seconds=10)
    # 150 s per run - 20 - 2 generating validations (20 s) - 2 others (1 s) = 109 s; 0.8 * 109 / 0.5
    steps = steps_in_budget(600, runs=4, validations=4, calibration=calibration, margin=0.8,
                       min_steps=10, generations=2)
    assert steps == 172


def test_steps_in_budget_refuses_a_budget_too_small():
    calibration = Calibration(seconds_per_step=2.0, startup_seconds=20, validation_seconds=10)
    with pytest.raises(EvidenceError, match="too small: 1.0 minutes for 2 run.*at least 20"):
        steps_in_budget(60, runs=2, validations=2, calibration=calibration, margin=0.85, min_steps=20)


def test_warmup_is_a_tenth_of_a_short_run_and_the_configured_one_otherwise():
    assert warmup_for(100, 30) == 10
    assert warmup_for(1000, 30) == 30


def test_budget_share_against_the_papers_50b_tokens():
    assert PAPER_TARGET_TOKENS == 10 * 20_000_000 * 251
    assert budget_share(50.2e6) == pytest.approx(1e-3)


# -- equal tokens ----------------------------------------------------------------------------------

def history(tokens_per_step: float, steps: int, losses: dict[int, float]) -> dict:
    return {"train/tokens": [(s, tokens_per_step * (s + 1)) for s in range(steps)],
            "val/loss": sorted(losses.items())}


def test_values_are_compared_at_the_largest_tokens_every_run_reached():
    short = history(100, 10, {4: 2.0, 9: 1.0})       # validation at 500 and 1000 tokens
    long = history(150, 10, {4: 3.0, 9: 2.0})        # at 750 and 1500 tokens
    curves = [curve_against_tokens(h, "val/loss") for h in (short, long)]
    assert curves[0] == [(500, 2.0), (1000, 1.0)]
    assert common_tokens(curves) == 1000
    assert value_at_tokens(curves[1], 1000) == pytest.approx(3.0 - 250 / 750)
    with pytest.raises(EvidenceError, match="outside"):
        value_at_tokens(curves[0], 1200)
    tokens, finals = final_spreads({"a": [short], "b": [long]}, ["val/loss", "val/gen_acc"])
    assert tokens == 1000
    assert finals["a"]["val/loss"].mean == 1.0
    assert finals["b"]["val/loss"].mean == pytest.approx(3.0 - 250 / 750)
    assert "val/gen_acc" not in finals["a"]  # absent, not zero


def test_curve_needs_train_tokens():
    with pytest.raises(EvidenceError, match="train/tokens"):
        curve_against_tokens({"val/loss": [(1, 1.0)]}, "val/loss")


# -- markdown --------------------------------------------------------------------------------------

def test_markdown_states_budget_share_values_and_verdicts():
    finals = {"baseline": {"val/loss": spread(1.0, 1.1), "val/excess_loss": spread(0.26, 0.36)},
              "oe3": {"val/loss": spread(0.8, 0.85)}}
    text = render_markdown(command="python -m oe.evidence cfg3f --minutes 1", device="CPU",
                           steps=40, tokens_per_run={"baseline": spread(502_000, 502_000),
                                                     "oe3": spread(502_000, 502_000)},
                           compared_tokens=502_000, minutes=1, seeds=[0, 1], finals=finals,
                           png_name="evidence.png")
    assert "`python -m oe.evidence cfg3f --minutes 1`" in text
    assert "0.00100% of the paper's ~50B" in text
    assert "| baseline | 502,000 | 1.0500 (1.0000..1.1000, n=2) | – | 0.3100" in text
    assert "| OE-3 < OE-2 < baseline in loss | cannot decide | not run: oe2 (val/loss) |" in text
    assert "![" in text and "evidence.png" in text


# -- the command -----------------------------------------------------------------------------------

def test_command_refuses_an_unknown_config_or_a_generation_missing_the_last_validation(
        tmp_path, capsys, monkeypatch):
    from oe.cli.evidence import main

    monkeypatch.chdir(REPO)
    assert main(["cfg3f", "--minutes", "1", "--kinds", "nosuchkind", "--out", str(tmp_path)]) == 2
    assert "no such config: configs/cfg_nosuchkind.yaml" in capsys.readouterr().err
    assert main(["cfg3f", "--minutes", "1", "--validations", "4", "--gen-every", "2",
                 "--out", str(tmp_path)]) == 2
    assert "--gen_every 2 must divide --validations - 1 (3)" in capsys.readouterr().err


@pytest.mark.slow
def test_end_to_end_two_kinds_one_seed_on_the_tiny_preset(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    command = [sys.executable, "-m", "oe.evidence", "cfg3f", "--minutes", "2",
               "--kinds", "baseline,oe3", "--seeds", "0",
               "--preset", "configs/presets/quick_cfg.yaml", "--preset", "configs/presets/tiny_cfg.yaml",
               "--validations", "1", "--gen-samples", "2", "--calibration-steps", "3",
               "--min-steps", "2", "--margin", "0.5", "--out", str(out), "--runs-dir", str(runs)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("evidence.md", "evidence.png", "baseline_s0.csv", "oe3_s0.csv"):
        assert (out / name).is_file(), name
    assert "| OE-3 < OE-2 < baseline in loss | cannot decide |" in (out / "evidence.md").read_text()
    # resumable: finished runs are kept, the sizing is reused
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "finished before, kept" in again.stdout


def test_schedule_end_is_the_last_rate_over_the_peak():
    from oe.analysis.evidence import schedule_end

    assert schedule_end({"lr": [(0, 0.5), (1, 1.0), (2, 0.4), (3, 0.1)]}) == pytest.approx(0.1)
    with pytest.raises(EvidenceError, match="'lr'"):
        schedule_end({})


def test_a_preset_by_name_sizes_the_runs_without_minutes(monkeypatch, capsys):
    from oe.cli.evidence import main, preset_path, preset_schedule

    monkeypatch.chdir(REPO)
    laptop = preset_path("laptop")
    assert laptop == "configs/presets/laptop_cfg.yaml"
    # 200 steps, validation every 40 (5), generation at the 1st and every 4th after it
    assert preset_schedule("configs/cfg_oe3.yaml", [laptop]) == (200, 5, 4)
    assert main(["cfg3f", "--preset", "nosuchpreset"]) == 2
    assert "--preset nosuchpreset: no configs/presets/nosuchpreset_cfg.yaml" in capsys.readouterr().err
    # at least one run at a time
    assert main(["cfg3f", "--kinds", "baseline", "--preset", "configs/presets/evidence_gpu.yaml",
                 "--parallel", "0"]) == 2
    assert "--parallel >= 1" in capsys.readouterr().err


def test_a_preset_sized_set_grows_by_kinds_and_seeds_but_a_timed_one_does_not(tmp_path):
    from oe.cli.evidence import load_or_make_sizing

    request = {"experiment": "cfg3f", "kinds": ["baseline", "oe3"], "seeds": [0], "presets": [],
               "minutes": None, "validations": 5, "gen_samples": None, "gen_every": 4}
    path = tmp_path / "sizing.json"
    made = load_or_make_sizing(path, request, lambda: {"steps": 200, "calibration": None})
    grown = {**request, "kinds": ["baseline", "oe3", "od3"], "seeds": [0, 1]}
    again = load_or_make_sizing(path, grown, lambda: pytest.fail("sized anew"))
    assert again["steps"] == made["steps"] == 200
    assert json.loads(path.read_text())["request"] == grown  # the set it now holds
    with pytest.raises(EvidenceError, match="was sized for"):
        load_or_make_sizing(path, {**grown, "validations": 6}, lambda: {})
    timed = {**request, "minutes": 30.0}
    path.unlink()
    load_or_make_sizing(path, timed, lambda: {"steps": 40, "calibration": None})
    with pytest.raises(EvidenceError, match="was sized for"):  # a budget is split over the runs
        load_or_make_sizing(path, {**timed, "seeds": [0, 1]}, lambda: {})
