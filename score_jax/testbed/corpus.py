"""Pretraining transcripts for the testbed's base model, and their token streams.

A transcript is what a base model would have read: a problem, a first attempt written by a
fallible solver (its one-pass sum is off by one or two w.p. `first_error_rate`), and, in most
transcripts, the paper's correction instruction followed by a second attempt that behaves as a
real base model's does before any self-correction training:
  * copy (`copy`): the first attempt again, mistakes included;
  * re-solve (`resolve`): a fresh one-pass answer with its own slips, so a right first attempt is
    sometimes broken and a wrong one sometimes fixed, at random;
  * check (`check`): the careful second attempt that redoes the sum in steps (arith.check_solution).
A share `first_check` of first attempts are themselves written in steps (the careful solver a
corpus also holds); their second attempt restates the answer, since the work is already checked.
This gives the first attempt the accurate path too, so RL can choose between improving attempt 1
and correcting in attempt 2, the choice the paper's naive multi-turn RL gets wrong.
A share `drill` of transcripts are practice rows of one-step sums ("29+8=37. 13+5=18. ..."): the
written steps a check is made of, practised the way a base model's corpus practises any skill.
Nothing in a transcript tells the model WHEN to check: a check follows right and wrong first
attempts alike. Greedy decoding of such a model copies (Delta ~ 0); the check is a behaviour RL
can find in its samples and make conditional or habitual.

Streams are laid out exactly as the RL episodes are: chat prompt, attempt 1
+ end-of-turn, `next_turn(instruction)`, attempt 2 + end-of-turn. Loss on the attempts only.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

import numpy as np

from score_jax.data import records
from score_jax.testbed import arith

# The Mixture fields that are fractions (config validation checks the same list).
FRACTIONS = (
  "first_error_rate",
  "drill",
  "single_attempt",
  "first_check",
  "copy",
  "resolve",
  "check",
  "verify",
  "first_verify",
)
SECOND_ATTEMPT_KINDS = ("copy", "resolve", "check", "verify")


@dataclasses.dataclass(frozen=True)
class Mixture:
  """How pretraining transcripts are written (fractions of two-attempt transcripts).

  The second-attempt shares are the testbed's measured base (BUILD_NOTES.md, designs 28-34).
  `first_check` (design 31) and `fast_form` keep defaults under which the tokenizer's training
  text is written (no first checks, "expression"); experiments/testbed.py sets 0.2 and "answer".
  """

  first_error_rate: float = 0.2  # one-pass answers of the first-attempt writer that are off
  drill: float = 0.0  # transcripts replaced by a practice row of one-step sums (arith.drill)
  single_attempt: float = 0.1  # transcripts that stop after attempt 1
  first_check: float = 0.0  # first attempts written in steps (arith.check_solution)
  copy: float = 0.45  # second attempts: copy attempt 1
  resolve: float = 0.15  # second attempts: a fresh one-pass answer (slips at first_error_rate)
  check: float = 0.4  # second attempts: redo the sum in written steps
  # second attempts: check attempt 1's answer by counting down from it, repair by what is left
  # (arith.verify_solution; testbed v2). Drawn after the others, so 0 leaves v1 unchanged.
  verify: float = 0.0
  # first attempts that state a one-pass answer, then verify it themselves (testbed v2): the
  # accurate path within one attempt; their second attempt restates the checked answer.
  first_verify: float = 0.0
  fast_form: str = "expression"  # how one-pass answers are written (arith.FAST_FORMS)

  def __post_init__(self):
    if self.fast_form not in arith.FAST_FORMS:
      raise ValueError(
        f"Mixture.fast_form = {self.fast_form!r}: expected one of {arith.FAST_FORMS}"
      )
    total = sum(getattr(self, k) for k in SECOND_ATTEMPT_KINDS)
    if abs(total - 1.0) > 1e-6:
      raise ValueError(f"Mixture: copy + resolve + check + verify must be 1, got {total}")
    for f in FRACTIONS:
      v = getattr(self, f)
      if not 0.0 <= v <= 1.0:
        raise ValueError(f"Mixture.{f} = {v}: expected a fraction in [0, 1]")


def transcript(
  example: records.Example, mix: Mixture, rng: random.Random
) -> tuple[str, str, str | None]:
  """(question, attempt 1, attempt 2 or None): for `example`, or a drill in its place."""
  terms = arith.terms_of(example)
  if rng.random() < mix.drill:
    return (*arith.drill(rng), None)
  answer = arith.noisy_answer(terms, mix.first_error_rate, rng)
  first = arith.fast_solution(terms, answer, mix.fast_form)
  # Drawn only when set, so that a mixture without it writes the same transcripts as before.
  if mix.first_check and rng.random() < mix.first_check:
    return _checked_first(example, arith.check_solution(terms), sum(terms), mix, rng)
  if mix.first_verify and rng.random() < mix.first_verify:
    first = arith.verify_solution(terms, answer)
    return _checked_first(example, first, sum(terms), mix, rng)
  if rng.random() < mix.single_attempt:
    return example.question, first, None
  # The kind of second attempt is drawn without looking at attempt 1: nothing here ties a wrong
  # first attempt to a changed answer more often than a right one.
  u = rng.random()
  if u < mix.copy:
    second = first
  elif u < mix.copy + mix.resolve:
    resolved = arith.noisy_answer(terms, mix.first_error_rate, rng)
    second = arith.fast_solution(terms, resolved, mix.fast_form)
  elif u < mix.copy + mix.resolve + mix.check:
    second = arith.check_solution(terms)
  else:
    second = arith.verify_solution(terms, answer)
  return example.question, first, second


def _checked_first(example, first: str, total: int, mix: Mixture, rng: random.Random):
  """A first attempt that did its own written work: the second restates its answer, not redo."""
  if rng.random() < mix.single_attempt:
    return example.question, first, None
  return example.question, first, arith.fast_solution(arith.terms_of(example), total, mix.fast_form)


def tokenizer_texts(
  examples: Sequence[records.Example],
  template,
  instruction: str,
  seed: int = 0,
  with_verify: bool = False,
) -> list[str]:
  """Text to train the SentencePiece on: whole chat transcripts, each with both styles.

  `with_verify` (testbed v2) adds a transcript whose second attempt verifies the first
  (arith.verify_solution), so the countdown's pieces are in the vocabulary; without it the text
  is v1's, token for token.
  """
  rng = random.Random(seed)
  texts = []
  for ex in examples:
    _, first, _ = transcript(ex, Mixture(single_attempt=0.0), rng)
    terms = arith.terms_of(ex)
    seconds = [arith.check_solution(terms)]
    if with_verify:
      seconds.append(arith.verify_solution(terms, sum(terms) + rng.choice((-2, -1, 0, 1, 2))))
    for second in seconds:
      texts.append(
        template.first_turn(ex.question)
        + first
        + template.end_of_turn
        + template.next_turn(instruction)
        + second
        + template.end_of_turn
      )
  return texts


def encode_streams(
  examples: Sequence[records.Example],
  tok,
  template,
  instruction_ids: Sequence[int],
  mix: Mixture,
  seed: int,
  length: int,
) -> dict[str, np.ndarray]:
  """SFT streams [n, length]: tokens, positions, valid, loss_mask (attempt tokens + stops).

  Raises ValueError naming the problem if a transcript does not fit `length` slots.
  """
  rng = random.Random(seed)
  eot = tok.id_of(template.end_of_turn)
  n = len(examples)
  tokens = np.zeros((n, length), np.int32)
  mask = np.zeros((n, length), bool)
  valid = np.zeros((n, length), bool)
  for i, ex in enumerate(examples):
    question, first, second = transcript(ex, mix, rng)
    ids = list(template.first_turn_ids(tok, question))
    target = [False] * len(ids)
    for k, attempt in enumerate((first, second)):
      if attempt is None:
        break
      if k:
        ids += instruction_ids
        target += [False] * len(instruction_ids)
      a = tok.encode(attempt) + [eot]
      ids += a
      target += [True] * len(a)
    if len(ids) > length:
      raise ValueError(f"testbed transcript of {ex.id} is {len(ids)} tokens > {length} slots")
    tokens[i, : len(ids)] = ids
    mask[i, : len(ids)] = target
    valid[i, : len(ids)] = True
  positions = np.broadcast_to(np.arange(length, dtype=np.int32), (n, length)).copy()
  return {"tokens": tokens, "positions": positions, "valid": valid, "loss_mask": mask}
