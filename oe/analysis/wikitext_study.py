"""What ``oe evidence wikitext`` (``oe.cli.evidence_wikitext``) trains and what it makes of it.

The study compares, on local real text with ``configs/presets/wikitext_quick.yaml``, the baseline
and Over-Encoding (OE-3, orders {1, 2, 3}) recipes at equal tokens: how the n-gram embeddings are
combined with the token embedding (``combine``), the tables' optimiser and learning rate, their
initialisation, and the table size m (the log-linear law). Each arm is one config with a few
overrides; every arm of a seed sees the same blocks in the same order, on the same schedule.

- ``ARMS``: every arm by name, its config and overrides, what it tests (``question``).
- Reading: each arm's seeds at the largest token count every run reached (``arm_finals``).
- Verdicts: an arm against its reference (``ARM_COMPARISONS``) judged on the seed ranges with
  ``oe.analysis.evidence.order_verdict``; the gap to the baseline at each validation and where its
  trend in log tokens would close it (``catch_up``).
- Writing: ``evidence.md`` (``render_study``) and the curves (``plot_study``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oe.analysis.evidence import (EvidenceError, Spread, Verdict, curve_against_tokens,
                                  final_spreads, order_verdict, value_at_tokens)
from oe.analysis.plot import History

PRESET = "configs/presets/wikitext_quick.yaml"
CORPUS = "data/docstrings"
METRIC = "val/loss"
QUICK_MODULUS = 100_003          # the preset's m: prime, coprime with the BPE's 4,096 ids
LAW_MODULI = [1_009, 10_007, 100_003, 1_000_003]   # primes, about 1e3 .. 1e6
PAPER_SLOPE = -0.0256            # loss per decade of m, OLMoE-1.3B (Huang et al. 2025)
# The paper's OLMoE-1.3B budget for the log-linear law: 500B tokens.
PAPER_LAW_TOKENS = 500e9
FAR = 1000  # a gap that would close only beyond this many times the run's tokens: out of reach


@dataclass(frozen=True)
class Arm:
    name: str
    config: str
    overrides: tuple[str, ...]
    question: str

    @property
    def modulus(self) -> int | None:
        flags = list(self.overrides)
        if "--model.over_encoding.modulus" in flags:
            return int(flags[flags.index("--model.over_encoding.modulus") + 1])
        return None


def _oe3(combine: str, modulus: int = QUICK_MODULUS, *extra: str) -> tuple[str, ...]:
    return ("--model.over_encoding.combine", combine,
            "--model.over_encoding.modulus", str(modulus), *extra)


TABLE_LR_X10 = ("--model.over_encoding.table_lr", "3.0e-2")   # 10 x the preset's dense lr 3e-3
PLAIN_ADAMW = ("--model.over_encoding.shard_tables", "false",
               "--model.over_encoding.table_optimizer", "adamw")
ZERO_INIT = ("--model.over_encoding.init_std", "0.0")
SQRT_D_SCALE = ("--model.over_encoding.ngram_scale", "sqrt_d")

OE3 = "configs/wikitext_oe3.yaml"
_arms = [
    Arm("baseline", "configs/wikitext_baseline.yaml", (), "the reference"),
    Arm("oe3_mean", OE3, _oe3("mean"), "the paper's formula: (token + n-gram embeddings) / 3"),
    Arm("oe3_sum", OE3, _oe3("sum"), "token + n-gram embeddings, undivided"),
    Arm("oe3_sum_tlr10", OE3, _oe3("sum", QUICK_MODULUS, *TABLE_LR_X10),
        "sum, tables at 10x the dense lr (row-wise Adagrad)"),
    Arm("oe3_mean_tlr10", OE3, _oe3("mean", QUICK_MODULUS, *TABLE_LR_X10),
        "mean, tables at 10x the dense lr"),
    Arm("oe3_sum_adamw", OE3, _oe3("sum", QUICK_MODULUS, *PLAIN_ADAMW),
        "sum, plain tables in the dense AdamW instead of sharded row-wise Adagrad"),
    Arm("oe3_sum_init0", OE3, _oe3("sum", QUICK_MODULUS, *ZERO_INIT),
        "sum, tables start at zero (step 0 is the baseline's embedding)"),
    Arm("oe3_rmsnorm_sum", OE3, _oe3("rmsnorm_sum"),
        "RMSNorm of the token embedding plus RMSNorm of the n-gram memory, over sqrt(2)"),
    Arm("oe3_sum_sqrtd", OE3, _oe3("sum", QUICK_MODULUS, *SQRT_D_SCALE),
        "sum, the n-gram memory scaled up by sqrt(width)"),
]
# The m-law: the recipes' arms at each m of LAW_MODULI (the preset's m is the recipe's own arm).
LAW_RECIPES = {"oe3_sum": (), "oe3_sum_tlr10": TABLE_LR_X10}
for _recipe, _extra in LAW_RECIPES.items():
    for _m in LAW_MODULI:
        if _m != QUICK_MODULUS:
            _arms.append(Arm(f"{_recipe}_m{_m}", OE3, _oe3("sum", _m, *_extra),
                             f"the m-law of {_recipe}: m = {_m:,}"))
ARMS: dict[str, Arm] = {arm.name: arm for arm in _arms}

# (arm, reference, what the comparison decides): "arm is better than reference" judged per seed range.
ARM_COMPARISONS = [
    ("oe3_mean", "baseline", "OE-3 with the paper's mean beats the baseline"),
    ("oe3_sum", "baseline", "OE-3 with sum beats the baseline"),
    ("oe3_sum", "oe3_mean", "sum beats mean"),
    ("oe3_sum_tlr10", "baseline", "OE-3 sum, tables at 10x lr, beats the baseline"),
    ("oe3_sum_tlr10", "oe3_sum", "10x table lr helps sum"),
    ("oe3_mean_tlr10", "oe3_mean", "10x table lr helps mean"),
    ("oe3_mean_tlr10", "baseline", "OE-3 mean, tables at 10x lr, beats the baseline"),
    ("oe3_sum_adamw", "oe3_sum", "plain AdamW tables beat row-wise Adagrad (sum)"),
    ("oe3_sum_init0", "oe3_sum", "zero-initialised tables beat N(0, 0.02) (sum)"),
    ("oe3_rmsnorm_sum", "oe3_sum", "rmsnorm_sum beats sum"),
    ("oe3_rmsnorm_sum", "baseline", "OE-3 with rmsnorm_sum beats the baseline"),
    ("oe3_sum_sqrtd", "oe3_sum", "scaling the memory by sqrt(width) helps sum"),
]


def law_arms(recipe: str) -> list[str]:
    """The arms of ``recipe``'s m-law in increasing m."""
    return [recipe if m == QUICK_MODULUS else f"{recipe}_m{m}" for m in LAW_MODULI]


