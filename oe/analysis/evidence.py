"""What ``oe evidence`` (``oe.cli.evidence``) computes from the runs it trained.

- Sizing: the steps per run that fit a wall-clock budget, from a short calibration run
  (``steps_in_budget``), refused with ``EvidenceError`` when too few steps fit.
- Reading: a run's CSV history, each validation metric against ``train/tokens`` (the target tokens
  of all ranks trained on so far), and values at equal tokens (``value_at_tokens``).
- Spread over seeds: mean, min and max (``Spread``); the paper's claims as verdicts
  (``order_verdict``, ``chain_verdict``): ``supports`` when the ordering holds for the means and
  the seed ranges do not overlap, ``contradicts`` for the opposite ordering with separate ranges,
  ``cannot decide`` otherwise (one seed has no range, so it cannot decide either).
- Writing: ``evidence.md`` (``render_markdown``) and a PNG of three panels (``plot_evidence``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oe.analysis.plot import History, plain_ticks

# The paper's cfg3f budget: 10 epochs over 20M sentences; a sentence is about 251 tokens with BOS
# and EOS, so about 50B target tokens in all.
PAPER_EPOCHS = 10
PAPER_SENTENCES = 20_000_000
PAPER_TOKENS_PER_SENTENCE = 251
PAPER_TARGET_TOKENS = PAPER_EPOCHS * PAPER_SENTENCES * PAPER_TOKENS_PER_SENTENCE

TOKENS = "train/tokens"
LOWER_IS_BETTER = {"val/loss": True, "val/excess_loss": True, "val/loss_floor": True,
                   "val/gen_acc": False, "val/gen_viable_frac": False,
                   "val/gen_first_error": False}
TABLE_METRICS = ["val/loss", "val/loss_floor", "val/excess_loss", "val/gen_acc",
                 "val/gen_viable_frac", "val/gen_first_error"]
PLOT_METRICS = ["val/loss", "val/excess_loss", "val/gen_acc", "val/gen_viable_frac"]
KIND_LABELS = {"baseline": "baseline", "oe2": "OE-2", "oe3": "OE-3", "od3": "OD-3", "ot3": "OT-3"}


class EvidenceError(ValueError):
    """A request or a set of runs that cannot give the evidence asked for; the message says why."""


# -- sizing --------------------------------------------------------------------------------------

@dataclass
class Calibration:
    """Measured on the most expensive kind: what one run costs besides its training steps."""
    seconds_per_step: float
    startup_seconds: float      # process start, data, model build: paid once per run
    validation_seconds: float   # one validation with its generation


def steps_in_budget(budget_seconds: float, runs: int, validations: int, calibration: Calibration,
                    margin: float, min_steps: int, generations: int | None = None) -> int:
    """Steps per run, a multiple of ``validations``, so that ``runs`` runs fit ``budget_seconds``
    (what is left of --minutes after the calibration).

    ``margin`` (0 < margin <= 1) is the share of each run's time left for training after its
    fixed costs, against timing noise and longer generated samples later in training.
    ``generations``: how many of the validations generate samples (default: all).
    """
    if runs < 1 or validations < 1 or not 0 < margin <= 1:
        raise EvidenceError("steps_in_budget needs runs >= 1, validations >= 1 and 0 < margin <= 1")
    generations = validations if generations is None else generations
    per_run = budget_seconds / runs
    # a validation without generation costs about a training step (a forward of its sentences)
    fixed = (calibration.startup_seconds + generations * calibration.validation_seconds
             + (validations - generations) * calibration.seconds_per_step)
    steps = math.floor(margin * (per_run - fixed) / calibration.seconds_per_step)
    steps -= steps % validations
    if steps < min_steps:
        raise EvidenceError(
            f"the budget is too small: {budget_seconds / 60:.1f} minutes for {runs} run(s) give "
            f"{per_run:.0f} s to each, of which {fixed:.0f} s go to start-up ({calibration.startup_seconds:.0f} s) and "
            f"{validations} validation(s) ({calibration.validation_seconds:.0f} s each), leaving "
            f"{max(steps, 0)} step(s) at {calibration.seconds_per_step:.2f} s/step; a meaningful "
            f"run needs at least {min_steps}. Give more minutes, fewer kinds or seeds, or fewer "
            f"validations.")
    return steps


def warmup_for(steps: int, configured: int, share: float = 0.1) -> int:
    """The configured warm-up, or ``share`` of the run when the configured one is longer."""
    return configured if configured <= share * steps else max(1, round(share * steps))


def schedule_end(history: History) -> float:
    """The learning rate at the run's last step as a share of its peak: the configured
    ``min_lr_ratio`` when the cosine schedule ran over exactly the run's steps."""
    rates = [v for _, v in history.get("lr", [])]
    if not rates:
        raise EvidenceError("this run never logged 'lr'")
    return rates[-1] / max(rates)


