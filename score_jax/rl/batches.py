"""The batches the update steps take: their keys, dtypes and host-side checks.

A step's batch is a dict of per-slot arrays [b, t] (`STREAM_KEYS`, plus `segments` for packed
SFT rows), per-episode rewards [b, a] and the global loss normalizer []. `validate_batch` checks
one against a step's keys before anything compiles, naming the key, the shape or the element
that is wrong.
"""

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

Batch = dict[str, Any]
BATCH_AXES = ("data", "fsdp")
# Per-slot arrays of an RL batch (all [b, t]) and their dtypes; plus rewards [b, a], normalizer [].
STREAM_KEYS = {
  "tokens": np.int32,
  "positions": np.int32,
  "valid": np.bool_,
  "turn": np.int32,
  "loss_mask": np.bool_,
  "logp": np.float32,
}
RL_KEYS = (*STREAM_KEYS, "rewards", "normalizer")
SFT_KEYS = ("tokens", "positions", "valid", "loss_mask", "normalizer")
# Packed SFT rows: several sequences per row, each slot tagged with its sequence id [b, t].
PACKED_SFT_KEYS = (*SFT_KEYS[:-1], "segments", "normalizer")
SCORE_KEYS = ("tokens", "positions", "valid")
# Every key's dtype (the step casts the host arrays to these before placing them).
DTYPES = {**STREAM_KEYS, "segments": np.int32, "rewards": np.float32, "normalizer": np.float32}


def batch_shards(mesh: Mesh) -> int:
  """How many ways the batch is split: data * fsdp."""
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def validate_batch(
  batch: Batch,
  keys,
  mesh: Mesh,
  *,
  num_attempts: int,
  samples_per_prompt: int,
  num_microbatches: int,
  vocab_size: int,
) -> None:
  """Host-side checks before anything compiles; each error names the key and the shape."""
  missing, unknown = sorted(set(keys) - set(batch)), sorted(set(batch) - set(keys))
  if missing or unknown:
    raise ValueError(f"batch keys: missing {missing}, unexpected {unknown}; need {sorted(keys)}")
  shape = np.shape(batch["tokens"])
  if len(shape) != 2:
    raise ValueError(f"batch['tokens'] must be [b, t], got shape {shape}")
  for key in keys:
    want = {"normalizer": (), "rewards": (shape[0], num_attempts)}.get(key, shape)
    if np.shape(batch[key]) != want:
      raise ValueError(f"batch[{key!r}] has shape {np.shape(batch[key])}, expected {want}")
  b, m, shards = shape[0], num_microbatches, batch_shards(mesh)
  if b % (shards * m):
    raise ValueError(
      f"global batch {b} must be divisible by the mesh batch shards data*fsdp={shards} times "
      f"num_microbatches={m} (= {shards * m}), so every micro-batch spans every shard"
    )
  if "rewards" in keys and b % samples_per_prompt:
    raise ValueError(
      f"global batch {b} is not a multiple of LossConfig.samples_per_prompt="
      f"{samples_per_prompt} (RLOO groups are consecutive rows)"
    )
  host = {k: v for k, v in batch.items() if not isinstance(v, jax.Array)}
  if "tokens" in host:
    tok = np.asarray(host["tokens"])
    bad = (tok < 0) | (tok >= vocab_size)
    if bad.any():
      r, c = np.argwhere(bad)[0]
      raise ValueError(
        f"batch['tokens'][{r}, {c}] = {tok[r, c]} is outside the vocabulary 0..{vocab_size - 1}"
      )
  if "turn" in host:
    turn, k = np.asarray(host["turn"]), num_attempts
    bad = (turn < 0) | (turn > k)
    if bad.any():
      r, c = np.argwhere(bad)[0]
      raise ValueError(
        f"batch['turn'][{r}, {c}] = {turn[r, c]} is outside 0..{k} (LossConfig.num_attempts={k})"
      )
  if "rewards" in host and not np.isfinite(np.asarray(host["rewards"], np.float64)).all():
    r, c = np.argwhere(~np.isfinite(np.asarray(host["rewards"], np.float64)))[0]
    raise ValueError(f"batch['rewards'][{r}, {c}] is not finite")
  if "normalizer" in host and not float(host["normalizer"]) > 0:
    raise ValueError(f"batch['normalizer'] must be > 0, got {host['normalizer']}")
