"""The testbed task: problems, disjoint splits, both solution forms, and the verifier on them."""

import random

import pytest

from score_jax.rewards import math_reward
from score_jax.testbed import arith


def test_splits_are_deterministic_prefix_stable_and_disjoint():
  test = arith.load_split("test", 300)
  assert [e.question for e in arith.load_split("test", 100)] == [e.question for e in test[:100]]
  train = arith.load_split("train", 4000)
  assert len(train) == 4000
  held_out = {arith.terms_of(e) for e in arith.load_split("test", 5000)}
  assert not held_out & {arith.terms_of(e) for e in train}
  for e in test[:50]:
    terms = arith.terms_of(e)
    assert len(terms) in arith.TERM_COUNTS
    assert all(arith.TERM_RANGE[0] <= t <= arith.TERM_RANGE[1] for t in terms)
    assert e.answer == str(sum(terms))
    assert e.question == f"What is {'+'.join(map(str, terms))}?"


def test_bad_split_and_size():
  with pytest.raises(ValueError, match="split must be"):
    arith.load_split("dev", 10)
  with pytest.raises(ValueError, match="family must be"):
    arith.load_split("test", 10, "sum99")
  with pytest.raises(ValueError, match="n must be positive"):
    arith.load_split("test", 0)


def test_solutions_are_scored_by_the_math_verifier():
  terms = (7, 8, 5, 9, 3)
  right = arith.fast_solution(terms, 32)
  assert right == "7+8+5+9+3=32. Final Answer: The final answer is 32. I hope it is correct."
  assert math_reward.reward(right, "32") == 1.0
  assert math_reward.reward(arith.fast_solution(terms, 31), "32") == 0.0
  # The answer-only form is the answer line alone; an unknown form is an error.
  assert arith.fast_solution(terms, 32, "answer") == arith.ANSWER_LINE.format(answer=32)
  with pytest.raises(ValueError, match="fast solution form"):
    arith.fast_solution(terms, 32, "essay")
  # The check redoes the sum in written steps and gets it right.
  check = arith.check_solution(terms)
  assert check.startswith("Let me add them one at a time: 7+8=15. 15+5=20. 20+9=29. 29+3=32. ")
  assert math_reward.reward(check, "32") == 1.0


def test_drill_rows_are_one_step_sums_in_the_check_format():
  question, answer = arith.drill(random.Random(0))
  assert question == arith.DRILL_QUESTION
  facts = answer.split(" ")
  assert len(facts) == arith.DRILL_FACTS
  for fact in facts:
    a, rest = fact.removesuffix(".").split("+")
    b, total = rest.split("=")
    assert int(a) + int(b) == int(total)
    assert arith.TERM_RANGE[0] <= int(b) <= arith.TERM_RANGE[1]


def test_one_pass_answers_slip_at_the_requested_rate():
  rng = random.Random(0)
  terms = (3, 4, 5, 6, 7)
  answers = [arith.noisy_answer(terms, 0.2, rng) for _ in range(4000)]
  wrong = [a for a in answers if a != 25]
  assert abs(len(wrong) / 4000 - 0.2) < 0.02
  assert set(wrong) == {23, 24, 26, 27}


def test_v2_splits_are_disjoint_from_training_and_the_held_out_family_is_another_length():
  train = {arith.terms_of(e) for e in arith.load_split("train", 3000, "sum10to12")}
  for split in ("validation", "test"):
    held = arith.load_split(split, 500, "sum10to12")
    assert not train & {arith.terms_of(e) for e in held}
    assert {len(arith.terms_of(e)) for e in held} == {10, 11, 12}
    assert held[0].id == f"testbed/sum10to12/{split}/0"
  # Validation and test are different draws; the held-out variant has a length training never has.
  val, test = (arith.load_split(s, 200, "sum10to12") for s in ("validation", "test"))
  assert [e.question for e in val] != [e.question for e in test]
  assert {len(arith.terms_of(e)) for e in arith.load_split("test", 100, "sum9")} == {9}
  # v1's splits are unchanged by the families (its ids and problems).
  assert arith.load_split("test", 3)[0].id == "testbed/test/0"


@pytest.mark.parametrize("stated", [53, 55, 51, 40])
def test_verify_counts_down_from_the_stated_answer_and_repairs_by_what_is_left(stated):
  terms = (7, 8, 5, 9, 3, 2, 6, 1, 4, 8)  # sums to 53
  text = arith.verify_solution(terms, stated)
  assert text.startswith(f"{arith.VERIFY_OPENING} {stated}: {stated}-7={stated - 7}. ")
  assert math_reward.reward(text, "53") == 1.0  # a check with right steps always ends right
  left = stated - 53
  if left:
    sign = "-" if left > 0 else "+"
    assert f" {stated}{sign}{abs(left)}=53. Final Answer" in text
  else:
    assert "8-8=0. Final Answer" in text
