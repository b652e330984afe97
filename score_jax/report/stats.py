"""Rows over seeds: the paper's columns with 95% intervals, and paired comparisons of rows.

A row (table, row name) pools its seeds PER PROBLEM: each problem's correctness is averaged
over the seeds, and the interval is a percentile bootstrap over problems of that average (the
same resampling as `trainer.confidence`, which takes one seed's 0/1 correctness). Pooling needs
every seed to have evaluated the same problem ids; when they did not (or a seed has no
episodes), the interval falls back to the spread of the per-seed values, and `Group.interval`
says which was used and why.

Comparisons pair a row with the reference row (SCoRe when present) on the problems both
evaluated: per seed, `confidence.compare_methods` (paired bootstrap + exact McNemar) on Acc@t2;
over seeds, a bootstrap over problems of the seed-averaged difference.

All values here are in points (%), as the paper prints them. Legend: b problems, a attempts,
c columns, s seeds.
"""

import dataclasses
from typing import Any

import numpy as np

from score_jax.configs import paper
from score_jax.report import workdirs
from score_jax.rl import algorithms
from score_jax.trainer import confidence

PAIRED = paper.T12  # the columns computed from per-problem correctness of attempts 1 and 2


@dataclasses.dataclass
class Cell:
  """One table cell in points: the seed mean, its interval, the per-seed values, the paper's."""

  value: float
  low: float | None
  high: float | None
  per_seed: list[float]
  paper: float | None
  kind: str = "ci95"  # what low..high is: "ci95" | "seeds" (min..max of the per-seed values)


@dataclasses.dataclass
class Group:
  """One row of one table: the finished runs of it (seed order) and its cells."""

  table: str
  row: str
  title: str
  method: str
  runs: list[workdirs.Run]
  cells: dict[str, Cell]
  interval: str  # how the cells' intervals were computed
  num_problems: int  # problems the pooled interval resamples (0: no pooling)
  extras: dict[str, Any] = dataclasses.field(default_factory=dict)  # report.extras, by name

  @property
  def seeds(self) -> list[int]:
    return [r.seed for r in self.runs]


def columns_of(table: str) -> tuple[str, ...]:
  return paper.TABLES[table][1] if table in paper.TABLES else PAIRED


def title_of(row: str, method: str) -> str:
  if row in paper.ROWS:
    return paper.ROWS[row].title
  return algorithms.METHODS[method].title if method in algorithms.METHODS else row


def bootstrap_means(x_bc, num_resamples: int, seed: int = 0, level: float = 0.95) -> np.ndarray:
  """[c, 2] percentile interval of the column means of x_bc, resampling its rows (problems)."""
  return confidence.mean_intervals(x_bc, confidence=level, num_resamples=num_resamples, seed=seed)


def per_problem(correct_ba: np.ndarray) -> np.ndarray:
  """[b, c] per-problem values of PAIRED columns: acc@t1, acc@t2, delta, i->c, c->i."""
  t1, t2 = correct_ba[:, 0], correct_ba[:, 1]
  i2c, c2i = (~t1 & t2).astype(np.float64), (t1 & ~t2).astype(np.float64)
  return np.stack([t1.astype(np.float64), t2.astype(np.float64), i2c - c2i, i2c, c2i], axis=1)


def has_pairs(run: workdirs.Run) -> bool:
  return run.correct_ba is not None and run.correct_ba.shape[1] >= 2


def seed_values(run: workdirs.Run) -> dict[str, float]:
  """The run's PAIRED columns and MBPP-R in points (episodes when present, else its metrics)."""
  if has_pairs(run):
    out = dict(zip(PAIRED, 100 * per_problem(run.correct_ba).mean(axis=0)))
  else:
    out = {k: 100 * run.metrics[k] for k in PAIRED if k in run.metrics}
  if "repair" in run.evals:
    out["mbpp_r"] = 100 * float(run.evals["repair"]["repair_accuracy"])
  return {k: float(v) for k, v in out.items()}


