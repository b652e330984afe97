"""Uncertainty of the self-correction metrics: bootstrap intervals and a paired method test.

A greedy evaluation scores each problem once per attempt, so the only randomness a reader must
see is which problems were drawn. `bootstrap_intervals` resamples PROBLEMS with replacement
(each problem's attempts stay together, so Delta, i->c and c->i keep their pairing) and reports
percentile intervals of Acc@t1, Acc@t2 and the three deltas. `compare_methods` compares two
methods evaluated on the same problems: a paired bootstrap interval of the difference in
accuracy and an exact McNemar test on the problems where exactly one of them is right.

Host-side NumPy only. Legend: b problems, a attempts, r bootstrap resamples.
"""

import dataclasses
import math

import numpy as np

from score_jax.trainer import metrics

_BLOCK = 500  # resamples drawn at once: [_BLOCK, b, columns] floats stay small


@dataclasses.dataclass(frozen=True)
class Interval:
  """A point estimate with a two-sided percentile interval (fractions, not percent)."""

  value: float
  low: float
  high: float

  def as_dict(self) -> dict[str, float]:
    return {"value": self.value, "low": self.low, "high": self.high}


@dataclasses.dataclass(frozen=True)
class Comparison:
  """Method x vs method y on the same problems: y's accuracy minus x's."""

  difference: Interval
  p_value: float  # exact two-sided McNemar test on the discordant problems
  only_x_right: int
  only_y_right: int


def _check(confidence: float, num_resamples: int) -> None:
  if not 0 < confidence < 1:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  if not isinstance(num_resamples, int) or num_resamples < 100:
    raise ValueError(f"num_resamples must be an int >= 100, got {num_resamples!r}")


def _percentile_intervals(x_bc, point_c, confidence, num_resamples, seed) -> np.ndarray:
  """[c, 2] percentile bounds of the column means of x_bc under resampling of its rows."""
  rng = np.random.default_rng(seed)
  b = x_bc.shape[0]
  means = []
  for start in range(0, num_resamples, _BLOCK):
    idx_rb = rng.integers(0, b, (min(_BLOCK, num_resamples - start), b))
    means.append(x_bc[idx_rb].mean(axis=1))
  tail = 100 * (1 - confidence) / 2
  bounds = np.percentile(np.concatenate(means), [tail, 100 - tail], axis=0).T
  # Percentiles of a finite resample can sit a rounding step off a degenerate point estimate.
  return np.stack([np.minimum(bounds[:, 0], point_c), np.maximum(bounds[:, 1], point_c)], 1)


def mean_intervals(
  x_bc, *, confidence: float = 0.95, num_resamples: int = 10_000, seed: int = 0
) -> np.ndarray:
  """[c, 2] percentile intervals of the column means of x_bc [b, c], resampling its rows
  (problems) together, so paired columns keep their pairing."""
  _check(confidence, num_resamples)
  x_bc = np.asarray(x_bc, np.float64)
  return _percentile_intervals(x_bc, x_bc.mean(axis=0), confidence, num_resamples, seed)


def bootstrap_intervals(
  correct_ba, *, confidence: float = 0.95, num_resamples: int = 10_000, seed: int = 0
) -> dict[str, Interval]:
  """Percentile intervals of `metrics.self_correction_metrics`, resampling problems.

  Returns the same keys as `self_correction_metrics` (acc@t1.., delta, delta_i->c, delta_c->i
  between consecutive attempts), each an Interval around the metric's value.
  """
  _check(confidence, num_resamples)
  point = metrics.self_correction_metrics(correct_ba)
  c = np.asarray(correct_ba, bool)
  columns = {f"acc@t{j + 1}": c[:, j] for j in range(c.shape[1])}
  for j in range(c.shape[1] - 1):
    tag = f"(t{j + 1},t{j + 2})"
    i2c, c2i = ~c[:, j] & c[:, j + 1], c[:, j] & ~c[:, j + 1]
    columns[f"delta{tag}"] = i2c.astype(np.int8) - c2i.astype(np.int8)
    columns[f"delta_i->c{tag}"], columns[f"delta_c->i{tag}"] = i2c, c2i
  names = list(columns)
  x_bc = np.stack([columns[k].astype(np.float64) for k in names], axis=1)
  point_c = np.array([point[k] for k in names])
  bounds = _percentile_intervals(x_bc, point_c, confidence, num_resamples, seed)
  return {
    k: Interval(float(v), float(lo), float(hi)) for k, v, (lo, hi) in zip(names, point_c, bounds)
  }


def mcnemar_p_value(only_x_right: int, only_y_right: int) -> float:
  """Exact two-sided McNemar p-value: under H0 each discordant problem favours y with p = 1/2."""
  n, k = only_x_right + only_y_right, min(only_x_right, only_y_right)
  if n == 0:
    return 1.0
  tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
  return min(1.0, 2 * tail)


def compare_methods(
  correct_x_b, correct_y_b, *, confidence: float = 0.95, num_resamples: int = 10_000, seed: int = 0
) -> Comparison:
  """Accuracy of y minus accuracy of x on the same problems (e.g. Acc@t2 columns of two runs)."""
  _check(confidence, num_resamples)
  x, y = np.asarray(correct_x_b), np.asarray(correct_y_b)
  if x.ndim != 1 or x.shape != y.shape or x.size == 0:
    raise ValueError(
      f"compare_methods needs two non-empty [b] correctness vectors over the same problems, got "
      f"shapes {x.shape} and {y.shape}"
    )
  x, y = x.astype(bool), y.astype(bool)
  diff_b = y.astype(np.float64) - x.astype(np.float64)
  point = np.array([diff_b.mean()])
  bounds = _percentile_intervals(diff_b[:, None], point, confidence, num_resamples, seed)[0]
  only_x, only_y = int((x & ~y).sum()), int((~x & y).sum())
  return Comparison(
    difference=Interval(float(point[0]), float(bounds[0]), float(bounds[1])),
    p_value=mcnemar_p_value(only_x, only_y),
    only_x_right=only_x,
    only_y_right=only_y,
  )