def arm_finals(histories: dict[str, list[History]]) -> tuple[float, dict[str, Spread]]:
    """(tokens, each arm's seed spread of val/loss at the largest token count all runs reached)."""
    tokens, finals = final_spreads(histories, [METRIC])
    return tokens, {arm: per[METRIC] for arm, per in finals.items() if METRIC in per}


def judge_arms(finals: dict[str, Spread]) -> list[tuple[str, str, str, Verdict]]:
    """Each comparison of ``ARM_COMPARISONS`` whose two arms ran: (claim, arm, reference, verdict)."""
    judged = []
    for arm, reference, claim in ARM_COMPARISONS:
        if arm in finals and reference in finals:
            judged.append((claim, arm, reference,
                           order_verdict(finals[arm], finals[reference], True, arm, reference)))
    return judged


@dataclass(frozen=True)
class Gap:
    tokens: list[float]          # at each validation (mean over seeds)
    gap: list[float]             # arm minus baseline, mean over seeds (negative: the arm leads)
    closes_at: float | None      # tokens where the log-linear trend of the last gaps reaches 0
    trend: str


def catch_up(arm: list[History], baseline: list[History], last: int = 3) -> Gap:
    """The arm's val/loss minus the baseline's at each validation (seed means), and where a line in
    log10(tokens) through the last ``last`` gaps would cross zero: an extrapolation, not a result."""
    arm_curves = [curve_against_tokens(h, METRIC) for h in arm]
    base_curves = [curve_against_tokens(h, METRIC) for h in baseline]
    points = min(len(c) for c in arm_curves + base_curves)
    if points < 2:
        raise EvidenceError("catch_up needs two or more validations per run")
    tokens = np.mean([[t for t, _ in c[:points]] for c in arm_curves + base_curves], axis=0)
    gap = (np.mean([[v for _, v in c[:points]] for c in arm_curves], axis=0)
           - np.mean([[v for _, v in c[:points]] for c in base_curves], axis=0))
    tail = slice(max(0, points - last), points)
    slope, intercept = np.polyfit(np.log10(tokens[tail]), gap[tail], 1)
    closes_at, trend = None, ""
    if gap[-1] <= 0:
        trend = "leads at the end"
    elif slope >= 0:
        trend = "the gap does not shrink over the last validations"
    else:
        closes_at = float(10 ** (-intercept / slope))
        trend = (f"the gap shrinks by {-slope:.3f} nats per decade of tokens over the last "
                 f"{tail.stop - tail.start} validations")
    return Gap(tokens.tolist(), gap.tolist(), closes_at, trend)