def budget_share(tokens: float) -> float:
    """Target tokens trained on, as a share of the paper's cfg3f budget."""
    return tokens / PAPER_TARGET_TOKENS


# -- curves at equal tokens ----------------------------------------------------------------------

def curve_against_tokens(history: History, metric: str) -> list[tuple[float, float]]:
    """(train/tokens, value) at each step ``metric`` was logged; train/tokens is logged every step."""
    tokens = dict(history.get(TOKENS, []))
    if not tokens:
        raise EvidenceError(f"this run never logged {TOKENS!r}; it is needed to compare at equal tokens")
    points = []
    for step, value in history.get(metric, []):
        if step not in tokens:
            raise EvidenceError(f"{metric!r} was logged at step {step}, where {TOKENS!r} was not")
        points.append((tokens[step], value))
    return points


def value_at_tokens(curve: list[tuple[float, float]], tokens: float) -> float:
    """The curve's value at ``tokens``, linear between its points; it must lie within the curve."""
    if not curve:
        raise EvidenceError("an empty curve has no value")
    xs = np.asarray([t for t, _ in curve], dtype=float)
    ys = np.asarray([v for _, v in curve], dtype=float)
    if tokens < xs[0] - 1e-9 or tokens > xs[-1] + 1e-9:
        raise EvidenceError(f"{tokens:.0f} tokens lies outside this curve ({xs[0]:.0f}..{xs[-1]:.0f})")
    return float(np.interp(tokens, xs, ys))


def common_tokens(curves: list[list[tuple[float, float]]]) -> float:
    """The largest token count every curve reached."""
    if not curves or any(not c for c in curves):
        raise EvidenceError("every run needs at least one logged value to compare at equal tokens")
    return min(c[-1][0] for c in curves)


# -- spread over seeds and the claims ------------------------------------------------------------

@dataclass(frozen=True)
class Spread:
    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        if not values:
            raise EvidenceError("a spread needs at least one value")
        return cls(float(np.mean(values)), float(min(values)), float(max(values)), len(values))

    def text(self, digits: int = 4) -> str:
        return (f"{self.mean:.{digits}f} ({self.low:.{digits}f}..{self.high:.{digits}f}, "
                f"n={self.n})")


@dataclass(frozen=True)
class Verdict:
    verdict: str  # "supports", "contradicts" or "cannot decide"
    reason: str


SUPPORTS, CONTRADICTS, UNDECIDED = "supports", "contradicts", "cannot decide"


def order_verdict(better: Spread, worse: Spread, lower_is_better: bool,
                  better_name: str = "A", worse_name: str = "B") -> Verdict:
    """The claim "``better_name`` is better than ``worse_name``" judged on seed spreads."""
    sign = 1.0 if lower_is_better else -1.0
    # in "lower is better" units: the claim says better < worse
    b_mean, w_mean = sign * better.mean, sign * worse.mean
    b_hi, b_lo = max(sign * better.low, sign * better.high), min(sign * better.low, sign * better.high)
    w_hi, w_lo = max(sign * worse.low, sign * worse.high), min(sign * worse.low, sign * worse.high)
    numbers = f"{better_name} {better.text()} vs {worse_name} {worse.text()}"
    if min(better.n, worse.n) < 2:
        return Verdict(UNDECIDED, f"one seed has no spread: {numbers}")
    if b_mean < w_mean and b_hi < w_lo:
        return Verdict(SUPPORTS, f"means ordered, ranges apart: {numbers}")
    if w_mean < b_mean and w_hi < b_lo:
        return Verdict(CONTRADICTS, f"opposite order, ranges apart: {numbers}")
    if b_mean == w_mean:
        return Verdict(UNDECIDED, f"equal means: {numbers}")
    held = "hold" if b_mean < w_mean else "are reversed"
    return Verdict(UNDECIDED, f"means {held} but the seed ranges overlap: {numbers}")


def chain_verdict(links: list[Verdict]) -> Verdict:
    """A chain A < B < C: supported when every link is, contradicted when any link is."""
    reason = "; ".join(v.reason for v in links)
    if any(v.verdict == CONTRADICTS for v in links):
        return Verdict(CONTRADICTS, reason)
    if links and all(v.verdict == SUPPORTS for v in links):
        return Verdict(SUPPORTS, reason)
    return Verdict(UNDECIDED, reason)


