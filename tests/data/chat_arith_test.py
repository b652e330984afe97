"""chat_arith: a fixed, disjoint partition of one finite space, and the last-integer answer rule."""

import pytest

from score_jax import tasks
from score_jax.data import chat_arith


def test_splits_are_disjoint_fixed_and_cover_the_space():
  splits = {s: chat_arith.split_problems(s) for s in ("train", "validation", "test")}
  assert [len(splits[s]) for s in ("test", "validation")] == [1000, 500]
  exprs = [e for s in splits.values() for e, _ in s]
  assert len(exprs) == len(set(exprs)) == len(chat_arith.all_problems())
  assert chat_arith.split_problems("test") == splits["test"]  # the same draw every call
  for expression, answer in splits["test"]:
    assert eval(expression) == answer >= 0  # noqa: S307 (our own generated expressions)
  with pytest.raises(ValueError, match="split must be one of"):
    chat_arith.split_problems("dev")


@pytest.mark.parametrize(
  "text, want",
  [("40 * 5 = 200.", "200"), ("The answer is 1,500.", "1500"), ("no number", None),
   ("12 - 15 = -3", "-3"), ("", None), ("7 + 8 equals 15, so 15", "15")],
)  # fmt: skip
def test_final_answer_is_the_last_integer(text, want):
  assert chat_arith.final_answer(text) == want


def test_registered_task_checks_on_the_host():
  task = tasks.load_task("chat_arith", "validation", procedural_size=3)
  assert len(task.examples) == 3 and task.first_turn(task.examples[0]).startswith("Compute ")
  ex = task.examples[0]
  assert task.spec.host_check(ex, f"It is {ex.answer}.")
  assert not task.spec.host_check(ex, f"It is {int(ex.answer) + 1}.")
