"""Testbed v2's statistics and findings: computed from evaluated rows, every line able to fail.

A run is one (method, pretraining seed, RL seed) evaluated on a fixed list of problems:

  {"method": str, "pretrain_seed": int, "seed": int,
   "ids": [problem id, ...],
   "correct": [[attempt 1 right, attempt 2 right], ...],   # one pair per problem
   "changed": [attempt 2's answer differs from attempt 1's, ...],
   "vote2": [majority vote of 2 samples right, ...]        (optional: matched token budget)
   "long1": [one attempt with two attempts' tokens right, ...]   (optional: the same)
   "fixed_first": [[base attempt 1 right, this model's attempt 2 right], ...]   (optional)}

The unit of replication is the training run: two methods are compared on the runs they share a
(pretraining seed, RL seed) with, on the problems both evaluated. `compare` gives the mean
paired difference, a 95% interval from a two-level bootstrap (runs, then problems within each
run) and the one-sided p-value of an exact sign-flip test on the per-run differences (Monte
Carlo past 16 runs): the p-value is the share of the 2^n sign assignments whose mean difference
is at least the observed one, so it cannot go below 2^-n (9 runs: 0.002).

`findings` turns a set of runs into the pre-registered claims (experiments/testbed_protocol.md),
each {"claim", "holds", "tested", "evidence"}; `holds` is False whenever the data do not support
the claim, including when a method it names was not run. `tested` is False where the data could
not have supported it either way: a method not run, or fewer paired runs than the sign-flip test
needs to reach ALPHA (2^-n < 0.05 takes n >= 5; README command 1 has one run). Those lines print
as "not tested" instead of "does not hold".
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Run = dict[str, Any]
ALPHA = 0.05
# The exact sign-flip test's smallest p is 2^-n: below ALPHA only from this many runs (5 at 0.05).
MIN_TESTABLE_RUNS = math.floor(math.log2(1 / ALPHA)) + 1
NUM_RESAMPLES = 2000


# ------------------------------------------------------------------------------- per-run stats


@dataclasses.dataclass(frozen=True)
class Stat:
  """A per-run statistic that is a function of per-problem means, so resampling problems is
  array work: `columns(run)` -> [problems, m] floats, `combine(means[..., m])` -> value[...]."""

  columns: Callable[[Run], np.ndarray]
  combine: Callable[[np.ndarray], np.ndarray]

  def __call__(self, run: Run, idx: np.ndarray) -> float:
    return float(self.combine(self.columns(run)[idx].mean(0)))


def _arr(run: Run, key: str) -> np.ndarray:
  if key not in run:
    raise ValueError(f"run {run.get('method')!r} seed {run.get('seed')!r}: no {key!r}")
  return np.asarray(run[key], dtype=bool)


def _cols(*xs: np.ndarray) -> np.ndarray:
  return np.stack(xs, 1).astype(np.float32)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def acc(attempt: int) -> Stat:
  """Accuracy at attempt 1 or 2 (a fraction)."""
  return Stat(lambda r: _cols(_arr(r, "correct")[:, attempt - 1]), lambda m: m[..., 0])


def _delta_cols(r: Run) -> np.ndarray:
  c = _arr(r, "correct")
  return _cols(c[:, 1], c[:, 0])


delta = Stat(_delta_cols, lambda m: m[..., 0] - m[..., 1])


def _change_cols(r: Run) -> np.ndarray:
  first, ch = _arr(r, "correct")[:, 0], _arr(r, "changed")
  return _cols(ch & ~first, ~first, ch & first, first)


# P(attempt 2 changes the answer | attempt 1 wrong / right); NaN when no such problem.
change_given_wrong = Stat(_change_cols, lambda m: _ratio(m[..., 0], m[..., 1]))
change_given_right = Stat(_change_cols, lambda m: _ratio(m[..., 2], m[..., 3]))
# P(change | wrong) - P(change | right): > 0 when the correction depends on attempt 1.
change_dependence = Stat(
  _change_cols, lambda m: _ratio(m[..., 0], m[..., 1]) - _ratio(m[..., 2], m[..., 3])
)
vote2 = Stat(lambda r: _cols(_arr(r, "vote2")), lambda m: m[..., 0])
# One attempt given two attempts' tokens (single-turn RL): the other matched-budget baseline.
long1 = Stat(lambda r: _cols(_arr(r, "long1")), lambda m: m[..., 0])


def _fixed_cols(r: Run) -> np.ndarray:
  f = _arr(r, "fixed_first")
  return _cols(~f[:, 0] & f[:, 1], ~f[:, 0])


# Of the base model's wrong first attempts, the share this model's attempt 2 makes right.
fixed_first_fix = Stat(_fixed_cols, lambda m: _ratio(m[..., 0], m[..., 1]))


# ---------------------------------------------------------------------------- pairing and tests


def key(run: Run) -> tuple[int, int]:
  return int(run["pretrain_seed"]), int(run["seed"])


def runs_of(runs: Sequence[Run], method: str) -> dict[tuple[int, int], Run]:
  return {key(r): r for r in runs if r["method"] == method}


def _common_idx(a: Run, b: Run) -> tuple[np.ndarray, np.ndarray]:
  """Positions in a and in b of the problems both evaluated, in a's order."""
  where = {pid: i for i, pid in enumerate(b["ids"])}
  ia = [i for i, pid in enumerate(a["ids"]) if pid in where]
  if not ia:
    raise ValueError(f"runs of {a['method']!r} and {b['method']!r} share no problem")
  return np.array(ia), np.array([where[a["ids"][i]] for i in ia])


