"""K-attempt self-correction episodes on ONE continuing KV cache, returned as training streams.

`run_episodes` prefills each unique prompt once, repeats its cache for n samples, samples attempt
1, appends the tokenized correction instruction (chat format, `ChatTemplate.next_turn`) onto the
same cache (only the instruction is prefilled; positions continue per row after the row's last
real token, the sampled stop id included), samples attempt 2, and so on for K attempts. Nothing
is decoded and re-encoded between turns.

An attempt cut at max_new_tokens has no sampled end-of-turn, but the instruction ids assume one;
with `RolloutConfig.close_ids` set, such a row gets the close ids (unsampled, turn 0) right
before its instruction, so the stream is the chat template's rendering of the conversation.
Choosing them needs each attempt's stop reasons on the host: one [b] int32 transfer per turn
boundary. Without close ids the whole episode is dispatched without a host sync.

The result is one token stream per episode in cache-slot order: `[prompt][y1][instr][y2]...`
(`[y1][close][instr]` after a cut y1) with holes (left padding, slots after a row's early stop,
instruction padding) marked invalid. Feeding (tokens, positions, valid) to the decoder without a
cache reproduces the sampler's attention, so the update steps (rl.scoring) recompute the
sampler's log-probs exactly from the stream. The streams come back as an
`rl.experience.Experience`, the type every update step takes.

Shape letters: b episodes, s stream slots (= cache slots), a attempts, v vocab.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Protocol

import jax
import numpy as np

from score_jax.generation import sampling
from score_jax.rl import experience as experience_lib
from score_jax.rl.experience import Experience

PyTree = dict


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
  # Ids that close a model turn (`ChatTemplate.close_turn_ids`), written before the next
  # instruction after an attempt cut at max_new_tokens; () appends the instruction as is.
  close_ids: tuple[int, ...] = ()

  def sampling_params(self) -> sampling.SamplingParams:
    return sampling.SamplingParams(
      self.max_new_tokens, self.temperature, self.top_k, self.top_p, tuple(self.stop_ids)
    )


class AttemptSink(Protocol):
  """Takes each attempt as soon as it reaches the host, to score it while the device samples on.

  `run_episodes` calls `attempt_done` when an attempt's tokens are on the host, and `device_busy`
  right after it dispatched device work (the next turn's decode): host work done then (e.g.
  reward checking in a process pool) overlaps the sampling instead of following it.
  """

  def attempt_done(self, rows: np.ndarray, attempt: int, texts: list[str]) -> None:
    """rows: the episodes' indices in the caller's numbering; attempt: 1-based."""

  def device_busy(self) -> None:
    """A moment to do queued host work while the device computes."""


@dataclasses.dataclass(frozen=True)
class Episodes:
  """b sampled episodes: their update streams (host arrays) and what the host reads of them."""

  experience: Experience  # [b, s] streams in cache-slot order; rewards unset until scored
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
  """Cache slots needed after the prompt bucket: K generation buckets + (K-1) appended turns,
  each an instruction plus, after a truncated attempt, `rc.close_ids`."""
  g = sampling.bucket(rc.max_new_tokens, sampler.gen_buckets, "max_new_tokens")
  if rc.num_attempts == 1:
    return g
  what = "instruction + close_ids" if rc.close_ids else "instruction"
  i = sampling.bucket(max_instruction_len + len(rc.close_ids), sampler.append_buckets, what)
  return rc.num_attempts * g + (rc.num_attempts - 1) * i


def _instruction_rows(instructions, num_prompts: int, rc: RolloutConfig, vocab_size: int):
  """One instruction list per prompt, checked (also `rc.close_ids`) before anything compiles."""
  if len(instructions) == 0:
    raise ValueError("instructions are empty: num_attempts > 1 needs correction-instruction ids.")
  if isinstance(instructions[0], (int, np.integer)):
    instructions = [list(instructions)] * num_prompts
  if len(instructions) != num_prompts:
    raise ValueError(
      f"instructions: need one list for all prompts or one per prompt ({num_prompts}), "
      f"got {len(instructions)}."
    )
  sampling.validate_rows(instructions, vocab_size, "instructions")
  if rc.close_ids:
    sampling.validate_rows([rc.close_ids], vocab_size, "close_ids")
  return instructions


def _next_turn_rows(rows, out: dict, close_ids: tuple[int, ...]):
  """Each episode's appended ids: its instruction, after `close_ids` where the attempt was cut."""
  if not close_ids:
    return rows
  # The only host sync before the episode ends: which rows were cut decides what is appended.
  stopped = jax.device_get(out["stop_reason_b"]) == sampling.StopReason.STOP_ID
  return [row if s else [*close_ids, *row] for row, s in zip(rows, stopped)]


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
  sink: AttemptSink | None = None,
  sink_row0: int = 0,
) -> Episodes:
  """Samples `rc.num_attempts` attempts for each of `rc.samples_per_prompt` copies of each prompt.

  Args:
    sampler: the jitted sampler (its buckets fix the shapes).
    params: decoder parameters (sharded like `sampler.mesh` if it has one).
    prompts: unique prompt token ids (e.g. from `chat_inputs`).
    instructions: correction-instruction ids appended between attempts (e.g. from
      `chat_inputs`): one list for all prompts, or one list per prompt. After an attempt cut at
      max_new_tokens, `rc.close_ids` go first.
    rc: sampling settings.
    rng: PRNG key; attempt a uses turn a folded into each row's key.
    decode: tokenizer.decode, to fill `texts` (None leaves texts None).
    reserve_instruction_len: instruction length the cache is sized for (default: the longest
      here; `rc.close_ids` are added on top); pass a fixed value so the cache length never
      varies between calls.
    row_offset: RNG id of the first row; pass the row's index in the GLOBAL batch so samples do
      not depend on how the batch is split over processes.
    first_attempt: the attempt number the prompts continue from: 2 continues prompts that
      already hold attempt 1, its close ids if it was cut, and its instruction (offline first
      attempts).
    sink, sink_row0: `sink` gets each attempt's texts once on the host (needs `decode`),
      episode i as row `sink_row0 + i`; the last attempt's arrive after the final transfer.

  Returns Episodes in prompt-major order (episode i answers prompt i // n).
  """
  if rc.num_attempts < 1:
    raise ValueError(f"RolloutConfig.num_attempts must be >= 1, got {rc.num_attempts}.")
  if not 1 <= first_attempt <= rc.num_attempts:
    raise ValueError(f"first_attempt={first_attempt} must be in 1..{rc.num_attempts}.")
  sp = rc.sampling_params()
  sampling.validate_sampling(sp, sampler.config.vocab_size, sampler.gen_buckets)
  remaining = rc.num_attempts - first_attempt + 1
  if remaining > 1:
    instructions = _instruction_rows(instructions, len(prompts), rc, sampler.config.vocab_size)
  else:
    instructions = [[0]]
  longest = max(len(x) for x in instructions)
  reserve = longest if reserve_instruction_len is None else reserve_instruction_len
  if reserve < longest:
    raise ValueError(f"reserve_instruction_len={reserve} < longest instruction ({longest}).")
  slots = extra_slots(sampler, dataclasses.replace(rc, num_attempts=remaining), reserve)
  row_ids = row_offset + np.arange(len(prompts) * rc.samples_per_prompt)
  n = rc.samples_per_prompt
  state = sampler.start(params, prompts, samples_per_prompt=n, extra_slots=slots, row_ids=row_ids)
  rows = [instructions[i] for i in state.prompt_index] if remaining > 1 else []
  # The append bucket fits the close ids whether or not a row needs them: one shape per call.
  append_len = longest + len(rc.close_ids)
  if sink is not None and decode is None:
    raise ValueError("run_episodes: a sink needs `decode` to turn attempts into texts.")
  sink_rows = sink_row0 + np.arange(len(state.prompt_index))
  outs = []
  for attempt in range(first_attempt, rc.num_attempts + 1):
    if attempt > first_attempt:
      turn_rows = _next_turn_rows(rows, outs[-1], rc.close_ids)
      state = sampler.append(params, state, turn_rows, min_len=append_len)
    state, out = sampler.generate(params, state, sp, rng, turn=attempt)
    if sink is not None and outs:  # the previous attempt is done: this decode continues it
      sink.attempt_done(sink_rows, attempt - 1, attempt_texts(jax.device_get(outs[-1]), decode))
    if sink is not None:  # host work now overlaps the decode just dispatched
      sink.device_busy()
    outs.append(out)
  arrays, outs = jax.device_get((state.arrays, outs))
  if sink is not None:
    sink.attempt_done(sink_rows, rc.num_attempts, attempt_texts(outs[-1], decode))
  return to_episodes(arrays, outs, state.prompt_index, decode)


