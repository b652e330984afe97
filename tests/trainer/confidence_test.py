"""Bootstrap intervals over problems and the paired method comparison (trainer/confidence.py)."""

import math

import numpy as np
import pytest

from score_jax.trainer import confidence, metrics


def _correct(b: int, seed: int, p1=0.6, flip=0.2) -> np.ndarray:
  rng = np.random.default_rng(seed)
  t1 = rng.random(b) < p1
  t2 = np.where(rng.random(b) < flip, ~t1, t1)
  return np.stack([t1, t2], axis=1)


def test_intervals_surround_the_metrics_and_repeat_with_the_seed():
  c = _correct(300, 0)
  got = confidence.bootstrap_intervals(c, num_resamples=2000, seed=3)
  want = metrics.self_correction_metrics(c)
  assert set(got) == set(want)
  for name, iv in got.items():
    assert iv.value == want[name] and iv.low <= iv.value <= iv.high, (name, iv)
    assert iv.high - iv.low > 0.01  # 300 problems cannot pin a rate to a point
  again = confidence.bootstrap_intervals(c, num_resamples=2000, seed=3)
  assert again == got
  # Pairing is kept: Delta's interval is that of i->c minus c->i per problem, not of two
  # independent accuracies (which would be wider).
  d = got["delta(t1,t2)"]
  a1, a2 = got["acc@t1"], got["acc@t2"]
  assert d.high - d.low < (a1.high - a1.low) + (a2.high - a2.low)


def test_more_problems_narrow_the_interval():
  widths = []
  for b in (100, 400, 1600):
    iv = confidence.bootstrap_intervals(_correct(b, 1), num_resamples=2000)["acc@t2"]
    widths.append(iv.high - iv.low)
  # The width scales as 1/sqrt(b): each 4x more problems halves it (within resampling noise).
  assert 0.35 < widths[1] / widths[0] < 0.65 and 0.35 < widths[2] / widths[1] < 0.65, widths


def test_95_percent_intervals_cover_the_true_rate_about_95_percent_of_the_time():
  # 200 evaluations of 200 problems each from a known population (Acc@t1 = 0.3): a correct 95%
  # interval misses 0.3 in ~10 of them (binomial sd ~3); a wrong one (e.g. one std wide) in ~64.
  misses = 0
  for seed in range(200):
    c = _correct(200, 100 + seed, p1=0.3)
    iv = confidence.bootstrap_intervals(c, num_resamples=1000, seed=seed)["acc@t1"]
    misses += not iv.low <= 0.3 <= iv.high
  assert 2 <= misses <= 22, misses


def test_mcnemar_exact_p_values():
  assert confidence.mcnemar_p_value(0, 0) == 1.0
  assert confidence.mcnemar_p_value(0, 10) == pytest.approx(2 / 2**10)
  assert confidence.mcnemar_p_value(10, 0) == confidence.mcnemar_p_value(0, 10)
  assert confidence.mcnemar_p_value(5, 5) == 1.0
  # 3 vs 12: 2 * P(X <= 3), X ~ Binomial(15, 1/2).
  want = 2 * sum(math.comb(15, i) for i in range(4)) / 2**15
  assert confidence.mcnemar_p_value(3, 12) == pytest.approx(want)


def test_compare_methods_on_the_same_problems():
  x = _correct(500, 4)[:, 1]
  same = confidence.compare_methods(x, x, num_resamples=1000)
  assert same.difference == confidence.Interval(0.0, 0.0, 0.0) and same.p_value == 1.0
  y = x.copy()
  y[np.flatnonzero(~x)[:40]] = True  # y also solves 40 problems x gets wrong
  better = confidence.compare_methods(x, y, num_resamples=2000)
  assert better.only_y_right == 40 and better.only_x_right == 0
  assert better.difference.value == pytest.approx(40 / 500)
  assert 0 < better.difference.low < better.difference.value < better.difference.high
  assert better.p_value == pytest.approx(2 / 2**40)


def test_bad_inputs_are_named():
  with pytest.raises(ValueError, match=r"shapes \(5,\) and \(4,\)"):
    confidence.compare_methods(np.ones(5, bool), np.ones(4, bool))
  with pytest.raises(ValueError, match="confidence must be in"):
    confidence.bootstrap_intervals(np.ones((3, 2), bool), confidence=95)
  with pytest.raises(ValueError, match="num_resamples must be an int >= 100"):
    confidence.bootstrap_intervals(np.ones((3, 2), bool), num_resamples=10)
  with pytest.raises(ValueError, match="correct_ba must have shape"):
    confidence.bootstrap_intervals(np.ones(3, bool))
