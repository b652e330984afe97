"""The testbed task: the sum of ten one-digit numbers, answered at once or redone in steps.

Problem: "What is 7+8+5+9+3+2+6+1+4+8?". Two ways to write a solution:

  fast (most first attempts look like this): the sum in one go, as the answer line alone
  (form "answer", the testbed's default) or after restating the expression (form "expression"),
    Final Answer: The final answer is 53. I hope it is correct.
  check (a second attempt may look like this, and a few first attempts): the sum done as a
  running sum, one written step per term,
    Let me add them one at a time: 7+8=15. 15+5=20. 20+9=29. 29+3=32. 32+2=34. 34+6=40. 40+1=41.
    41+4=45. 45+8=53. Final Answer: The final answer is 53. I hope it is correct.

Adding ten digits in one forward pass is beyond a model of a few hundred thousand parameters
on a share of problems (it lands one or two off), while each written step reads two numbers
and adds them: redoing the work in written steps is the extra computation that makes a second
look worth having, the same way a larger model's careful second attempt
beats its first. The check does not restate the answer it checks: a version that did ("Let me
check 40 ...") learned to steer its steps toward that answer (BUILD_NOTES.md, the testbed
section). Answers are checked by the project's math verifier on the paper's "Final Answer"
line, like MATH.

Train and test problems are disjoint: test problems come from their own seed and any train
problem equal to a test problem (same terms in the same order) is dropped.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Sequence

from score_jax.data import records

ANSWER_LINE = "Final Answer: The final answer is {answer}. I hope it is correct."
CHECK_OPENING = "Let me add them one at a time"
VERIFY_OPENING = "Let me check"
SPLIT_SEEDS = {"train": 0, "test": 1, "validation": 2}
# Problems of the other splits a train split of any size leaves out (max(n, this) of each).
HELD_OUT_SPLIT_SIZE = 5000


@dataclasses.dataclass(frozen=True)
class Family:
  """A family of sum problems: how many terms, each drawn uniformly from `term_range`."""

  name: str
  term_counts: tuple[int, ...]
  term_range: tuple[int, int] = (1, 9)
  seed_offset: int = 0  # keeps each family's draws its own


FAMILIES = {
  # The v1 testbed (experiments/testbed.py): ten one-digit terms.
  "sum10": Family("sum10", (10,)),
  # Testbed v2 (experiments/testbed_v2.py): 10-12 one-digit terms, the pre-registered task.
  "sum10to12": Family("sum10to12", (10, 11, 12), seed_offset=100),
  # Its held-out variant: 9 terms, a length no pretraining transcript has; never used in design.
  "sum9": Family("sum9", (9,), seed_offset=200),
}
TERM_COUNTS = FAMILIES["sum10"].term_counts
TERM_RANGE = FAMILIES["sum10"].term_range


def question(terms: Sequence[int]) -> str:
  return f"What is {expression(terms)}?"


def _problems(n: int, seed: int, family: Family) -> list[tuple[int, ...]]:
  rng = random.Random(seed + family.seed_offset)
  counts, lo_hi = family.term_counts, family.term_range
  return [tuple(rng.randint(*lo_hi) for _ in range(rng.choice(counts))) for _ in range(n)]


def load_split(split: str, n: int, family: str = "sum10") -> list[records.Example]:
  """`n` problems of a split of `family`, deterministic; a larger `n` extends the same list.

  The train split excludes the first max(n, HELD_OUT_SPLIT_SIZE) problems of the test and
  validation splits, so any evaluation split of up to that size (every config's
  `procedural_size` covers it) is disjoint from training. Validation and test may share a
  problem (each is an independent draw), as two draws from one distribution do.
  """
  if split not in SPLIT_SEEDS:
    raise ValueError(f"testbed: split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}")
  if family not in FAMILIES:
    raise ValueError(f"testbed: family must be one of {sorted(FAMILIES)}, got {family!r}")
  if n <= 0:
    raise ValueError(f"testbed: n must be positive, got {n}")
  terms = _split_terms(split, n, family)
  prefix = "testbed" if family == "sum10" else f"testbed/{family}"
  return [
    records.Example(
      id=f"{prefix}/{split}/{i}",
      question=question(t),
      answer=str(sum(t)),
      metadata={"terms": t},
    )
    for i, t in enumerate(terms)
  ]


# A run loads its splits several times (training, evaluation, the held-out sets) and a grid runs
# ~90 runs in one process: the train split (drawn, then the held-out problems removed) took ~3 s
# each time. The terms are tuples, so every caller builds its own records from shared values.
@functools.lru_cache(maxsize=16)
def _split_terms(split: str, n: int, family: str) -> tuple[tuple[int, ...], ...]:
  fam = FAMILIES[family]
  if split != "train":
    terms = _problems(n, SPLIT_SEEDS[split], fam)
  else:
    size = max(n, HELD_OUT_SPLIT_SIZE)
    # sum10 (v1) excluded only the test split; keeping that keeps its train problems unchanged.
    others = ("test",) if family == "sum10" else ("test", "validation")
    held_out = {t for s in others for t in _problems(size, SPLIT_SEEDS[s], fam)}
    terms, extra = [], 0
    while len(terms) < n:  # top up past the (rare) collisions with the held-out splits
      cand = _problems(n + extra, SPLIT_SEEDS["train"], fam)
      terms = [t for t in cand if t not in held_out][:n]
      extra += max(16, n // 100)
  return tuple(terms)


def terms_of(example: records.Example) -> tuple[int, ...]:
  return tuple(example.metadata["terms"])


# ---------------------------------------------------------------------------- writing solutions


FAST_FORMS = ("expression", "answer")


def fast_solution(terms: Sequence[int], answer: int, form: str = "expression") -> str:
  """The sum written at once; `answer` is what the writer believes it is.

  form "expression" restates the sum first ("7+8+5=20. Final Answer: ..."); "answer" is the answer
  line alone, which leaves the one pass no written tokens to add on.
  """
  if form == "answer":
    return ANSWER_LINE.format(answer=answer)
  if form != "expression":
    raise ValueError(f"testbed: fast solution form must be one of {FAST_FORMS}, got {form!r}")
  return f"{expression(terms)}={answer}. " + ANSWER_LINE.format(answer=answer)


def expression(terms: Sequence[int]) -> str:
  return "+".join(str(t) for t in terms)


def check_solution(terms: Sequence[int]) -> str:
  """The sum redone in written steps: a running sum, one term at a time (no slips)."""
  steps, acc = [], terms[0]
  for t in terms[1:]:
    steps.append(f"{acc}+{t}={acc + t}.")
    acc += t
  return f"{CHECK_OPENING}: " + " ".join(steps) + " " + ANSWER_LINE.format(answer=acc)


def verify_solution(terms: Sequence[int], stated: int) -> str:
  """A check of a stated answer that reads it: count down from it, then repair by what is left.

    Let me check 55: 55-7=48. 48-8=40. ... 10-8=2. 55-2=53. Final Answer: ... 53. ...

  Each step subtracts the next term from the running remainder; a right answer leaves 0 and is
  restated, a wrong one leaves its error, which the last step takes off. The check cannot start
  without attempt 1's answer, and it changes that answer exactly when it is wrong (if its own
  steps are right): verify, locate, repair in one written procedure.
  """
  steps, left = [], stated
  for t in terms:
    steps.append(f"{left}-{t}={left - t}.")
    left -= t
  if left > 0:
    steps.append(f"{stated}-{left}={stated - left}.")
  elif left < 0:
    steps.append(f"{stated}+{-left}={stated - left}.")
  body = " ".join(steps)
  return f"{VERIFY_OPENING} {stated}: {body} " + ANSWER_LINE.format(answer=stated - left)


DRILL_QUESTION = "Practise sums."
DRILL_FACTS = 16


def drill(rng: random.Random) -> tuple[str, str]:
  """(question, answer) of a practice row: DRILL_FACTS one-step sums written as checks write
  them."""
  facts = []
  for _ in range(DRILL_FACTS):
    a = rng.randint(TERM_RANGE[0], TERM_RANGE[1] * (max(TERM_COUNTS) - 1))
    b = rng.randint(*TERM_RANGE)
    facts.append(f"{a}+{b}={a + b}.")
  return DRILL_QUESTION, " ".join(facts)


def noisy_answer(terms: Sequence[int], error_rate: float, rng: random.Random) -> int:
  """The sum as a fallible one-pass writer gives it: off by one or two w.p. `error_rate`."""
  total = sum(terms)
  if rng.random() < error_rate:
    return total + rng.choice((-2, -1, 1, 2))
  return total
