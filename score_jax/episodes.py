"""Tasks and episodes for the train loop and evaluation: prompts, sampling, rewards, batches.

Owns everything between a config's `data` section and a step's batch, with no loss math:
- `Task`: a dataset (MATH, MBPP, HumanEval or a reasoning-gym task) with its first-turn prompt,
  the paper's correction instruction, and how an attempt becomes a reward item;
- `sample_episodes`: K attempts on one continuing KV cache (`score_jax.sampling`), with per-row
  RNG ids taken from the row's GLOBAL index, so a run on two processes draws exactly the samples
  one process draws;
- `score_attempts`: every attempt through the reward pool (procedural tasks on the host);
- stream compaction (holes dropped) / padding / concatenation and the per-process slice ->
  global array placement.

Shape letters: b episodes, s stream slots, a attempts.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from score_jax import rollout, sampling
from score_jax.data import humaneval_data, math_data, mbpp_data, procedural, prompts, records
from score_jax.rewards import math_reward
from score_jax.rewards.outcome import Outcome
from score_jax.testbed import arith

PyTree = Any
STREAM_FIELDS = ("tokens", "positions", "valid", "turn", "loss_mask", "logp")


@dataclasses.dataclass
class Task:
  """One task: its examples and how prompts, instructions and reward items are made."""

  name: str  # math | mbpp | humaneval | testbed | procedural:<reasoning-gym task>
  examples: list[records.Example]
  shots: list[records.Example] = dataclasses.field(default_factory=list)  # MBPP 3-shot

  @property
  def kind(self) -> str:
    """'math' (final-answer checks: MATH and procedural tasks) or 'code' (tests)."""
    return "code" if self.name in ("mbpp", "humaneval") else "math"

  def first_turn(self, example: records.Example) -> str:
    """The paper's first-turn user message (zero-shot MATH, 3-shot MBPP, zero-shot HumanEval)."""
    if self.name == "mbpp":
      return prompts.mbpp_first_turn(example, self.shots)
    if self.name == "humaneval":
      return prompts.humaneval_first_turn(example)
    if self.name == "testbed":  # the pretrained base knows the answer form: the bare question
      return example.question
    # Procedural tasks reuse the MATH prompt: it asks for the "Final Answer: ..." line we parse.
    return prompts.math_first_turn(example)

  def correction(self) -> str:
    """The paper's self-correction instruction, verbatim (testbed: the Figure 2 short form)."""
    if self.name == "testbed":  # shorter sequences on a CPU; still the paper's own wording
      return prompts.correction_instruction("math_short")
    return prompts.correction_instruction(self.kind)

  def final_answer(self, text: str) -> str | None:
    """The attempt's final answer (math) or program (code), for the answer-change rate."""
    if self.kind == "code":
      return prompts.extract_code(text)
    return math_reward.extract_answer(text)


def load_task(name: str, split: str, path: str = "", procedural_size: int = 2000) -> Task:
  """Loads a task's examples. Procedural tasks generate `procedural_size` problems per split.

  Train and eval splits of a procedural task are drawn with different generator seeds (0 and 1).
  """
  path = path or None
  if name == "math":
    return Task(name, math_data.load_math(split, path=path))
  if name == "mbpp":
    return Task(name, mbpp_data.load_mbpp(split, path=path), mbpp_data.load_mbpp_shots())
  if name == "humaneval":
    return Task(name, humaneval_data.load_humaneval(path))
  if name == "testbed":  # the laptop testbed's sums (score_jax.testbed.arith)
    return Task(name, arith.load_split(split, procedural_size))
  task = name.removeprefix("procedural:")
  seed = {"train": 0, "test": 1}.get(split)
  if seed is None:
    raise ValueError(f"procedural task {task!r}: split must be 'train' or 'test', got {split!r}")
  return Task(name, procedural.load_procedural(task, procedural_size, seed))


def encode_prompts(task: Task, tokenizer, template, system: str | None, max_len: int):
  """(examples, prompt ids) of the examples whose chat prompt fits `max_len` tokens (logged)."""
  kept, ids = [], []
  for ex in task.examples:
    p = template.first_turn_ids(tokenizer, task.first_turn(ex), system)
    if len(p) <= max_len:
      kept.append(ex)
      ids.append(p)
  if len(kept) < len(task.examples):
    logging.warning(
      "%s: dropped %d of %d prompts longer than rollout.max_prompt_len=%d tokens",
      task.name,
      len(task.examples) - len(kept),
      len(task.examples),
      max_len,
    )
  if not kept:
    raise ValueError(f"{task.name}: no prompt fits rollout.max_prompt_len={max_len} tokens")
  return kept, ids


