"""Training episodes whose first attempts may come from the base model (paper Section 2.5).

Stage II can take some episodes' first attempts from the frozen base (reference) model: the
base model's attempt 1 becomes part of the prompt, and the policy samples attempts 2..K on top
of it. `training_episodes` samples one step's episodes: the online prompts with every attempt
from the policy, the last `num_offline` prompts with base-model first attempts, in that order.
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from score_jax.generation import rollout, sampling

PyTree = Any


def offline_prompt_count(num_prompts: int, g: int, shards: int, ratio: float) -> int:
  """Prompts (of `num_prompts`) whose first attempt comes from the base model.

  The largest count <= round(ratio * num_prompts) that leaves both the offline and the online
  episode counts divisible by the sampler's batch shards.
  """
  for k in range(int(round(ratio * num_prompts)), 0, -1):
    if (k * g) % shards == 0 and ((num_prompts - k) * g) % shards == 0:
      return k
  return 0


def training_episodes(
  sampler: sampling.Sampler,
  params: PyTree,
  base_params: PyTree | None,
  prompts: Sequence[Sequence[int]],
  instruction: Sequence[int],
  rc: rollout.RolloutConfig,
  rng: jax.Array,
  *,
  num_offline: int,
  row_offset: int,
  decode: Callable[[Sequence[int]], str],
  prompts_per_call: int = 0,
  sink: rollout.AttemptSink | None = None,
) -> rollout.Episodes:
  """Episodes for these prompts; the last `num_offline` get base-model first attempts.

  `base_params`: the base model placed for the sampler (used only when `num_offline` > 0).

  Each row's RNG id is `row_offset + row`, its index in the GLOBAL batch, so the samples do not
  depend on how the batch is split over processes, nor on `prompts_per_call` (> 0: the online
  prompts are sampled that many at a time, so the KV cache holds one call's rows, not a step's).
  `sink` (see `rollout.AttemptSink`) gets the online episodes' attempts as they finish, rows
  numbered as in the result; a call's last attempt is scored while the next call samples.
  The base-model continuations are not passed to it.
  """
  if num_offline and base_params is None:
    raise ValueError(f"num_offline={num_offline} base-model first attempts need base_params")
  common = dict(reserve_instruction_len=len(instruction), decode=decode)
  online, offline = prompts[: len(prompts) - num_offline], prompts[len(prompts) - num_offline :]
  parts = []
  rng_on = jax.random.fold_in(rng, 0)
  per_call = prompts_per_call or max(len(online), 1)
  for start in range(0, len(online), per_call):
    chunk = online[start : start + per_call]
    first_row = row_offset + start * rc.samples_per_prompt
    parts.append(
      rollout.run_episodes(
        sampler,
        params,
        chunk,
        instruction,
        rc,
        rng_on,
        row_offset=first_row,
        sink=sink,
        sink_row0=start * rc.samples_per_prompt,
        **common,
      )
    )
  if offline:
    off_row = row_offset + len(online) * rc.samples_per_prompt
    parts.append(
      continue_base_attempts(
        sampler, params, base_params, offline, instruction, rc, rng, off_row, common
      )
    )
  return rollout.concat(parts) if len(parts) > 1 else parts[0]


def continue_base_attempts(
  sampler, params, base_params, prompts, instruction, rc, rng, row, common
):
  """Attempt 1 from the base model; attempts 2..K from the policy, one episode per base sample."""
  sample = functools.partial(rollout.run_episodes, sampler, row_offset=row, **common)
  rc1 = dataclasses.replace(rc, num_attempts=1)
  first = sample(base_params, prompts, instruction, rc1, jax.random.fold_in(rng, 1))
  # The base model's attempt and the instruction become the prompt of the online attempt 2; a
  # base attempt cut at max_new_tokens is closed first, as in `rollout.run_episodes`.
  close = list(rc.close_ids)
  continued = [
    list(prompts[first.prompt_index[r]])
    + first.attempt_tokens[r][0]
    + (close if first.truncated[r, 0] else [])
    + list(instruction)
    for r in range(len(first.prompt_index))
  ]
  rc2 = dataclasses.replace(rc, samples_per_prompt=1)
  rng2 = jax.random.fold_in(rng, 2)
  second = sample(params, continued, instruction, rc2, rng2, first_attempt=2)
  return rollout.Episodes(
    experience=second.experience,
    prompt_index=first.prompt_index,
    attempt_tokens=[a + b for a, b in zip(first.attempt_tokens, second.attempt_tokens)],
    texts=[a + b for a, b in zip(first.texts, second.texts)],
    truncated=np.concatenate([first.truncated, second.truncated], axis=1),
    lengths=np.concatenate([first.lengths, second.lengths], axis=1),
  )
