"""The episode batch every update step takes: one `Experience` type from the rollout to the step.

An `Experience` holds b episode streams in cache-slot order (`[prompt][y1][instr][y2]...`, holes
marked invalid) plus their per-attempt rewards and the batch's GLOBAL loss normalizer. The
rollout builds it on the host, the reward pool fills `rewards`, `compact` drops the holes,
`pad` / `concat` line streams up, and `place` validates, casts and puts it on the mesh; the
steps consume it as it is. Fields a step does not use are None (SFT rows have no rewards, only
packed SFT rows have `segments`).

Every field's dtype and logical axes are defined once, in `FIELDS`.

Shape letters: b episodes, s stream slots, a attempts.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from score_jax.parallel import hosts
from score_jax.parallel import mesh as mesh_lib
from score_jax.rl import losses

Array = Any  # np.ndarray on the host, jax.Array once placed


@dataclasses.dataclass(frozen=True)
class Field:
  dtype: type
  axes: tuple[str, ...]  # logical axes: "batch" rows go over the mesh's (data, fsdp)


FIELDS = {
  "tokens": Field(np.int32, ("batch", "slots")),  # ids as sampled / prompted; 0 in holes
  "positions": Field(np.int32, ("batch", "slots")),  # RoPE positions (meaningful where valid)
  "valid": Field(np.bool_, ("batch", "slots")),  # the slot holds a real token
  "turn": Field(np.int32, ("batch", "slots")),  # 0 = prompt/instruction/hole, a = attempt a
  "loss_mask": Field(np.bool_, ("batch", "slots")),  # tokens that enter the loss
  "logp": Field(np.float32, ("batch", "slots")),  # sampler log-probs at its temperature
  "segments": Field(np.int32, ("batch", "slots")),  # packed rows: each slot's sequence id
  "rewards": Field(np.float32, ("batch", "attempts")),  # per episode and attempt
  "normalizer": Field(np.float32, ()),  # the loss denominator over the GLOBAL batch
}
# Per-slot fields: what compaction reorders and padding extends.
SLOT_FIELDS = tuple(k for k, f in FIELDS.items() if f.axes == ("batch", "slots"))


@struct.dataclass
class Experience:
  """b episodes as one pytree; see the module docstring and `FIELDS`."""

  tokens: Array
  positions: Array
  valid: Array
  turn: Array | None = None
  loss_mask: Array | None = None
  logp: Array | None = None
  segments: Array | None = None
  rewards: Array | None = None
  normalizer: Array | None = None

  @property
  def num_rows(self) -> int:
    return int(np.shape(self.tokens)[0])

  @property
  def num_slots(self) -> int:
    return int(np.shape(self.tokens)[1])

  def present(self) -> tuple[str, ...]:
    """The names of the fields that are set."""
    return tuple(k for k in FIELDS if getattr(self, k) is not None)

  def only(self, names: Sequence[str]) -> "Experience":
    """This batch with every field outside `names` set to None."""
    return self.replace(**{k: None for k in FIELDS if k not in names})

  def slot_arrays(self) -> dict[str, Array]:
    return {k: getattr(self, k) for k in SLOT_FIELDS if getattr(self, k) is not None}

  # ----------------------------------------------------------------- host-side stream layout

  def compact(self, multiple: int) -> "Experience":
    """This batch with the holes of every stream dropped, padded to a multiple of `multiple`.

    A stream in cache-slot order reserves a whole generation bucket per attempt, so a short
    first attempt leaves most of its bucket as holes. Valid slots move left in their order,
    keeping their token, position, turn and log-prob; scoring skips holes and attention follows
    positions and the valid bit, so the update is the same. Streams are padded with holes to a
    multiple of `multiple` slots (few distinct lengths, few compiles) and never grow.
    """
    if multiple < 1:
      raise ValueError(f"Experience.compact: multiple must be >= 1, got {multiple}")
    valid = np.asarray(self.valid)
    order_bs = np.argsort(~valid, axis=1, kind="stable")  # valid slots first, in slot order
    longest = int(valid.sum(axis=1).max(initial=0))
    length = min(valid.shape[1], max(1, -(-longest // multiple)) * multiple)
    take = lambda x: np.take_along_axis(np.asarray(x), order_bs, axis=1)[:, :length]
    return self.replace(**{k: take(v) for k, v in self.slot_arrays().items()})

  def pad(self, length: int) -> "Experience":
    """Appends holes (invalid slots) so every per-slot array is [b, length]."""
    s = self.num_slots
    if length < s:
      raise ValueError(f"Experience.pad: cannot shrink streams of {s} slots to {length}")
    pad = lambda x: np.pad(np.asarray(x), ((0, 0), (0, length - s)))
    return self.replace(**{k: pad(v) for k, v in self.slot_arrays().items()})

  # ----------------------------------------------------------------- checks and placement

  def validate(
    self,
    mesh: Mesh,
    *,
    num_attempts: int,
    samples_per_prompt: int,
    num_microbatches: int,
    vocab_size: int,
    needs: Sequence[str],
    max_loss_tokens: int | None = None,
  ) -> None:
    """Host-side checks before anything compiles; each error names the field and the shape.

    `max_loss_tokens`: the most `loss_mask` slots a row may hold (the update scores no more).
    """
    missing = sorted(set(needs) - set(self.present()))
    unexpected = sorted(set(self.present()) - set(needs))
    if missing or unexpected:
      raise ValueError(
        f"Experience fields: missing {missing}, unexpected {unexpected}; this step takes "
        f"{sorted(needs)}"
      )
    shape = np.shape(self.tokens)
    if len(shape) != 2:
      raise ValueError(f"Experience.tokens must be [b, s], got shape {shape}")
    for name in self.present():
      want = {"normalizer": (), "rewards": (shape[0], num_attempts)}.get(name, shape)
      if np.shape(getattr(self, name)) != want:
        raise ValueError(
          f"Experience.{name} has shape {np.shape(getattr(self, name))}, expected {want}"
        )
    b, m, shards = shape[0], num_microbatches, mesh_lib.batch_shards(mesh)
    if b % (shards * m):
      raise ValueError(
        f"global batch {b} must be divisible by the mesh batch shards data*fsdp={shards} times "
        f"num_microbatches={m} (= {shards * m}), so every micro-batch spans every shard"
      )
    if self.rewards is not None and b % samples_per_prompt:
      raise ValueError(
        f"global batch {b} is not a multiple of LossConfig.samples_per_prompt="
        f"{samples_per_prompt} (RLOO groups are consecutive rows)"
      )
    _check_host_values(self, num_attempts, vocab_size, max_loss_tokens)

  def shardings(self, mesh: Mesh) -> "Experience":
    """The NamedSharding of every set field: rows over (data, fsdp), the normalizer replicated."""
    rows, repl = NamedSharding(mesh, P(mesh_lib.BATCH_AXES)), NamedSharding(mesh, P())
    return self.replace(**{k: (repl if FIELDS[k].axes == () else rows) for k in self.present()})

  def place(self, mesh: Mesh) -> "Experience":
    """Every set field cast to its dtype and placed with `shardings(mesh)`.

    On several processes each process holds its own rows, which become one global array (the
    normalizer must already be the global one).
    """
    cast = {k: _cast(getattr(self, k), FIELDS[k].dtype) for k in self.present()}
    sh = self.shardings(mesh)
    if jax.process_count() == 1:
      return jax.device_put(self.replace(**cast), sh)
    placed = {
      k: v if isinstance(v, jax.Array) else hosts.global_array(v, mesh, getattr(sh, k).spec)
      for k, v in cast.items()
    }
    return self.replace(**placed)


def _cast(x, dtype):
  if isinstance(x, jax.Array):
    return x.astype(dtype) if x.dtype != dtype else x
  return np.asarray(x, dtype)


def _check_host_values(exp: Experience, num_attempts: int, vocab_size: int, max_loss=None) -> None:
  """Token ids, turn ids, loss tokens per row, rewards and the normalizer of host fields."""
  host = lambda name: None if isinstance(getattr(exp, name), jax.Array) else getattr(exp, name)
  if (tok := host("tokens")) is not None:
    tok = np.asarray(tok)
    bad = (tok < 0) | (tok >= vocab_size)
    if bad.any():
      r, c = np.argwhere(bad)[0]
      raise ValueError(
        f"Experience.tokens[{r}, {c}] = {tok[r, c]} is outside the vocabulary 0..{vocab_size - 1}"
      )
  if (turn := host("turn")) is not None:
    turn, k = np.asarray(turn), num_attempts
    bad = (turn < 0) | (turn > k)
    if bad.any():
      r, c = np.argwhere(bad)[0]
      raise ValueError(
        f"Experience.turn[{r}, {c}] = {turn[r, c]} is outside 0..{k} (LossConfig.num_attempts={k})"
      )
  if max_loss is not None and (mask := host("loss_mask")) is not None:
    counts = np.asarray(mask, bool).sum(axis=1)
    if (counts > max_loss).any():
      r = int(np.argmax(counts > max_loss))
      raise ValueError(
        f"Experience.loss_mask row {r} has {counts[r]} loss tokens, more than the update scores "
        f"({max_loss} = LossConfig.num_attempts x max_new_tokens)"
      )
  if (rewards := host("rewards")) is not None:
    r64 = np.asarray(rewards, np.float64)
    if not np.isfinite(r64).all():
      r, c = np.argwhere(~np.isfinite(r64))[0]
      raise ValueError(f"Experience.rewards[{r}, {c}] is not finite")
  if (norm := host("normalizer")) is not None and not float(norm) > 0:
    raise ValueError(f"Experience.normalizer must be > 0, got {norm}")


def concat(parts: Sequence[Experience]) -> Experience:
  """The rows of several batches, streams padded to the longest."""
  length = max(p.num_slots for p in parts)
  parts = [p.pad(length) for p in parts]
  names = parts[0].present()
  for p in parts[1:]:
    if p.present() != names:
      raise ValueError(f"concat: fields differ: {names} vs {p.present()}")
  return parts[0].replace(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in names})


def global_normalizer(loss_mask_bs, aggregation: str) -> np.float32:
  """The loss denominator over the GLOBAL batch from this process's rows (all are additive)."""
  norm = losses.aggregation_normalizers(loss_mask_bs, aggregation)
  if jax.process_count() > 1:
    norm = float(hosts.allgather(np.array([norm])).sum())
  return np.float32(norm)