def aligned(runs: list[workdirs.Run]) -> tuple[list[str], np.ndarray | None, str]:
  """(ids, correct_sba on those ids, "") when every run scored the same problems, else a reason."""
  for run in runs:
    if not has_pairs(run):
      return [], None, f"seed {run.seed} ({run.path}) has no per-problem episodes with 2 attempts"
    if len(set(run.ids)) != len(run.ids):
      return [], None, f"seed {run.seed} ({run.path}) repeats problem ids"
  # The first seed's file order: one seed's interval then resamples exactly as its own
  # evaluation did (trainer.confidence on the same rows, same seed).
  ids = list(runs[0].ids)
  for run in runs[1:]:
    if set(run.ids) != set(ids):
      return [], None, f"problem ids differ between seeds {runs[0].seed} and {run.seed}"
  stack = []
  for run in runs:
    where = {pid: i for i, pid in enumerate(run.ids)}
    stack.append(run.correct_ba[[where[pid] for pid in ids], :2])
  return ids, np.stack(stack), ""


def _eval_interval(run: workdirs.Run, col: str) -> tuple[float | None, float | None]:
  """The evaluation's own 95% interval of one column (a single seed without episodes)."""
  if col == "mbpp_r":
    ci = run.evals.get("repair", {}).get("ci95")
    return (100 * ci[0], 100 * ci[1]) if ci else (None, None)
  lo, hi = run.metrics.get(f"{col}_ci95_low"), run.metrics.get(f"{col}_ci95_high")
  return (100 * lo, 100 * hi) if lo is not None and hi is not None else (None, None)


def _pooled_repair(runs: list[workdirs.Run], num_resamples: int):
  """MBPP-R's (low, high, problems) pooled over seeds like the other columns, when possible."""
  per_run = [r.evals.get("repair", {}).get("correct") or {} for r in runs]
  if not all(per_run) or any(set(p) != set(per_run[0]) for p in per_run):
    return None
  ids = list(per_run[0])
  x_b = np.mean([[p[i] for i in ids] for p in per_run], axis=0)
  lo, hi = 100 * bootstrap_means(x_b[:, None], num_resamples)[0]
  return float(lo), float(hi), len(ids)


def summarize(table: str, row: str, runs: list[workdirs.Run], num_resamples: int) -> Group:
  """The Group of one (table, row): cells over its seeds (runs already in seed order)."""
  cols = columns_of(table)
  per_seed = [seed_values(r) for r in runs]
  printed = paper.ROWS[row].paper.get(table, ()) if row in paper.ROWS else ()
  ids, correct_sba, reason = aligned(runs)
  bounds: dict[str, tuple[float | None, float | None]] = {}
  if correct_sba is not None:
    x_bc = np.mean([per_problem(c) for c in correct_sba], axis=0)
    for col, (lo, hi) in zip(PAIRED, 100 * bootstrap_means(x_bc, num_resamples)):
      bounds[col] = (float(lo), float(hi))
    how = f"95% bootstrap over {len(ids)} problems"
    how += (
      f" of the per-problem correctness averaged over {len(runs)} seeds" if len(runs) > 1 else ""
    )
  elif len(runs) == 1:
    how = f"the evaluation's own 95% interval ({reason})"
  else:
    how = f"min..max over seeds, not a 95% interval ({reason})"
  repair = _pooled_repair(runs, num_resamples) if "mbpp_r" in cols else None
  if repair:
    bounds["mbpp_r"] = repair[:2]
    how += f"; MBPP-R: 95% bootstrap over {repair[2]} repair problems"
  elif "mbpp_r" in cols and len(runs) > 1:
    how += "; MBPP-R: min..max over seeds (per-problem repair results missing or differing)"
  elif "mbpp_r" in cols:
    how += "; MBPP-R: the repair evaluation's own 95% interval"
  cells = {}
  for k, col in enumerate(cols):
    vals = [v[col] for v in per_seed if col in v]
    if not vals:
      continue
    lo, hi = bounds.get(col, (None, None))
    kind = "ci95" if col in bounds or len(runs) == 1 else "seeds"
    if col not in bounds:
      lo, hi = _eval_interval(runs[0], col) if len(runs) == 1 else (min(vals), max(vals))
    ref = float(printed[k]) if k < len(printed) else None
    cells[col] = Cell(float(np.mean(vals)), lo, hi, vals, ref, kind)
  method = runs[0].method
  return Group(table, row, title_of(row, method), method, runs, cells, how, len(ids))


