"""Short arithmetic for small chat models: "Compute 37 - 8. Reply with the answer only."

Owns the problem space, its fixed train / validation / test partition, and the answer rule.
Chosen for SmolLM2-135M-Instruct (BUILD_NOTES.md, issue 20): MATH and reasoning-gym's
basic_arithmetic leave that model at ~1%, while one operation on a number up to 60 and one up
to 12 puts its first attempt in the 20-60% band where both correcting and breaking answers are
possible, and its answers fit in a few dozen tokens (CPU runs are sized by sequence length).

The space is every distinct expression `x op y` (x in 2..60, y in 2..12, op in + - *, sums and
products in both orders, differences larger-first, so no answer is negative): 2,948 problems.
They are shuffled once with a fixed seed and cut into test (the first 1,000), validation (the
next 500) and train (the rest), so the three splits never share a problem and every machine
draws the same ones. The answer of an attempt is its last integer (thousands commas dropped):
the prompt asks for the answer alone, and a model that explains itself is still read at its
last number.
"""

from __future__ import annotations

import random
import re

from score_jax.data import records

X_RANGE = range(2, 61)
Y_RANGE = range(2, 13)
OPS = ("+", "-", "*")
SPLIT_SIZES = {"test": 1000, "validation": 500}  # train: the rest
SHUFFLE_SEED = 20261203

FIRST_TURN = "Compute {expression}. Reply with the answer only."
# Shorter than the paper's MATH instruction (fewer tokens per episode on CPU). On 200 validation
# problems the base model changes 17% of its answers after this one and 9% after the paper's.
CORRECTION = "Check your answer. If it is wrong, give the correct answer."
SELF_REFINE = "Check the answer above step by step, then give the final answer."

_INT_RE = re.compile(r"-?\d+")


def _value(x: int, op: str, y: int) -> int:
  return x + y if op == "+" else x - y if op == "-" else x * y


def all_problems() -> list[tuple[str, int]]:
  """Every (expression, answer) of the space, in a fixed order (before the shuffle)."""
  seen: dict[str, int] = {}
  for x in X_RANGE:
    for y in Y_RANGE:
      for op in OPS:
        orders = [(max(x, y), min(x, y))] if op == "-" else [(x, y), (y, x)]
        for a, b in orders:
          seen.setdefault(f"{a} {op} {b}", _value(a, op, b))
  return list(seen.items())


def split_problems(split: str) -> list[tuple[str, int]]:
  """The (expression, answer) pairs of 'train', 'validation' or 'test' (disjoint, fixed)."""
  problems = all_problems()
  random.Random(SHUFFLE_SEED).shuffle(problems)
  n_test, n_val = SPLIT_SIZES["test"], SPLIT_SIZES["validation"]
  cuts = {
    "test": problems[:n_test],
    "validation": problems[n_test : n_test + n_val],
    "train": problems[n_test + n_val :],
  }
  if split not in cuts:
    raise ValueError(f"chat_arith: split must be one of {sorted(cuts)}, got {split!r}")
  return cuts[split]


def load_split(split: str, size: int = 0) -> list[records.Example]:
  """Examples of a split; `size` > 0 keeps its first `size` problems (0 = all)."""
  problems = split_problems(split)
  if size > 0:
    problems = problems[:size]
  return [
    records.Example(
      id=f"chat_arith/{split}/{i}",
      question=FIRST_TURN.format(expression=expression),
      answer=str(answer),
      metadata={"expression": expression},
    )
    for i, (expression, answer) in enumerate(problems)
  ]


def final_answer(text: str | None) -> str | None:
  """The last integer of an attempt (thousands commas dropped), or None."""
  if not text:
    return None
  found = _INT_RE.findall(re.sub(r"(?<=\d),(?=\d{3}\b)", "", text))
  return str(int(found[-1])) if found else None


def is_correct(example: records.Example, text: str) -> bool:
  return final_answer(text) == example.answer
