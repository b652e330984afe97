"""K-attempt self-correction episodes on ONE continuing KV cache, returned as training streams.

`run_episodes` prefills each unique prompt once, repeats its cache for n samples, samples attempt
1, appends the tokenized correction instruction (chat format, `ChatTemplate.next_turn`) onto the
same cache (only the instruction is prefilled; positions continue per row after the row's last
real token, the sampled stop id included), samples attempt 2, and so on for K attempts. Nothing
is decoded and re-encoded between turns; the whole episode is dispatched without a host sync.

The result is one token stream per episode in cache-slot order: `[prompt][y1][instr][y2]...` with
holes (left padding, slots after a row's early stop, instruction padding) marked invalid. Feeding
(tokens, positions, valid) to the decoder without a cache reproduces the sampler's attention, so
`stream_logprobs` recomputes the sampler's log-probs exactly; that is what the trainer uses.

Shape letters: b episodes, s stream slots (= cache slots), a attempts, v vocab.
"""

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from score_jax.generation import sampling
from score_jax.models import decoder
from score_jax.models.config import ModelConfig

PyTree = dict
STREAM_FIELDS = ("tokens", "positions", "valid", "turn", "loss_mask", "logp")


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  """How episodes are sampled (paper defaults: K=2 attempts, temperature 1.0)."""

  num_attempts: int = 2  # K attempts per episode (SCoRe: 2; inference-time scaling: up to 10)
  samples_per_prompt: int = 1  # n episodes per prompt (RLOO needs n >= 2), sharing one prefill
  max_new_tokens: int = 256  # per attempt; rounded up to a generation bucket for shapes
  temperature: float = 1.0  # 0 = greedy
  top_k: int = 0  # 0 = off
  top_p: float = 1.0  # 1.0 = off
  stop_ids: tuple[int, ...] = ()  # ids that end an attempt (EOS, end-of-turn); kept in y_a

  def sampling_params(self) -> sampling.SamplingParams:
    return sampling.SamplingParams(
      self.max_new_tokens, self.temperature, self.top_k, self.top_p, tuple(self.stop_ids)
    )


@dataclasses.dataclass
class Episodes:
  """Host arrays of b episodes; stream arrays are [b, s] in cache-slot order."""

  tokens: np.ndarray  # int32 ids as sampled / as prompted; 0 in holes
  positions: np.ndarray  # int32 RoPE positions (meaningful where valid)
  valid: np.ndarray  # bool: slot holds a real token
  turn: np.ndarray  # int32: 0 = prompt/instruction/hole, a = attempt a (1..K)
  loss_mask: np.ndarray  # bool: valid & turn > 0 (sampled tokens, stop ids included)
  logp: np.ndarray  # float32 sampler log-probs at the sampling temperature; 0 elsewhere
  prompt_index: np.ndarray  # [b] which prompt each episode answers (prompt-major order)
  attempt_tokens: list[list[list[int]]]  # [b][a] sampled ids, stop id included
  texts: list[list[str]] | None  # [b][a] decoded attempts WITHOUT the final stop id
  truncated: np.ndarray  # [b, a] bool: attempt hit max_new_tokens without a stop id
  lengths: np.ndarray  # [b, a] int32 sampled tokens per attempt (stop id included)


def chat_inputs(
  tokenizer, template, questions: Sequence[str], instruction: str, system: str | None = None
) -> tuple[list[list[int]], list[int], tuple[int, ...]]:
  """(prompt ids per question, instruction ids, stop ids) in `template`'s chat format.

  The instruction ids are `template.next_turn_ids`: they follow an attempt whose stop id (end of
  turn) was already sampled, so the stream never holds a re-encoded attempt.
  """
  template.check_tokenizer(tokenizer)
  prompts = [template.first_turn_ids(tokenizer, q, system) for q in questions]
  return prompts, template.next_turn_ids(tokenizer, instruction), template.stop_ids(tokenizer)


def extra_slots(sampler: sampling.Sampler, rc: RolloutConfig, max_instruction_len: int) -> int:
  """Cache slots needed after the prompt bucket: K generation buckets + (K-1) instructions."""
  g = sampling._bucket(rc.max_new_tokens, sampler.gen_buckets, "max_new_tokens")
  if rc.num_attempts == 1:
    return g
  i = sampling._bucket(max_instruction_len, sampler.append_buckets, "instruction")
  return rc.num_attempts * g + (rc.num_attempts - 1) * i


