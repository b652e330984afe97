"""Pretraining transcripts: the mixture of second attempts and the token streams."""

import hashlib
import random

import numpy as np
import pytest

from score_jax.data import chat, prompts
from score_jax.data import tokenizer as tokenizer_lib
from score_jax.testbed import arith, corpus


def test_mixture_fractions_are_validated():
  with pytest.raises(ValueError, match="copy \\+ resolve \\+ check \\+ verify must be 1"):
    corpus.Mixture(copy=0.5, resolve=0.3, check=0.1)
  with pytest.raises(ValueError, match="first_error_rate"):
    corpus.Mixture(first_error_rate=1.5)
  with pytest.raises(ValueError, match="fast_form"):
    corpus.Mixture(fast_form="essay")


def test_answer_only_one_pass_answers_in_both_attempts():
  mix = corpus.Mixture(single_attempt=0.0, copy=0.0, resolve=1.0, check=0.0, fast_form="answer")
  rng = random.Random(0)
  for ex in arith.load_split("train", 50):
    _, first, second = corpus.transcript(ex, mix, rng)
    assert first.startswith("Final Answer: The final answer is ")
    assert second.startswith("Final Answer: The final answer is ")


def test_second_attempts_follow_the_mixture():
  mix = corpus.Mixture(first_error_rate=0.2, single_attempt=0.0, copy=0.5, resolve=0.3, check=0.2)
  rng = random.Random(0)
  kinds = {"copy": 0, "check": 0, "other": 0}
  for ex in arith.load_split("train", 3000):
    _, first, second = corpus.transcript(ex, mix, rng)
    if second.startswith(arith.CHECK_OPENING):
      kinds["check"] += 1
      assert second.endswith(f"The final answer is {ex.answer}. I hope it is correct.")
    elif second == first:
      kinds["copy"] += 1
    else:
      kinds["other"] += 1
  # Re-solves equal to attempt 1 count as copies: resolve * P(both slip-free or equal).
  assert abs(kinds["check"] / 3000 - 0.2) < 0.03
  assert kinds["copy"] / 3000 > 0.5
  assert kinds["other"] > 0


def test_first_attempts_in_steps_are_restated_not_redone():
  mix = corpus.Mixture(single_attempt=0.0, first_check=0.3, fast_form="answer")
  rng = random.Random(0)
  in_steps = 0
  for ex in arith.load_split("train", 2000):
    _, first, second = corpus.transcript(ex, mix, rng)
    if first.startswith(arith.CHECK_OPENING):
      in_steps += 1
      assert first == arith.check_solution(arith.terms_of(ex))
      assert second == arith.ANSWER_LINE.format(answer=ex.answer)
    else:
      assert first.startswith("Final Answer: The final answer is ")
  assert abs(in_steps / 2000 - 0.3) < 0.03


def test_a_mixture_without_first_checks_draws_the_transcripts_it_always_did(monkeypatch):
  # first_check = 0 must not consume random draws, so the measured designs' corpora are the ones
  # written before the field existed (hash of that code's first 300 transcripts of 9 terms).
  monkeypatch.setitem(arith.FAMILIES, "sum10", arith.Family("sum10", (9,)))
  exs = arith.load_split("train", 300)
  rng = random.Random(0)
  written = [corpus.transcript(e, corpus.Mixture(fast_form="answer"), rng) for e in exs]
  assert hashlib.sha256(repr(written).encode()).hexdigest()[:16] == "c895e145f5189fc1"


def test_streams_mark_only_attempt_tokens(tmp_path):
  examples = arith.load_split("train", 200)
  template = chat.get_template("gemma")
  instruction = prompts.correction_instruction("math_short")
  texts = corpus.tokenizer_texts(examples, template, instruction)
  tok = tokenizer_lib.load_tokenizer(
    tokenizer_lib.train_sentencepiece(texts, str(tmp_path / "spm"), 400, split_by_whitespace=False)
  )
  instr_ids = template.next_turn_ids(tok, instruction)
  mix = corpus.Mixture(single_attempt=0.0, copy=1.0, resolve=0.0, check=0.0)
  s = corpus.encode_streams(examples[:8], tok, template, instr_ids, mix, seed=0, length=256)
  eot = tok.id_of(template.end_of_turn)
  for i, ex in enumerate(examples[:8]):
    valid = s["valid"][i]
    ids = s["tokens"][i][valid].tolist()
    prompt = template.first_turn_ids(tok, ex.question)
    assert ids[: len(prompt)] == prompt
    targets = s["tokens"][i][s["loss_mask"][i]].tolist()
    assert targets.count(eot) == 2  # both attempts end with the end-of-turn they must learn
    first = tok.decode(targets[: targets.index(eot)])
    assert first.startswith(ex.question.removeprefix("What is ").removesuffix("?") + "=")
    assert not s["loss_mask"][i][: len(prompt)].any()
    assert np.array_equal(s["positions"][i], np.arange(256))
  with pytest.raises(ValueError, match="testbed transcript of testbed/train/0 is"):
    corpus.encode_streams(examples[:1], tok, template, instr_ids, mix, seed=0, length=20)


def test_drills_replace_a_share_of_transcripts_with_practice_rows():
  mix = corpus.Mixture(drill=0.3)
  rng = random.Random(1)
  drills = 0
  for ex in arith.load_split("train", 2000):
    question, first, second = corpus.transcript(ex, mix, rng)
    if question != ex.question:
      drills += 1
      assert question == arith.DRILL_QUESTION and second is None
      assert len(first.split(" ")) == arith.DRILL_FACTS
  assert abs(drills / 2000 - 0.3) < 0.03


def test_v2_the_kind_of_second_attempt_does_not_depend_on_attempt_1():
  """No transcript kind follows a wrong first attempt more often than a right one: the corpus
  teaches how to verify, never when (the decision RL has to learn)."""
  mix = corpus.Mixture(
    first_error_rate=0.4,
    single_attempt=0.0,
    copy=0.5,
    resolve=0.2,
    check=0.0,
    verify=0.3,
    fast_form="answer",
  )
  rng = random.Random(0)
  verify_after = {True: [], False: []}
  for ex in arith.load_split("train", 4000, "sum10to12"):
    _, first, second = corpus.transcript(ex, mix, rng)
    right = first == arith.ANSWER_LINE.format(answer=ex.answer)
    is_verify = second.startswith(arith.VERIFY_OPENING)
    verify_after[right].append(is_verify)
    if is_verify:  # the check reads attempt 1's answer and ends at the right one
      stated = first.split("is ")[1].split(".")[0]
      assert second == arith.verify_solution(arith.terms_of(ex), int(stated))
      assert second.endswith(f"The final answer is {ex.answer}. I hope it is correct.")
  rates = {k: np.mean(v) for k, v in verify_after.items()}
  assert abs(rates[True] - 0.3) < 0.03 and abs(rates[False] - 0.3) < 0.03, rates


def test_v2_first_attempts_that_verify_themselves_are_restated():
  mix = corpus.Mixture(single_attempt=0.0, first_verify=0.5, copy=1.0, resolve=0.0, check=0.0)
  rng = random.Random(0)
  seen = 0
  for ex in arith.load_split("train", 400, "sum10to12"):
    _, first, second = corpus.transcript(ex, mix, rng)
    if first.startswith(arith.VERIFY_OPENING):
      seen += 1
      assert first.endswith(f"The final answer is {ex.answer}. I hope it is correct.")
      assert second.endswith(f"The final answer is {ex.answer}. I hope it is correct.")
  assert 150 < seen < 250