@dataclasses.dataclass
class SeedComparison:
  """One seed of a row vs the same seed of the reference on Acc@t2 (points)."""

  seed: int
  num_problems: int
  difference: dict[str, float]  # value, low, high: row minus reference
  p_value: float
  only_reference_right: int
  only_row_right: int


@dataclasses.dataclass
class RowComparison:
  """A row vs the reference row of its table on Acc@t2."""

  table: str
  reference: str
  row: str
  per_seed: list[SeedComparison]
  averaged: dict[str, float] | None  # seed-averaged difference with a bootstrap interval
  num_problems: int  # problems shared by every run of both rows (the averaged difference's)
  note: str
  single_pair: bool = False  # one seed each, paired: `averaged` repeats per_seed[0]


def _acc2(run: workdirs.Run, ids: list[str]) -> np.ndarray:
  where = {pid: i for i, pid in enumerate(run.ids)}
  return run.correct_ba[[where[pid] for pid in ids], 1]


def _shared(runs: list[workdirs.Run]) -> list[str]:
  common = set(runs[0].ids)
  for run in runs[1:]:
    common &= set(run.ids)
  return sorted(common)


def compare(ref: Group, other: Group, num_resamples: int) -> RowComparison:
  """`other` minus `ref` in Acc@t2: seed s against seed s, and averaged over seeds."""
  lacking = [r for r in ref.runs + other.runs if not has_pairs(r)]
  if lacking:
    note = "no per-problem episodes in " + ", ".join(r.path for r in lacking)
    return RowComparison(other.table, ref.row, other.row, [], None, 0, note)
  by_seed = {r.seed: r for r in ref.runs}
  per_seed = []
  for run in other.runs:
    if run.seed not in by_seed:
      continue
    ids = _shared([by_seed[run.seed], run])
    if not ids:
      continue
    c = confidence.compare_methods(
      _acc2(by_seed[run.seed], ids), _acc2(run, ids), num_resamples=num_resamples
    )
    diff = {k: 100 * v for k, v in c.difference.as_dict().items()}
    per_seed.append(
      SeedComparison(run.seed, len(ids), diff, c.p_value, c.only_x_right, c.only_y_right)
    )
  notes = []
  if not per_seed:
    notes.append("no seed evaluated on shared problems by both rows")
  ids = _shared(ref.runs + other.runs)
  averaged = None
  if ids:
    d_b = np.mean([_acc2(r, ids) for r in other.runs], 0) - np.mean(
      [_acc2(r, ids) for r in ref.runs], 0
    )
    lo, hi = 100 * bootstrap_means(d_b[:, None], num_resamples)[0]
    averaged = {"value": float(100 * d_b.mean()), "low": float(lo), "high": float(hi)}
  else:
    notes.append("no problem evaluated by every run of both rows")
  single = len(ref.runs) == len(other.runs) == len(per_seed) == 1
  note = "; ".join(notes)
  return RowComparison(other.table, ref.row, other.row, per_seed, averaged, len(ids), note, single)


def comparisons(groups: list[Group], num_resamples: int) -> list[RowComparison]:
  """Every row of one table vs its reference: 'score' if present, else the table's first row."""
  if len(groups) < 2:
    return []
  ref = next((g for g in groups if g.row == "score"), groups[0])
  return [compare(ref, g, num_resamples) for g in groups if g is not ref]