def run_episodes(
  sampler: sampling.Sampler,
  params: PyTree,
  prompts: Sequence[Sequence[int]],
  instructions: Sequence[int] | Sequence[Sequence[int]],
  rc: RolloutConfig,
  rng: jax.Array,
  *,
  decode: Callable[[Sequence[int]], str] | None = None,
  reserve_instruction_len: int | None = None,
  row_offset: int = 0,
  first_attempt: int = 1,
) -> Episodes:
  """Samples `rc.num_attempts` attempts for each of `rc.samples_per_prompt` copies of each prompt.

  Args:
    sampler: the jitted sampler (its buckets fix the shapes).
    params: decoder parameters (sharded like `sampler.mesh` if it has one).
    prompts: unique prompt token ids (e.g. from `chat_inputs`).
    instructions: correction-instruction ids appended between attempts (e.g. from
      `chat_inputs`): one list for all prompts, or one list per prompt.
    rc: sampling settings.
    rng: PRNG key; attempt a uses turn a folded into each row's key.
    decode: tokenizer.decode, to fill `texts` (None leaves texts None).
    reserve_instruction_len: instruction length the cache is sized for (default: the longest
      here); pass a fixed value so the cache length never varies between calls.
    row_offset: RNG id of the first row; pass the row's index in the GLOBAL batch so samples do
      not depend on how the batch is split over processes.
    first_attempt: the attempt number the prompts continue from: 2 continues prompts that
      already hold attempt 1 and its instruction (offline first attempts).

  Returns:
    Episodes in prompt-major order (episode i answers prompt i // n).
  """
  if rc.num_attempts < 1:
    raise ValueError(f"RolloutConfig.num_attempts must be >= 1, got {rc.num_attempts}.")
  if not 1 <= first_attempt <= rc.num_attempts:
    raise ValueError(f"first_attempt={first_attempt} must be in 1..{rc.num_attempts}.")
  sp = rc.sampling_params()
  sampling.validate_sampling(sp, sampler.config.vocab_size, sampler.gen_buckets)
  remaining = rc.num_attempts - first_attempt + 1
  if remaining > 1:
    if len(instructions) == 0:
      raise ValueError("instructions are empty: num_attempts > 1 needs correction-instruction ids.")
    if isinstance(instructions[0], (int, np.integer)):
      instructions = [list(instructions)] * len(prompts)
    if len(instructions) != len(prompts):
      raise ValueError(
        f"instructions: need one list for all prompts or one per prompt ({len(prompts)}), "
        f"got {len(instructions)}."
      )
    sampling._validate_rows(instructions, sampler.config.vocab_size, "instructions")
  else:
    instructions = [[0]]
  n = rc.samples_per_prompt
  longest = max(len(x) for x in instructions)
  reserve = longest if reserve_instruction_len is None else reserve_instruction_len
  if reserve < longest:
    raise ValueError(f"reserve_instruction_len={reserve} < longest instruction ({longest}).")
  slots = extra_slots(sampler, dataclasses.replace(rc, num_attempts=remaining), reserve)
  row_ids = row_offset + np.arange(len(prompts) * n)
  state = sampler.start(params, prompts, samples_per_prompt=n, extra_slots=slots, row_ids=row_ids)
  rows = [instructions[i] for i in state.prompt_index] if remaining > 1 else []
  outs = []
  for attempt in range(first_attempt, rc.num_attempts + 1):
    if attempt > first_attempt:
      state = sampler.append(params, state, rows)
    state, out = sampler.generate(params, state, sp, rng, turn=attempt)
    outs.append(out)
  arrays, outs = jax.device_get((state.arrays, outs))
  return _to_episodes(arrays, outs, state.prompt_index, decode)


def _to_episodes(arrays, outs, prompt_index, decode) -> Episodes:
  cache = arrays["cache"]
  valid = np.asarray(cache["valid"])
  turn = np.where(valid, arrays["turn_bs"], 0).astype(np.int32)
  lengths = np.stack([o["length_b"] for o in outs], axis=1).astype(np.int32)
  attempt_tokens = [
    [o["tokens_bg"][r, : o["length_b"][r]].tolist() for o in outs] for r in range(len(valid))
  ]
  stop = sampling.StopReason.STOP_ID
  texts = None
  if decode is not None:
    texts = [
      [decode(toks[:-1] if o["stop_reason_b"][r] == stop else toks) for toks, o in zip(row, outs)]
      for r, row in enumerate(attempt_tokens)
    ]
  return Episodes(
    tokens=np.where(valid, arrays["tokens_bs"], 0).astype(np.int32),
    positions=np.asarray(cache["positions"], np.int32),
    valid=valid,
    turn=turn,
    loss_mask=valid & (turn > 0),
    logp=np.where(valid & (turn > 0), arrays["logp_bs"], 0.0).astype(np.float32),
    prompt_index=prompt_index,
    attempt_tokens=attempt_tokens,
    texts=texts,
    truncated=np.stack([o["stop_reason_b"] != stop for o in outs], axis=1),
    lengths=lengths,
  )


