"""The SFT baselines keep exactly what the paper says (STaR's D / D+, Pair-SFT's D / D+)."""

import numpy as np
import pytest

from score_jax.rl import sft_data
from score_jax.rl.experience import Experience

# Four episodes per kind: i->c, c->c, c->i, i->i (rewards of attempts 1 and 2).
KINDS = {"i->c": (0, 1), "c->c": (1, 1), "c->i": (1, 0), "i->i": (0, 0)}


def _rewards(kinds):
  return np.array([KINDS[k] for k in kinds], np.float32)


def test_star_d_keeps_only_incorrect_to_correct():
  kinds = ["i->c", "c->c", "c->i", "i->i"] * 3
  keep = sft_data.star_keep(_rewards(kinds), plus=False)
  assert [k for k, x in zip(kinds, keep) if x] == ["i->c"] * 3


def test_star_d_plus_adds_correct_to_correct():
  kinds = ["i->c", "c->c", "c->i", "i->i"] * 3
  keep = sft_data.star_keep(_rewards(kinds), plus=True)
  assert sorted({k for k, x in zip(kinds, keep) if x}) == ["c->c", "i->c"]
  assert keep.sum() == 6


def test_star_rows_train_the_correction_only():
  turn = np.array([[0, 0, 1, 1, 0, 2, 2, 0], [0, 1, 1, 0, 0, 2, 0, 0]], np.int32)
  valid = np.array([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 0, 0]], bool)
  exp = Experience(tokens=turn * 3 + 1, positions=np.cumsum(valid, 1) - 1, valid=valid, turn=turn)
  rows = sft_data.star_rows(exp, np.array([False, True]))
  assert rows.num_rows == 1
  np.testing.assert_array_equal(rows.loss_mask[0], turn[1] == 2)
  np.testing.assert_array_equal(rows.tokens[0], exp.tokens[1])


def _pair_setup():
  # Problem 0: episodes 0 (i->i), 1 (c->c), 2 (i->c); problem 1: episode 3 (i->i) only;
  # problem 2: episode 4 (c->i) alone.
  prompt_index = np.array([0, 0, 0, 1, 2])
  rewards = _rewards(["i->i", "c->c", "i->c", "i->i", "c->i"])
  return prompt_index, rewards


def test_pair_sft_d_pairs_incorrect_base_responses_with_correct_ones_of_the_same_problem():
  prompt_index, rewards = _pair_setup()
  correct = {(1, 0), (1, 1), (2, 1)}  # every correct response of problem 0, either attempt
  seen = set()
  for seed in range(50):
    pairs = sft_data.pair_responses(prompt_index, rewards, np.random.default_rng(seed), False)
    # Incorrect first attempts of a problem that has a correct response: episodes 0 and 2.
    assert [p[0] for p in pairs] == [(0, 0), (2, 0)]
    for (r1, a1), (r2, a2) in pairs:
      assert rewards[r1, a1] == 0 and rewards[r2, a2] == 1
      assert prompt_index[r1] == prompt_index[r2]
      seen.add((r2, a2))
  assert seen == correct  # targets come from first AND second attempts, at random


def test_pair_sft_d_plus_adds_correct_first_attempts_paired_with_another_correct_response():
  prompt_index, rewards = _pair_setup()
  for seed in range(20):
    pairs = sft_data.pair_responses(prompt_index, rewards, np.random.default_rng(seed), True)
    firsts = [p[0] for p in pairs]
    # Problem 2's correct first attempt has no OTHER correct response: paired with itself.
    assert firsts == [(0, 0), (1, 0), (2, 0), (4, 0)]
    by_first = dict(pairs)
    assert by_first[(1, 0)] != (1, 0) and rewards[by_first[(1, 0)]] == 1
    assert by_first[(4, 0)] == (4, 0)


def test_pair_streams_render_question_wrong_attempt_instruction_and_target():
  prompts = [[2, 10, 11], [2, 20]]
  tokens = [[[30, 31, 5], [32, 5]], [[40, 41, 42], [43, 5]]]  # 5: the end-of-turn id
  truncated = np.array([[False, False], [True, False]])
  instr, close = [7, 8], [5]
  pairs = [((1, 0), (0, 1)), ((0, 0), (1, 1))]
  exp = sft_data.pair_streams(
    prompts, np.array([0, 1]), tokens, truncated, pairs, instr, close, multiple=4
  )
  # Episode 1's first attempt was cut at max_new_tokens: closed before the instruction.
  want0 = [2, 20, 40, 41, 42, 5, 7, 8, 32, 5]
  want1 = [2, 10, 11, 30, 31, 5, 7, 8, 43, 5]
  assert exp.num_slots == 12
  for row, want in enumerate((want0, want1)):
    n = len(want)
    assert exp.tokens[row, :n].tolist() == want and not exp.valid[row, n:].any()
    assert exp.positions[row, :n].tolist() == list(range(n))
    assert exp.loss_mask[row].tolist() == [False] * (n - 2) + [True, True] + [False] * (12 - n)
  with pytest.raises(ValueError, match="no pairs"):
    sft_data.pair_streams(prompts, np.array([0, 1]), tokens, truncated, [], instr, close)