def attempt_texts(out: dict, decode: Callable[[Sequence[int]], str]) -> list[str]:
  """One attempt's decoded rows (host outputs of `Sampler.generate`), the final stop id dropped."""
  stop = sampling.StopReason.STOP_ID
  texts = []
  for r, n in enumerate(out["length_b"]):
    n = int(n) - int(out["stop_reason_b"][r] == stop)
    texts.append(decode(out["tokens_bg"][r, :n].tolist()))
  return texts


def to_episodes(arrays, outs, prompt_index, decode) -> Episodes:
  """Episodes from the sampler's final state arrays and each attempt's outputs (host arrays)."""
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
    texts = [list(row) for row in zip(*(attempt_texts(o, decode) for o in outs))]
  experience = Experience(
    tokens=np.where(valid, arrays["tokens_bs"], 0).astype(np.int32),
    positions=np.asarray(cache["positions"], np.int32),
    valid=valid,
    turn=turn,
    loss_mask=valid & (turn > 0),
    logp=np.where(valid & (turn > 0), arrays["logp_bs"], 0.0).astype(np.float32),
  )
  return Episodes(
    experience=experience,
    prompt_index=prompt_index,
    attempt_tokens=attempt_tokens,
    texts=texts,
    truncated=np.stack([o["stop_reason_b"] != stop for o in outs], axis=1),
    lengths=lengths,
  )


def concat(parts: Sequence[Episodes]) -> Episodes:
  """The episodes of several batches in order (streams padded to the longest); prompt indices
  renumbered so each part's prompts follow the previous part's."""
  offsets = np.cumsum([0] + [int(p.prompt_index.max()) + 1 for p in parts[:-1]])
  cat = lambda f: np.concatenate([getattr(p, f) for p in parts])
  return Episodes(
    experience=experience_lib.concat([p.experience for p in parts]),
    prompt_index=np.concatenate([p.prompt_index + o for p, o in zip(parts, offsets)]),
    attempt_tokens=[row for p in parts for row in p.attempt_tokens],
    texts=None if any(p.texts is None for p in parts) else [r for p in parts for r in p.texts],
    truncated=cat("truncated"),
    lengths=cat("lengths"),
  )