# The paper's cfg3f claims as chains of kinds, best first (kind, metric).
CLAIMS = [
    ("OE-3 < OE-2 < baseline in loss", ["oe3", "oe2", "baseline"], "val/loss"),
    ("OE-3 > OE-2 > baseline in generation accuracy", ["oe3", "oe2", "baseline"], "val/gen_acc"),
    ("OE-3 > OE-2 > baseline in viable prefix (graded generation)", ["oe3", "oe2", "baseline"],
     "val/gen_viable_frac"),
    ("OD-3 hurts the 2.4M model: its loss > baseline", ["baseline", "od3"], "val/loss"),
    ("OT-3 <= OE-3 in loss", ["ot3", "oe3"], "val/loss"),
]


def judge_claims(finals: dict[str, dict[str, Spread]]) -> list[tuple[str, Verdict]]:
    """Each claim of ``CLAIMS`` judged on ``finals[kind][metric]``; absent kinds cannot decide."""
    judged = []
    for claim, chain, metric in CLAIMS:
        missing = [k for k in chain if metric not in finals.get(k, {})]
        if missing:
            judged.append((claim, Verdict(UNDECIDED, f"not run: {', '.join(missing)} ({metric})")))
            continue
        spreads = [finals[k][metric] for k in chain]
        if metric == "val/gen_acc" and all(s.high == 0 for s in spreads):
            judged.append((claim, Verdict(UNDECIDED, "every run's generation accuracy is 0")))
            continue
        links = [order_verdict(spreads[i], spreads[i + 1], LOWER_IS_BETTER[metric],
                               KIND_LABELS.get(chain[i], chain[i]),
                               KIND_LABELS.get(chain[i + 1], chain[i + 1]))
                 for i in range(len(chain) - 1)]
        judged.append((claim, chain_verdict(links)))
    return judged


# What the kinds are judged on against a reference kind (``--reference``), and how a verdict reads.
REFERENCE_METRICS = ["val/loss", "val/gen_viable_frac", "val/gen_acc"]
AGAINST = {SUPPORTS: "better", CONTRADICTS: "worse", UNDECIDED: "cannot decide"}


def judge_against(finals: dict[str, dict[str, Spread]], reference: str,
                  metrics: list[str] = REFERENCE_METRICS) -> list[tuple[str, str, str, str]]:
    """(kind, metric, verdict, numbers) of every other kind against ``reference``: ``better``
    when its mean is better and the seed ranges do not overlap, ``worse`` for the opposite,
    otherwise ``cannot decide`` (``order_verdict``); a metric that is 0 for both, or that either
    did not log, cannot decide."""
    if reference not in finals:
        raise EvidenceError(f"the reference kind {reference!r} is not among the kinds run "
                            f"({', '.join(finals)})")
    judged = []
    for kind in finals:
        if kind == reference:
            continue
        for metric in metrics:
            ours, theirs = finals[kind].get(metric), finals[reference].get(metric)
            if ours is None or theirs is None:
                judged.append((kind, metric, AGAINST[UNDECIDED], "not logged"))
            elif ours.high == theirs.high == 0 and ours.low == theirs.low == 0:
                judged.append((kind, metric, AGAINST[UNDECIDED], "0 for every run of both"))
            else:
                verdict = order_verdict(ours, theirs, LOWER_IS_BETTER[metric],
                                        KIND_LABELS.get(kind, kind),
                                        KIND_LABELS.get(reference, reference))
                judged.append((kind, metric, AGAINST[verdict.verdict], verdict.reason))
    return judged


def final_spreads(histories: dict[str, list[History]], metrics: list[str]
                  ) -> tuple[float, dict[str, dict[str, Spread]]]:
    """(tokens, finals): each kind's seed spread of each metric at the largest train/tokens that
    every run of every kind reached; a metric no run of a kind logged is left out for that kind."""
    curves = [curve_against_tokens(h, "val/loss") for runs in histories.values() for h in runs]
    tokens = common_tokens(curves)
    finals: dict[str, dict[str, Spread]] = {}
    for kind, runs in histories.items():
        finals[kind] = {}
        for metric in metrics:
            values = [value_at_tokens(curve_against_tokens(h, metric), tokens)
                      for h in runs if h.get(metric)]
            if values:
                finals[kind][metric] = Spread.of(values)
    return tokens, finals


# -- writing ---------------------------------------------------------------------------------------

