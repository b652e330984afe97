"""Multi-turn rollouts: exact cache continuation, log-prob parity, episode layout, no recompiles."""

import functools
import random

import jax
import numpy as np
import pytest

from score_jax.data import chat, prompts, tokenizer
from score_jax.generation import rollout, sampling
from score_jax.models import decoder, presets
from tests import numerics, streams
from tests.helpers import diverse_params

pytestmark = pytest.mark.numerics

QUESTIONS = ["What is 12+7?", "Solve 3x = 12 for x.", "Is 91 prime?", "2^5 = ?"]
CORPUS = (
  [
    f"Problem {i}: compute {i} + {i * 7} and {i} * {i + 3}. The final answer is {i * 8}."
    for i in range(300)
  ]
  + [prompts.correction_instruction("math_short")] * 20
  + QUESTIONS
)


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
  """A real SentencePiece tokenizer in Gemma's chat format + tiny-gemma2 + its sampler."""
  path = tokenizer.train_sentencepiece(
    CORPUS, str(tmp_path_factory.mktemp("spm") / "tok"), vocab_size=512
  )
  tok = tokenizer.SentencePieceTokenizer(path)
  config = presets.get_preset("tiny-gemma2", vocab_size=512)
  assert tok.vocab_size <= config.vocab_size
  template = chat.get_template("gemma")
  inputs = rollout.chat_inputs(
    tok, template, QUESTIONS, prompts.correction_instruction("math_short")
  )
  sampler = sampling.Sampler(config, prompt_buckets=(64,), append_buckets=(64,))
  return tok, config, diverse_params(config), sampler, inputs


def test_two_turn_continuation_and_logprobs_are_exact(gemma):
  tok, config, params, sampler, (prompt_ids, instr_ids, _) = gemma
  # Frequent extra stop ids so some rows stop early and leave holes inside the stream.
  stop_ids = (tok.eos_id, tok.id_of("<end_of_turn>"), *tok.encode(" the"), *tok.encode("1"))
  rc = rollout.RolloutConfig(2, 2, max_new_tokens=12, temperature=0.8, stop_ids=stop_ids)
  key = jax.random.key(7)

  # Turn by turn: the first turn-2 logits come from the continued cache (only the instruction
  # was prefilled) and must equal a fresh full forward over the whole stream.
  slots = rollout.extra_slots(sampler, rc, len(instr_ids))
  state = sampler.start(params, prompt_ids, samples_per_prompt=2, extra_slots=slots)
  state, _ = sampler.generate(params, state, rc.sampling_params(), key, turn=1)
  state = sampler.append(params, state, [instr_ids] * 8)
  a = jax.device_get(state.arrays)
  full, _ = decoder.forward(
    config, params, a["tokens_bs"], a["cache"]["positions"], a["cache"]["valid"]
  )
  last = int(a["cache"]["index"]) - 1
  full = np.asarray(full)
  slots = a["tokens_bs"].shape[1]
  logit_err = numerics.logit_bound(config, slots, np.abs(full[:, last]).max())
  numerics.assert_close(
    a["logits_bv"], full[:, last], logit_err, what="continued-cache turn-2 logits vs full forward"
  )

  # The episode API: same shapes (no new compilation), same key -> the same episode. Exact:
  # the same compiled functions on the same inputs repeat their float ops bit for bit.
  ep = rollout.run_episodes(sampler, params, prompt_ids, instr_ids, rc, key, decode=tok.decode)
  # One decode program per attempt position on CPU (each reads the slots it can reach).
  attempts = 2 if sampler.decode_layout else 1
  assert sampler.prefill_fn._cache_size() == 1 and sampler.decode_fn._cache_size() == attempts
  np.testing.assert_array_equal(ep.experience.tokens[:, : last + 1], a["tokens_bs"][:, : last + 1])

  # Sampler log-probs equal the training forward pass's, for both turns.
  want = streams.stream_logprobs(
    config, params, ep.experience.tokens, ep.experience.positions, ep.experience.valid, 0.8
  )
  logits, _ = decoder.forward(
    config, params, ep.experience.tokens, ep.experience.positions, ep.experience.valid
  )
  scale = np.abs(np.asarray(logits)[ep.experience.valid]).max()
  logit_err = numerics.logit_bound(config, slots, scale)
  logp_err = numerics.logprob_bound(logit_err, scale, config.vocab_size, 0.8)
  for turn in (1, 2):
    sel = ep.experience.turn == turn
    assert sel.sum() > 8
    numerics.assert_close(
      ep.experience.logp, want, logp_err, where=sel, what=f"turn-{turn} sampler log-probs"
    )

  # Layout: both early stops (holes) and truncations occurred; the stop id ends its attempt.
  assert ep.truncated.any() and not ep.truncated.all()
  for r in range(8):
    for a_idx in range(2):
      toks = ep.attempt_tokens[r][a_idx]
      in_stream = ep.experience.tokens[r][ep.experience.turn[r] == a_idx + 1].tolist()
      assert toks == in_stream and len(toks) == ep.lengths[r, a_idx]
      assert ep.truncated[r, a_idx] == (toks[-1] not in stop_ids or len(toks) == 0)
      body = toks if ep.truncated[r, a_idx] else toks[:-1]
      assert ep.texts[r][a_idx] == tok.decode(body)
    # Prompt, attempt 1, instruction (verbatim ids), attempt 2, in slot order; 0 = ours.
    real = ep.experience.tokens[r][ep.experience.valid[r]].tolist()
    turns = ep.experience.turn[r][ep.experience.valid[r]].tolist()
    prompt = prompt_ids[ep.prompt_index[r]]
    y1, y2 = ep.attempt_tokens[r]
    assert real == prompt + y1 + instr_ids + y2
    assert turns == [0] * len(prompt) + [1] * len(y1) + [0] * len(instr_ids) + [2] * len(y2)
    assert ep.experience.positions[r][ep.experience.valid[r]].tolist() == list(range(len(real)))
  # Integer layout: exact.
  np.testing.assert_array_equal(ep.prompt_index, np.repeat(np.arange(4), 2))
  np.testing.assert_array_equal(
    ep.experience.loss_mask, ep.experience.valid & (ep.experience.turn > 0)
  )
  assert (ep.experience.logp[~ep.experience.loss_mask] == 0).all()