def paired_differences(histories: dict[str, list[History]], seeds: dict[str, list[int]],
                       tokens: float, arm: str, reference: str = "baseline") -> dict[int, float]:
    """Per seed both arms ran: the arm's val/loss minus the reference's at ``tokens``. A seed fixes
    the data order, so these pair runs that saw the same blocks."""
    def at(name: str) -> dict[int, float]:
        return {seed: value_at_tokens(curve_against_tokens(h, METRIC), tokens)
                for seed, h in zip(seeds[name], histories[name])}

    mine, theirs = at(arm), at(reference)
    return {seed: mine[seed] - theirs[seed] for seed in sorted(mine.keys() & theirs.keys())}


def render_study(*, command: str, device: str, steps: int, paired: dict[str, dict[int, float]],
                 compared_tokens: float, finals: dict[str, Spread],
                 gaps: dict[str, Gap], law: list[str], corpus: str) -> str:
    """evidence.md: the set-up, each arm's loss at equal tokens, the verdicts, the gaps, the law."""
    lines = ["# Over-Encoding on real text on a laptop: which recipe leads", "",
             f"Command: `{command}`", "",
             f"Device: {device}. Corpus: `{corpus}` (train.txt, validation.txt). Preset "
             f"`{PRESET}`: a 4 x 128 backbone, a byte-level BPE of 4,096 ids, blocks of 128, "
             f"batch 16, {steps} steps, AdamW at 3e-3 on a cosine schedule; every arm of a seed "
             f"sees the same blocks in the same order. OE arms: orders {{1, 2, 3}}, k = 1, "
             f"m = {QUICK_MODULUS:,} unless named.", "",
             f"Budget: {compared_tokens:,.0f} target tokens per run, "
             f"{100 * compared_tokens / PAPER_LAW_TOKENS:.6f}% of the paper's 500B for its "
             f"m-law (OLMoE-1.3B).", "",
             f"val/loss at {compared_tokens:,.0f} tokens (the largest count every run reached), "
             f"mean (min..max, n seeds):", "",
             "The means of arms with different seeds compare different data orders (the seed "
             "spread here is larger than most gaps); the last column pairs runs of one seed, "
             "which saw the same blocks.", "",
             "| arm | what it tests | val/loss | minus baseline (means) | minus baseline, same seed |",
             "|---|---|---|---|---|"]
    base = finals.get("baseline")
    for arm, spread in finals.items():
        delta = f"{spread.mean - base.mean:+.4f}" if base and arm != "baseline" else "–"
        pairs = ", ".join(f"s{seed} {d:+.3f}" for seed, d in paired.get(arm, {}).items()) or "–"
        lines.append(f"| `{arm}` | {ARMS[arm].question} | {spread.text()} | {delta} | {pairs} |")
    lines += ["", "## Verdicts", "",
              "`supports`: the claim holds for the means and the seed ranges do not overlap; "
              "`contradicts`: the opposite with ranges apart; otherwise `cannot decide`.", "",
              "| claim | verdict | numbers |", "|---|---|---|"]
    for claim, _, _, verdict in judge_arms(finals):
        lines.append(f"| {claim} | {verdict.verdict} | {verdict.reason} |")
    if gaps:
        lines += ["", "## The gap to the baseline against tokens", "",
                  "val/loss of the arm minus the baseline's at each validation (seed means; "
                  "negative: the arm leads). `closes at` extrapolates a line in log10(tokens) "
                  "through the last three gaps: a hint of the budget, not a measurement (inside one "
                  "cosine schedule the late gaps are shaped by the decaying rate; a longer run has "
                  "its own schedule).", "",
                  "| arm | " + " | ".join(f"{t / 1e3:,.0f}k" for t in next(iter(gaps.values())).tokens)
                  + " | trend | closes at |",
                  "|---|" + "---|" * (len(next(iter(gaps.values())).tokens) + 2)]
        for arm, gap in gaps.items():
            closes = "–"
            if gap.closes_at and gap.closes_at > FAR * gap.tokens[-1]:
                closes = f"beyond {FAR:,}x this budget (~{gap.closes_at:.0e} tokens)"
            elif gap.closes_at:
                closes = f"~{gap.closes_at / 1e6:,.1f}M tokens"
            lines.append(f"| `{arm}` | " + " | ".join(f"{g:+.3f}" for g in gap.gap)
                         + f" | {gap.trend} | {closes} |")
    lines += [""] + law + ["", "![val/loss against tokens per arm](wikitext_curves.png)", ""]
    return "\n".join(lines)


