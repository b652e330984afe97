"""The suite's metrics on hand-built correctness: pass@k and majority voting against brute force,
per-level metrics, correction rates, and the problem split's order and padding."""

import itertools
import math
import random
from collections import Counter

import numpy as np
import pytest

from score_jax.trainer import evaluate, metrics, problem_batches


def _brute_pass_at_k(n, c, k):
  # Every k-subset of n samples (the first c correct) equally likely: fraction with a correct one.
  subsets = list(itertools.combinations(range(n), k))
  return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_matches_brute_force(n):
  for c in range(n + 1):
    for k in range(1, n + 1):
      want = _brute_pass_at_k(n, c, k)
      assert metrics.pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12)
      assert want == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)


def test_pass_at_k_large_n_and_bad_input():
  # The product form stays finite where the binomials would overflow a float.
  assert metrics.pass_at_k(2000, 1, 1) == pytest.approx(1 / 2000)
  assert metrics.pass_at_k(2000, 0, 5) == 0.0
  for bad in ((5, 6, 1), (5, 1, 0), (5, 1, 6), (5, -1, 1)):
    with pytest.raises(ValueError, match="pass_at_k"):
      metrics.pass_at_k(*bad)


def _brute_vote(answers, correct):
  """Self-consistency by counting stripped texts: the most frequent answer, ties to the answer
  that appears first, judged by its first sample."""
  texts = [a.strip() for a in answers if a is not None]
  if not texts:
    return False
  counts = Counter(texts)
  best = max(counts.values())
  first = {}
  for i, a in enumerate(answers):
    if a is not None:
      first.setdefault(a.strip(), i)
  winner = min(first[t] for t, count in counts.items() if count == best)
  return bool(correct[winner])


def test_majority_vote_matches_brute_force():
  rng = random.Random(0)
  equal = evaluate.answers_equal("code")  # exact (stripped) text: a transitive equality
  for _ in range(500):
    n = rng.randint(1, 12)
    answers = [rng.choice(["1", "2", " 2", "3", None]) for _ in range(n)]
    correct = [rng.random() < 0.5 for _ in range(n)]
    groups = metrics.vote_groups(answers, equal)
    for t in range(1, n + 1):  # every prefix: the budgets of the scaling evaluation
      got = metrics.majority_vote(groups[:t], correct[:t])
      assert got == _brute_vote(answers[:t], correct[:t]), (answers[:t], correct[:t])


def test_majority_vote_hand_examples_with_the_math_checker():
  equal = evaluate.answers_equal("math")
  answers = ["0.5", "3", "\\frac{1}{2}", "3", None, None, None]
  groups = metrics.vote_groups(answers, equal)
  assert groups.tolist() == [0, 1, 0, 1, -1, -1, -1]
  # Tie 2-2: the group sampled first wins; its FIRST sample's reward decides.
  assert metrics.majority_vote(groups, [True, False, False, False, False, False, False])
  assert not metrics.majority_vote(groups, [False, True, True, True, True, True, True])
  assert not metrics.majority_vote(np.array([-1, -1]), [True, True])  # no answers: no vote
  with pytest.raises(ValueError, match="majority_vote"):
    metrics.majority_vote(groups, [True])


def test_per_level_metrics_and_correction_rate():
  correct = np.array([[1, 1], [0, 1], [0, 0], [1, 0], [0, 1], [1, 1]], bool)
  levels = [2, 2, 10, None, 10, 2]
  out = metrics.per_level_metrics(correct, levels)
  assert list(out) == ["2", "10", "unknown"]
  assert out["2"]["num_examples"] == 3 and out["2"]["acc@t1"] == pytest.approx(2 / 3)
  assert out["2"]["delta_i->c(t1,t2)"] == pytest.approx(1 / 3)
  want = {**metrics.self_correction_metrics(correct[[2, 4]]), "num_examples": 2.0}
  assert out["10"] == pytest.approx(want)
  assert out["unknown"]["delta_c->i(t1,t2)"] == 1.0
  assert metrics.correction_rate(correct) == pytest.approx(2 / 3)  # 3 wrong firsts, 2 fixed
  assert math.isnan(metrics.correction_rate(np.ones((3, 2), bool)))
  with pytest.raises(ValueError, match="levels"):
    metrics.per_level_metrics(correct, levels[:2])


def test_problems_per_call_fills_whole_shards():
  assert problem_batches.problems_per_call(8, 1, 8) == 8
  assert problem_batches.problems_per_call(8, 32, 8) == 1
  assert problem_batches.problems_per_call(8, 2, 8) == 4
  assert problem_batches.problems_per_call(4, 3, 8) == 8  # 24 rows: the first multiple of 8
  for b, s, sh in itertools.product([1, 4, 8, 64], [1, 2, 3, 5, 16], [1, 2, 8]):
    p = problem_batches.problems_per_call(b, s, sh)
    assert p >= 1 and (p * s) % sh == 0


def test_map_problems_returns_each_problem_once_in_order():
  calls = []

  def fn(idx, pos):
    calls.append((idx.tolist(), pos))
    return [idx * 10, np.stack([idx, -idx], 1)], [{"i": int(i)} for i in idx]

  (a, b), recs = problem_batches.map_problems(7, 3, fn)
  assert calls == [([0, 1, 2], 0), ([3, 4, 5], 3), ([6, 0, 1], 6)]  # padded with early problems
  assert a.tolist() == [0, 10, 20, 30, 40, 50, 60] and b.shape == (7, 2)
  assert [r["i"] for r in recs] == list(range(7))  # padding records dropped
