"""The algorithm table's rows: naive multi-turn RL in both readings credits what the paper says,
every method names registered algorithms, and the SFT baselines collect what they should."""

import numpy as np
import pytest

from score_jax.rl import algorithms

# Two prompts x g=2 episodes, two attempts: (i->c, c->i) and (c->c, i->i).
REWARDS = np.array([[0, 1], [1, 0], [1, 1], [0, 0]], np.float32)
TURN = np.array([[0, 1, 1, 0, 2, 2]] * 4, np.int32)
COEF = algorithms.Coefficients.of(alpha=10.0, beta1=0.01, beta2=0.5)


def _weights(name):
  adv, kl = algorithms.get(name).weights(TURN, REWARDS, 2, COEF, "rloo")
  return np.asarray(adv), np.asarray(kl)


def test_naive_reading_rewards_attempt_2_only():
  adv, kl = _weights("naive_multiturn")
  assert np.all(adv[:, 1:3] == 0)  # attempt-1 tokens carry no reward
  # RLOO of r2 within each prompt's pair (leave-one-out baseline = the other sample's r2).
  np.testing.assert_allclose(adv[:, 4], [1, -1, 1, -1])
  assert np.all(kl[:, [1, 2, 4, 5]] == 0.01)


def test_eq1_reading_rewards_both_attempts_without_bonus():
  adv, kl = _weights("multiturn_eq1")
  # Attempt 1: RLOO of r1 within each pair.
  np.testing.assert_allclose(adv[:, 1], [-1, 1, 1, -1])
  # Attempt 2: RLOO of r2 alone, alpha ignored (the coefficients carry alpha = 10).
  np.testing.assert_allclose(adv[:, 4], [1, -1, 1, -1])
  stage2, _ = _weights("stage2")  # with the bonus: r2 + 10 (r2 - r1) = 11, -10 in pair 1
  np.testing.assert_allclose(stage2[:, 4], [21, -21, 1, -1])
  assert np.all(kl[:, [1, 2, 4, 5]] == 0.01)


def test_every_method_names_registered_algorithms_and_sections():
  for m in algorithms.METHODS.values():
    for name, sections in m.phases:
      algorithms.get(name)
      assert set(sections) <= {"stage1", "stage2"}
    assert m.instruction in ("correction", "self_refine")
  assert algorithms.method("self_refine").instruction == "self_refine"
  assert (
    algorithms.method("base").phases == () and algorithms.method("base").final_algorithm() is None
  )


@pytest.mark.parametrize(
  "name, source, keep, plus",
  [
    ("star", "policy", "star", False),
    ("star_plus", "policy", "star", True),
    ("pair_sft", "base", "pair", False),
    ("pair_sft_plus", "base", "pair", True),
  ],
)
def test_sft_baselines_collect_from_the_paper_s_source(name, source, keep, plus):
  col = algorithms.get(name).collection
  assert (col.source, col.keep, col.plus) == (source, keep, plus)
  assert algorithms.get(name).objective == "sft"


def test_a_policy_objective_cannot_collect():
  with pytest.raises(ValueError, match="only SFT objectives collect"):
    algorithms.Algorithm(
      "x",
      "",
      "policy",
      lambda *a: None,
      collection=algorithms.Collection("policy", "star", False, "one"),
    )