def sample_episodes(
  sampler: sampling.Sampler,
  params: PyTree,
  prompts_ids: Sequence[Sequence[int]],
  instruction: Sequence[int],
  rc: rollout.RolloutConfig,
  rng: jax.Array,
  *,
  row_offset: int = 0,
  first_attempt: int = 1,
  reserve_instruction_len: int,
  decode: Callable[[Sequence[int]], str],
) -> rollout.Episodes:
  """Attempts `first_attempt..K` of `rc.samples_per_prompt` episodes per prompt, one cache.

  `rollout.run_episodes` with each row's RNG id = `row_offset + row`, the row's index in the
  GLOBAL batch: the samples then do not depend on how the batch is split over processes.
  `first_attempt=2` continues prompts that already hold attempt 1 (offline first attempts).
  """
  return rollout.run_episodes(
    sampler,
    params,
    prompts_ids,
    instruction,
    rc,
    rng,
    decode=decode,
    reserve_instruction_len=reserve_instruction_len,
    row_offset=row_offset,
    first_attempt=first_attempt,
  )


def compact_streams(ep: rollout.Episodes, multiple: int) -> rollout.Episodes:
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


def pad_streams(ep: rollout.Episodes, length: int) -> rollout.Episodes:
  """Appends holes (invalid slots) so every stream array is [b, length]."""
  s = ep.tokens.shape[1]
  if length < s:
    raise ValueError(f"pad_streams: cannot shrink streams of {s} slots to {length}")
  pad = lambda x: np.pad(x, ((0, 0), (0, length - s)))
  return dataclasses.replace(ep, **{f: pad(getattr(ep, f)) for f in STREAM_FIELDS})


def concat_episodes(parts: Sequence[rollout.Episodes]) -> rollout.Episodes:
  """Rows of several Episodes (streams padded to the longest); prompt indices renumbered."""
  length = max(p.tokens.shape[1] for p in parts)
  parts = [pad_streams(p, length) for p in parts]
  offsets = np.cumsum([0] + [int(p.prompt_index.max()) + 1 for p in parts[:-1]])
  cat = lambda f: np.concatenate([getattr(p, f) for p in parts])
  return rollout.Episodes(
    **{f: cat(f) for f in (*STREAM_FIELDS, "truncated", "lengths")},
    prompt_index=np.concatenate([p.prompt_index + o for p, o in zip(parts, offsets)]),
    attempt_tokens=[row for p in parts for row in p.attempt_tokens],
    texts=[row for p in parts for row in p.texts],
  )


def reward_item(task: Task, example: records.Example, text: str) -> tuple[str, tuple]:
  """The reward pool item of one attempt."""
  if task.kind == "code":
    return "code", (prompts.extract_code(text), list(example.tests), example.setup_code)
  return "math", (text, example.answer)


def score_attempts(pool, task: Task, examples_b: Sequence[records.Example], texts_ba):
  """Rewards [b, a] float32, outcomes [b, a] int8 and outcome counts of every attempt.

  MATH and code attempts go through the reward pool (process pool, per-item deadlines);
  reasoning-gym attempts are scored on the host (microseconds each). A checker that raises is
  an ERROR outcome, counted and logged, never a silent 0.
  """
  b, a = len(texts_ba), len(texts_ba[0])
  if task.name.startswith("procedural:"):
    name = task.name.removeprefix("procedural:")
    outcomes = np.empty((b, a), np.int8)
    for i, (ex, row) in enumerate(zip(examples_b, texts_ba)):
      for j, text in enumerate(row):
        try:
          ok = procedural.score(name, math_reward.extract_answer(text), ex) == 1.0
          outcomes[i, j] = Outcome.CORRECT if ok else Outcome.WRONG
        except Exception as e:  # counted as ERROR below, with the reason in the log
          logging.warning("procedural reward of %s attempt %d: ERROR %s", ex.id, j + 1, e)
          outcomes[i, j] = Outcome.ERROR
  else:
    items = [reward_item(task, ex, t) for ex, row in zip(examples_b, texts_ba) for t in row]
    outcomes = pool.score(items).outcomes.reshape(b, a)
  rewards = (outcomes == Outcome.CORRECT).astype(np.float32)
  counts = {o.name.lower(): int(np.sum(outcomes == o)) for o in Outcome}
  return rewards, outcomes, counts


def offline_prompt_count(num_prompts: int, g: int, shards: int, ratio: float) -> int:
  """Prompts (of `num_prompts`) whose first attempt comes from the base model.

  The largest count <= round(ratio * num_prompts) that leaves both the offline and the online
  episode counts divisible by the sampler's batch shards.
  """
  for k in range(int(round(ratio * num_prompts)), 0, -1):
    if (k * g) % shards == 0 and ((num_prompts - k) * g) % shards == 0:
      return k
  return 0


def global_array(local: np.ndarray, mesh: Mesh, spec: P) -> jax.Array:
  """This process's rows of a batch array -> one global array (rows over `spec`)."""
  if jax.process_count() == 1:
    return jax.device_put(local, NamedSharding(mesh, spec))
  return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), local)


def allgather(x: np.ndarray) -> np.ndarray:
  """Concatenates every process's rows of `x` in process order (identity on one process)."""
  if jax.process_count() == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils  # noqa: PLC0415

  out = multihost_utils.process_allgather(np.asarray(x))
  return np.asarray(out).reshape((-1,) + np.shape(x)[1:])