def law_section(fits) -> list[str]:
    """The m-law's lines from ``oe.analysis.statistics.fit_groups``' group of each recipe's runs."""
    lines = ["## The m-law", ""]
    for recipe, group in fits.items():
        fit, ms = group.fit, sorted({run.modulus for run in group.runs})
        if fit is None:
            lines.append(f"`{recipe}`: fewer than two values of m finished; no fit.")
            continue
        low, high = fit.ci95
        sign = ("negative" if high < 0 else "positive" if low > 0
                else "cannot be told from zero")
        paper = ("inside" if low <= PAPER_SLOPE <= high else "outside")
        lines.append(f"`{recipe}` (m = {', '.join(f'{m:,}' for m in ms)}; "
                     f"{fit.n} runs): val/loss = {fit.intercept:.4f} {fit.slope:+.4f} log10(m), "
                     f"95% interval of the slope {low:+.4f}..{high:+.4f} per decade: "
                     f"{sign}; the paper's {PAPER_SLOPE} per decade lies {paper} it.")
        lines.append("")
    return lines


def plot_study(histories: dict[str, list[History]], out: Path) -> Path:
    """val/loss against tokens: the recipe arms in one panel, the m-law arms in another."""
    from oe.analysis.plot import plot_curves

    def curves(arms: list[str]):
        return {arm: [tuple(np.asarray(v) for v in zip(*curve_against_tokens(h, METRIC)))
                      for h in histories[arm]] for arm in arms if arm in histories}

    recipe = [a for a in histories if ARMS[a].modulus in (None, QUICK_MODULUS)]
    law = [a for r in LAW_RECIPES for a in law_arms(r)
           if a in histories and sum(x in histories for x in law_arms(r)) > 1]
    panels = {f"{METRIC} (recipes)": curves(recipe)}
    if law:
        panels[f"{METRIC} (m-law)"] = curves(law)
    return plot_curves(panels, out, xlabel="target tokens (train/tokens)")