@pytest.mark.slow
def test_ten_attempts_greedy(gemma):
  tok, config, params, _, (prompt_ids, instr_ids, stop_ids) = gemma
  sampler = sampling.Sampler(config, prompt_buckets=(64,), append_buckets=(64,))
  rc = rollout.RolloutConfig(10, 1, max_new_tokens=3, temperature=0.0, stop_ids=stop_ids)
  ep = rollout.run_episodes(sampler, params, prompt_ids[:2], instr_ids, rc, jax.random.key(0))
  assert ep.lengths.shape == (2, 10) and (ep.experience.turn.max(axis=1) == 10).all()
  want = streams.stream_logprobs(
    config, params, ep.experience.tokens, ep.experience.positions, ep.experience.valid, 0.0
  )
  # Greedy attempt a+1 after attempt a: each generated token is the argmax given the stream
  # before it, as a full uncached forward computes it (up to a rounding near tie).
  full, _ = decoder.forward(
    config, params, ep.experience.tokens, ep.experience.positions, ep.experience.valid
  )
  full = np.asarray(full)
  scale = np.abs(full[ep.experience.valid]).max()
  logit_err = numerics.logit_bound(config, ep.experience.tokens.shape[1], scale)
  logp_err = numerics.logprob_bound(logit_err, scale, config.vocab_size)
  numerics.assert_close(
    ep.experience.logp, want, logp_err, where=ep.experience.loss_mask, what="greedy log-probs"
  )
  for r in range(2):
    idx = np.flatnonzero(ep.experience.loss_mask[r])
    prev = [np.flatnonzero(ep.experience.valid[r][:j])[-1] for j in idx]
    numerics.assert_argmax_matches(
      ep.experience.tokens[r, idx],
      full[r, prev],
      logit_err,
      what=f"row {r} greedy tokens vs full argmax",
    )


def test_fifty_rollouts_compile_each_function_once():
  config = presets.get_preset("tiny-llama")
  params = decoder.init_params(config, jax.random.key(0))
  sampler = sampling.Sampler(config, prompt_buckets=(32,), append_buckets=(16,))
  rng = random.Random(0)
  for i in range(50):
    prompts_ = [[rng.randrange(1, 320) for _ in range(rng.randrange(1, 33))] for _ in range(2)]
    instr = [rng.randrange(1, 320) for _ in range(rng.randrange(1, 17))]
    rc = rollout.RolloutConfig(
      2,
      2,
      max_new_tokens=rng.randrange(1, 9),
      temperature=rng.choice([0.0, 0.7, 1.0]),
      top_k=rng.choice([0, 5]),
      top_p=rng.choice([1.0, 0.9]),
      stop_ids=(rng.randrange(1, 320),),
    )
    ep = rollout.run_episodes(
      sampler, params, prompts_, instr, rc, jax.random.key(i), reserve_instruction_len=16
    )
    assert (ep.lengths <= rc.max_new_tokens).all()
  sizes = {name: fn._cache_size() for name, fn in sampler.jitted_functions().items()}
  # The decode layout (CPU) compiles one decode per attempt position, whatever the sampling.
  assert sizes == {"prefill": 1, "append": 1, "decode": 2 if sampler.decode_layout else 1}


def test_rollout_input_errors(gemma):
  _, config, params, _, (prompt_ids, instr_ids, stop_ids) = gemma
  sampler = sampling.Sampler(config, prompt_buckets=(64,), append_buckets=(64,))
  rc = rollout.RolloutConfig(2, 1, max_new_tokens=4, stop_ids=stop_ids)
  run = functools.partial(rollout.run_episodes, sampler, params)
  with pytest.raises(ValueError, match="instructions are empty"):
    run(prompt_ids, [], rc, jax.random.key(0))
  with pytest.raises(ValueError, match=r"instructions\[1\] is empty"):
    run(prompt_ids, [instr_ids, [], instr_ids, instr_ids], rc, jax.random.key(0))
  with pytest.raises(ValueError, match="one per prompt"):
    run(prompt_ids, [instr_ids] * 3, rc, jax.random.key(0))
  with pytest.raises(ValueError, match="num_attempts must be >= 1"):
    run(prompt_ids, instr_ids, rollout.RolloutConfig(0), jax.random.key(0))
  with pytest.raises(ValueError, match="instruction length 70 exceeds"):
    run(prompt_ids, [5] * 70, rc, jax.random.key(0))
  # Nothing compiled for any of these: the checks run first.
  assert all(fn._cache_size() == 0 for fn in sampler.jitted_functions().values())