def stream_logprobs(
  config: ModelConfig,
  params: PyTree,
  tokens_bs: jax.Array,
  positions_bs: jax.Array,
  valid_bs: jax.Array,
  temperature: float,
) -> jax.Array:
  """log_softmax(logits / T) of each slot's token given the stream before it (T=0 -> T=1).

  One forward pass without a cache over the stream; the token in slot j is scored with the
  logits of the row's previous VALID slot (holes are skipped). Slots with no valid predecessor
  (the first prompt token) and invalid slots get 0. Returns float32 [b, s].
  """
  valid_bs = jnp.asarray(valid_bs, bool)
  logits_bsv, _ = decoder.forward(config, params, tokens_bs, positions_bs, valid_bs)
  t = jnp.where(jnp.asarray(temperature) > 0, temperature, 1.0)
  logp_bsv = jax.nn.log_softmax(logits_bsv.astype(jnp.float32) / t, axis=-1)
  s = valid_bs.shape[1]
  slot_s = jnp.arange(s)
  # Next valid slot after i (s if none): the token that slot i's logits predict.
  nxt_bs = jax.lax.cummin(jnp.where(valid_bs, slot_s, s)[:, ::-1], axis=1)[:, ::-1]
  nxt_bs = jnp.concatenate([nxt_bs[:, 1:], jnp.full_like(nxt_bs[:, :1], s)], axis=1)
  next_tok_bs = jnp.take_along_axis(tokens_bs, jnp.minimum(nxt_bs, s - 1), axis=1)
  score_bs = jnp.take_along_axis(logp_bsv, next_tok_bs[..., None], axis=-1)[..., 0]
  # Previous valid slot before j: whose score belongs to slot j.
  prev_bs = jax.lax.cummax(jnp.where(valid_bs, slot_s, -1), axis=1)
  prev_bs = jnp.concatenate([jnp.full_like(prev_bs[:, :1], -1), prev_bs[:, :-1]], axis=1)
  out_bs = jnp.take_along_axis(score_bs, jnp.maximum(prev_bs, 0), axis=1)
  return jnp.where(valid_bs & (prev_bs >= 0), out_bs, 0.0)


def compact_streams(ep: Episodes, multiple: int) -> Episodes:
  """`ep` with the holes of every stream dropped (`compact_stream_arrays`)."""
  return dataclasses.replace(
    ep, **compact_stream_arrays({f: getattr(ep, f) for f in STREAM_FIELDS}, multiple)
  )


def compact_stream_arrays(streams: dict[str, np.ndarray], multiple: int) -> dict[str, np.ndarray]:
  """Drops the holes of STREAM_FIELDS arrays [b, s], so the update pays only for real tokens.

  A stream in cache-slot order reserves a whole generation bucket per attempt, so a short first
  attempt leaves most of its bucket as holes. Valid slots move left in their order, keeping their
  token, position, turn and log-prob; `rollout.stream_logprobs` skips holes and attention follows
  positions and the valid bit, so the update is the same. Streams are padded with holes to a
  multiple of `multiple` slots (few distinct lengths, few compiles) and never grow. Other keys
  (rewards, normalizer) pass through.
  """
  if multiple < 1:
    raise ValueError(f"compact_streams: multiple must be >= 1, got {multiple}")
  valid = streams["valid"]
  order_bs = np.argsort(~valid, axis=1, kind="stable")  # valid slots first, in slot order
  longest = int(valid.sum(axis=1).max(initial=0))
  length = min(valid.shape[1], max(1, -(-longest // multiple)) * multiple)
  take = lambda x: np.take_along_axis(x, order_bs, axis=1)[:, :length]
  return {**streams, **{f: take(streams[f]) for f in STREAM_FIELDS}}


def pad_streams(ep: Episodes, length: int) -> Episodes:
  """Appends holes (invalid slots) so every stream array is [b, length]."""
  s = ep.tokens.shape[1]
  if length < s:
    raise ValueError(f"pad_streams: cannot shrink streams of {s} slots to {length}")
  pad = lambda x: np.pad(x, ((0, 0), (0, length - s)))
  return dataclasses.replace(ep, **{f: pad(getattr(ep, f)) for f in STREAM_FIELDS})


def concat_episodes(parts: Sequence[Episodes]) -> Episodes:
  """Rows of several Episodes (streams padded to the longest); prompt indices renumbered."""
  length = max(p.tokens.shape[1] for p in parts)
  parts = [pad_streams(p, length) for p in parts]
  offsets = np.cumsum([0] + [int(p.prompt_index.max()) + 1 for p in parts[:-1]])
  cat = lambda f: np.concatenate([getattr(p, f) for p in parts])
  return Episodes(
    **{f: cat(f) for f in (*STREAM_FIELDS, "truncated", "lengths")},
    prompt_index=np.concatenate([p.prompt_index + o for p, o in zip(parts, offsets)]),
    attempt_tokens=[row for p in parts for row in p.attempt_tokens],
    texts=[row for p in parts for row in p.texts],
  )


def offline_prompt_count(num_prompts: int, g: int, shards: int, ratio: float) -> int:
  """Prompts (of `num_prompts`) whose first attempt comes from the base model.

  The largest count <= round(ratio * num_prompts) that leaves both the offline and the online
  episode counts divisible by the sampler's batch shards.
  """
  for k in range(int(round(ratio * num_prompts)), 0, -1):
    if (k * g) % shards == 0 and ((num_prompts - k) * g) % shards == 0:
      return k
  return 0