def render_markdown(*, command: str, device: str, steps: int, tokens_per_run: dict[str, Spread],
                    compared_tokens: float, minutes: float | None, seeds: list[int],
                    finals: dict[str, dict[str, Spread]], png_name: str,
                    metrics: list[str] = TABLE_METRICS,
                    schedule_ends: Spread | None = None, reference: str | None = None,
                    parallel: int = 1) -> str:
    """evidence.md: the set-up, the budget as a share of the paper's, the table, the claims, and
    with ``reference`` every other kind judged against it. ``minutes``: the wall-clock budget
    the runs were sized to, or None when the presets sized them; ``parallel``: runs at a time."""
    largest = max(s.high for s in tokens_per_run.values())
    budget = (f"{minutes:g} minutes" if minutes is not None
              else f"{steps} steps per run, as the presets set")
    order = "one after another" if parallel == 1 else f"{parallel} at a time"
    lines = ["# cfg3f: the kinds at equal tokens", "",
             f"Command: `{command}`", "",
             f"Device: {device}. Budget: {budget} for {len(tokens_per_run)} kind(s) x "
             f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}), run {order}.", "",
             f"Every run: {steps} steps on the same sentences per seed (same batch, same data "
             f"seed), a cosine schedule over exactly those steps, validation on the same "
             f"sentences. Target tokens per run: up to {largest:,.0f}, "
             f"{100 * budget_share(largest):.5f}% of the paper's ~{PAPER_TARGET_TOKENS / 1e9:.0f}B "
             f"({PAPER_EPOCHS} epochs x {PAPER_SENTENCES / 1e6:.0f}M sentences x "
             f"~{PAPER_TOKENS_PER_SENTENCE} tokens).", ""]
    if schedule_ends is not None:
        lines += [f"Learning rate at the last step as a share of its peak, over the runs: "
                  f"{schedule_ends.low:.3f}..{schedule_ends.high:.3f} (a cosine over exactly the "
                  f"run's steps ends one step short of its floor, model.optimizer.min_lr_ratio).",
                  ""]
    lines += [
             f"Values below are at {compared_tokens:,.0f} target tokens (the largest count every "
             f"run reached), as mean (min..max, n seeds).", "",
             "| kind | tokens per run | " + " | ".join(metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for kind, per_metric in finals.items():
        cells = [per_metric[m].text() if m in per_metric else "–" for m in metrics]
        lines.append(f"| {KIND_LABELS.get(kind, kind)} | {tokens_per_run[kind].mean:,.0f} | "
                     + " | ".join(cells) + " |")
    lines += ["", "## The paper's claims", "",
              "`supports`: the ordering holds for the means and the seed ranges do not overlap; "
              "`contradicts`: the opposite ordering with ranges apart; otherwise `cannot decide`.",
              "", "| claim | verdict | numbers |", "|---|---|---|"]
    for claim, verdict in judge_claims(finals):
        lines.append(f"| {claim} | {verdict.verdict} | {verdict.reason} |")
    if reference is not None:
        label = KIND_LABELS.get(reference, reference)
        lines += ["", f"## Each kind against {label}", "",
                  f"`better`/`worse`: the kind's seed mean is better/worse than {label}'s and "
                  "the seed ranges do not overlap; otherwise `cannot decide`.", "",
                  "| kind | metric | verdict | numbers |", "|---|---|---|---|"]
        for kind, metric, verdict, numbers in judge_against(finals, reference):
            lines.append(f"| {KIND_LABELS.get(kind, kind)} | {metric} | {verdict} | {numbers} |")
    lines += ["", f"![excess loss, generation accuracy and viable prefix against tokens]({png_name})",
              ""]
    return "\n".join(lines)


def plot_evidence(histories: dict[str, list[History]], out: Path) -> Path:
    """A panel per metric of ``PLOT_METRICS`` against train/tokens: each kind's seed mean as a
    line, min..max as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PLOT_METRICS), figsize=(5 * len(PLOT_METRICS), 4))
    for ax, metric in zip(axes, PLOT_METRICS):
        for index, (kind, runs) in enumerate(histories.items()):
            curves = [curve_against_tokens(h, metric) for h in runs if h.get(metric)]
            if not curves:
                continue
            points = min(len(c) for c in curves)  # same steps per run: same validations
            tokens = np.mean([[t for t, _ in c[:points]] for c in curves], axis=0)
            values = np.asarray([[v for _, v in c[:points]] for c in curves])
            color = f"C{index}"
            ax.plot(tokens, values.mean(axis=0), color=color, marker="o", markersize=3,
                    label=f"{KIND_LABELS.get(kind, kind)} (n={len(curves)})")
            ax.fill_between(tokens, values.min(axis=0), values.max(axis=0), color=color, alpha=0.2)
        plain_ticks(ax)  # the values themselves: no "+1.081" offset, no power of ten
        if metric != "val/excess_loss":  # (its log scale has formatters of its own, below)
            drawn = [line.get_ydata() for line in ax.get_lines()]
            if drawn and not np.any(np.concatenate(drawn)):
                ax.set_ylim(-0.05, 1.05)  # 0 throughout: drawn on 0..1, not magnified
        if metric == "val/excess_loss":
            from matplotlib.ticker import FuncFormatter

            ax.set_yscale("log")
            plain = FuncFormatter(lambda value, _: f"{value:.3g}")  # 0.36, not 3.6 x 10^-1
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
        ax.set_xlabel("target tokens (train/tokens)")
        ax.set_title(metric, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