def _pairs(runs, a: str, b: str | None):
  """[(run of a, run of b or None)] over the seeds they share (b None: a alone vs 0)."""
  ra = runs_of(runs, a)
  if b is None:
    return [(ra[k], None) for k in sorted(ra)]
  rb = runs_of(runs, b)
  return [(ra[k], rb[k]) for k in sorted(set(ra) & set(rb))]


def sign_flip_p(diffs: Sequence[float], seed: int = 0, draws: int = 100_000) -> float:
  """One-sided p of mean(diffs) > 0 under random signs: exact up to 16 values, else Monte Carlo."""
  d = np.asarray(diffs, dtype=float)
  if d.size == 0:
    return math.nan
  observed = d.mean()
  if d.size <= 16:
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
  else:
    signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(draws, d.size))
  # A small tolerance: equal means (ties) count as at least as extreme.
  return float(np.mean(signs @ d / d.size >= observed - 1e-12))


def compare(
  runs: Sequence[Run],
  a: str,
  b: str | None,
  stat: Stat,
  stat_b: Stat | None = None,
  seed: int = 0,
) -> dict[str, Any]:
  """stat(a) - stat_b(b) over the shared seeds (b None: stat(a) alone): mean, 95% CI, p, n.

  `stat_b` defaults to `stat`; another one compares unlike measures (SCoRe's Acc@t2 against a
  baseline's majority vote at the same token budget).
  """
  stat_b = stat if stat_b is None else stat_b
  pairs = _pairs(runs, a, b)
  if not pairs:
    return {"n": 0, "mean": math.nan, "ci": (math.nan, math.nan), "p": math.nan, "per_run": []}
  rng = np.random.default_rng(seed)
  diffs, boot = [], []  # per run: its difference; its differences over resampled problems
  for ra, rb in pairs:
    ia, ib = _common_idx(ra, rb) if rb is not None else (np.arange(len(ra["ids"])),) * 2
    ca, cb = stat.columns(ra)[ia], (stat_b.columns(rb)[ib] if rb is not None else None)
    sub = rng.integers(0, len(ia), (NUM_RESAMPLES, len(ia)))
    val = lambda c, f: f(c.mean(0)) if c.ndim == 2 else f(c.mean(1))
    zero = np.zeros(NUM_RESAMPLES)
    diffs.append(float(val(ca, stat.combine) - (val(cb, stat_b.combine) if rb is not None else 0)))
    boot.append(
      val(ca[sub], stat.combine) - (val(cb[sub], stat_b.combine) if rb is not None else zero)
    )
  diffs, boot = np.array(diffs), np.stack(boot, 1)  # boot: [resamples, runs]
  # Two levels: resample runs, then (already drawn above) problems within each run.
  picks = rng.integers(0, len(pairs), (NUM_RESAMPLES, len(pairs)))
  with np.errstate(invalid="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN resamples stay NaN
    means = np.nanmean(np.take_along_axis(boot, picks, 1), 1)
    lo, hi = np.nanpercentile(means, [2.5, 97.5]) if np.isfinite(means).any() else (math.nan,) * 2
  ok = ~np.isnan(diffs)
  return {
    "n": int(ok.sum()),
    "mean": float(diffs[ok].mean()) if ok.any() else math.nan,
    "ci": (float(lo), float(hi)),
    "p": sign_flip_p(diffs[ok]),
    "per_run": diffs.tolist(),
  }


def summary(runs: Sequence[Run], method: str, stat: Stat) -> dict[str, Any]:
  """A method's stat over its runs: mean, sample standard deviation (ddof 1), 95% CI, n."""
  out = compare(runs, method, None, stat)
  vals = np.array([v for v in out["per_run"] if not math.isnan(v)]) if out["n"] else np.array([])
  out["std"] = float(vals.std(ddof=1)) if vals.size > 1 else math.nan
  return out


# ------------------------------------------------------------------------------------ findings

# (claim, method a, method b or None, statistic[, b's statistic]): "a's statistic exceeds b's
# (or 0), paired over shared seeds, one-sided sign-flip p < ALPHA". Testbed method names.
PAIRED_CLAIMS: tuple[tuple, ...] = (
  ("SCoRe Acc@t2 > naive multi-turn RL Acc@t2 (reward on attempt 2)", "score", "naive", acc(2)),
  (
    "SCoRe Acc@t2 > naive multi-turn RL Acc@t2 (reward on both attempts, Eq. 1)",
    "score",
    "naive_multiturn_eq1",
    acc(2),
  ),
  ("SCoRe Acc@t2 > single-turn RL Acc@t2", "score", "single_turn", acc(2)),
  (
    "SCoRe Acc@t2 > single-turn RL's majority vote of 2 samples (matched token budget)",
    "score",
    "single_turn",
    acc(2),
    vote2,
  ),
  (
    "SCoRe Acc@t2 > single-turn RL's one attempt with two attempts' tokens (matched budget)",
    "score",
    "single_turn",
    acc(2),
    long1,
  ),
  ("SCoRe Acc@t2 > SCoRe w/o Stage I Acc@t2", "score", "no_stage1", acc(2)),
  ("SCoRe Acc@t2 > SCoRe w/o reward shaping Acc@t2", "score", "no_shaping", acc(2)),
  ("SCoRe Acc@t2 > STaR Acc@t2", "score", "star_plus", acc(2)),
  ("SCoRe Acc@t2 > Pair-SFT Acc@t2", "score", "pair_sft", acc(2)),
  ("SCoRe Delta(t1,t2) > 0", "score", None, delta),
  ("SCoRe Delta(t1,t2) > naive multi-turn RL Delta(t1,t2)", "score", "naive", delta),
  (
    "SCoRe's correction depends on attempt-1 correctness: P(change | wrong) > P(change | right)",
    "score",
    None,
    change_dependence,
  ),
  (
    "SCoRe fixes more of the base model's fixed wrong first attempts than naive multi-turn RL",
    "score",
    "naive",
    fixed_first_fix,
  ),
)
CEILING = 0.90  # the best method's Acc@t2 must stay below this (room to see differences)
BASE_BAND = (0.20, 0.70)  # the base model's Acc@t1 must lie in this band


def _paired_finding(runs, claim, a, b, stat, stat_b=None) -> dict[str, Any]:
  out = compare(runs, a, b, stat, stat_b)
  if out["n"] == 0:
    missing = [m for m in (a, b) if m is not None and not runs_of(runs, m)]
    why = f"not run ({', '.join(missing)} has no runs)" if missing else "undefined on these runs"
    return {"claim": claim, "holds": False, "tested": False, "evidence": why}
  holds = out["mean"] > 0 and out["p"] < ALPHA
  tested = out["n"] >= MIN_TESTABLE_RUNS
  lo, hi = out["ci"]
  ev = (
    f"difference {100 * out['mean']:+.1f} points, 95% CI [{100 * lo:+.1f}, {100 * hi:+.1f}], "
    f"sign-flip p = {out['p']:.3f} over {out['n']} runs"
  )
  if not tested:
    ev += f" (the test needs >= {MIN_TESTABLE_RUNS} runs to reach p < {ALPHA})"
  return {"claim": claim, "holds": bool(holds), "tested": bool(tested), "evidence": ev}


def _design_findings(runs) -> list[dict[str, Any]]:
  """The task's own pre-registered conditions: a base inside the band, no method at the ceiling."""
  out = []
  base = summary(runs, "base", acc(1))
  lo, hi = BASE_BAND
  ok = base["n"] > 0 and lo <= base["mean"] <= hi
  out.append(
    {
      "claim": f"Base model Acc@t1 inside [{100 * lo:.0f}%, {100 * hi:.0f}%]",
      "holds": bool(ok),
      "tested": base["n"] > 0,
      "evidence": f"{100 * base['mean']:.1f}% over {base['n']} pretraining seeds"
      if base["n"]
      else "not run",
    }
  )
  methods = sorted({r["method"] for r in runs} - {"base"})
  best = max(((summary(runs, m, acc(2))["mean"], m) for m in methods), default=(math.nan, "-"))
  out.append(
    {
      "claim": f"No method's mean Acc@t2 reaches {100 * CEILING:.0f}% (room above the best)",
      "holds": bool(methods) and best[0] < CEILING,
      "tested": bool(methods),
      "evidence": f"best: {best[1]} {100 * best[0]:.1f}%",
    }
  )
  return out


def findings(runs: Sequence[Run], held_out: Sequence[Run] = ()) -> list[dict[str, Any]]:
  """Every pre-registered claim with whether it holds on these runs, and the figures why."""
  out = _design_findings(runs)
  out += [_paired_finding(runs, *claim) for claim in PAIRED_CLAIMS]
  primary = PAIRED_CLAIMS[0]
  f = _paired_finding(held_out, *primary) if held_out else None
  out.append(
    {**f, "claim": "Held-out variant: " + primary[0]}
    if f
    else {
      "claim": "Held-out variant: " + primary[0],
      "holds": False,
      "tested": False,
      "evidence": "not run",
    }
  )
  return out


def findings_text(found: Sequence[dict[str, Any]]) -> str:
  lines = ["Findings (pre-registered; each computed from the evaluated rows):"]
  for f in found:
    mark = "HOLDS" if f["holds"] else "does not hold" if f["tested"] else "not tested"
    lines.append(f"- [{mark}] {f['claim']}: {f['evidence']}")
  return "\n".join(lines) + "\n"
