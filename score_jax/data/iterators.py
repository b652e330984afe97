"""Deterministic, checkpointable batching of a dataset, sliced across hosts.

Owns `DataIterator`. The order of examples is a pure function of (seed, epoch): each epoch draws a
fresh permutation from `SeedSequence([seed, epoch])`, so the whole stream is fixed by the seed and
a resumed run sees exactly the batches an uninterrupted run would have seen:
an anchor that does not restore shuffle state skips or repeats data after a restart.

The saved state is GLOBAL (epoch and position in the global permutation), so it is the same on
every host and can be restored with a different number of processes.

Every process holds the whole (tokenized) dataset and takes its slice of each global batch by
index, so the slices are disjoint and, in process order, are the batch one process would take
(tests/parallel/host_shards_test.py). Reading only a shard at read time would save little and
change the stream: the trainer drops prompts longer than rollout.max_prompt_len before
numbering them, so the global index space needs every prompt's length, and the largest split
used (MATH, 12.5k problems) tokenizes in seconds and fits in a few MB per process.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")

_STATE_KEYS = (
  "epoch",
  "position",
  "seed",
  "num_examples",
  "batch_size",
  "shuffle",
  "drop_remainder",
)
_MUST_MATCH = _STATE_KEYS[2:]


class DataIterator(Generic[T]):
  """Yields this process's share of each global batch, forever or for `num_epochs`.

  Each `next()` returns a list of `batch_size // process_count` examples: process i takes the
  i-th contiguous slice of the global batch. With drop_remainder=False the last global batch of an
  epoch is smaller and is split as evenly as possible (a process may get fewer examples, or none;
  evaluation code pads); with drop_remainder=True the leftover examples of an epoch are skipped
  (a different subset each epoch, since the permutation changes).
  """

  def __init__(
    self,
    examples: Sequence[T],
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    drop_remainder: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    num_epochs: int | None = None,
  ):
    """Builds an iterator at the start of epoch 0.

    Args:
      examples: the dataset (any sequence; only indexed, never copied).
      batch_size: GLOBAL batch size, summed over processes.
      seed: shuffle seed (an int >= 0; saved in the state).
      shuffle: draw a fresh permutation per epoch; otherwise file order every epoch.
      drop_remainder: skip the last partial batch of each epoch.
      process_index: this process's index (jax.process_index()).
      process_count: number of processes (jax.process_count()); must divide batch_size.
      num_epochs: stop after this many epochs (None: never stop).
    """
    n = len(examples)
    if batch_size <= 0:
      raise ValueError(f"DataIterator: batch_size must be positive, got {batch_size}")
    if not 0 <= process_index < process_count:
      raise ValueError(f"DataIterator: process_index {process_index} not in [0, {process_count})")
    if batch_size % process_count:
      raise ValueError(
        f"DataIterator: batch_size {batch_size} is not divisible by process_count {process_count}"
      )
    if n == 0 or (drop_remainder and n < batch_size):
      raise ValueError(f"DataIterator: {n} examples cannot fill one batch of {batch_size}")
    if not isinstance(seed, int) or seed < 0:
      raise ValueError(f"DataIterator: seed must be a non-negative int, got {seed!r}")
    self._examples = examples
    self.batch_size = batch_size
    self.seed = seed
    self.shuffle = shuffle
    self.drop_remainder = drop_remainder
    self.process_index = process_index
    self.process_count = process_count
    self.num_epochs = num_epochs
    self.epoch = 0
    self.position = 0  # examples of the current epoch already consumed, globally
    self._order_epoch = -1
    self._order = np.arange(0)

  @property
  def batches_per_epoch(self) -> int:
    n, b = len(self._examples), self.batch_size
    return n // b if self.drop_remainder else -(-n // b)

  def _epoch_order(self) -> np.ndarray:
    if self._order_epoch != self.epoch:
      n = len(self._examples)
      if self.shuffle:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch]))
        self._order = rng.permutation(n)
      else:
        self._order = np.arange(n)
      self._order_epoch = self.epoch
    return self._order

  def __iter__(self) -> Iterator[list[T]]:
    return self

  def __next__(self) -> list[T]:
    n = len(self._examples)
    limit = n - n % self.batch_size if self.drop_remainder else n
    if self.position >= limit:
      self.epoch, self.position = self.epoch + 1, 0
    if self.num_epochs is not None and self.epoch >= self.num_epochs:
      raise StopIteration
    global_ids = self._epoch_order()[self.position : self.position + self.batch_size]
    self.position += len(global_ids)
    if len(global_ids) == self.batch_size:
      local = self.batch_size // self.process_count
      mine = global_ids[self.process_index * local : (self.process_index + 1) * local]
    else:
      mine = np.array_split(global_ids, self.process_count)[self.process_index]
    return [self._examples[int(i)] for i in mine]

  def state(self) -> dict[str, Any]:
    """JSON-serialisable state; restoring it resumes with exactly the next batch."""
    return {
      "epoch": self.epoch,
      "position": self.position,
      "seed": self.seed,
      "num_examples": len(self._examples),
      "batch_size": self.batch_size,
      "shuffle": self.shuffle,
      "drop_remainder": self.drop_remainder,
    }

  def restore(self, state: Mapping[str, Any]) -> None:
    """Continues from a `state()`; raises if it was saved for a different dataset or batching."""
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
      raise ValueError(f"DataIterator.restore: state lacks keys {missing} (got {sorted(state)})")
    mine = self.state()
    for key in _MUST_MATCH:
      if state[key] != mine[key]:
        raise ValueError(
          f"DataIterator.restore: state has {key}={state[key]!r} but this iterator has "
          f"{key}={mine[key]!r}; the saved position would index a different stream"
        )
    epoch, position = state["epoch"], state["position"]
    if not (isinstance(epoch, int) and epoch >= 0):
      raise ValueError(f"DataIterator.restore: epoch must be an int >= 0, got {epoch!r}")
    if not (isinstance(position, int) and 0 <= position <= len(self._examples)):
      raise ValueError(
        f"DataIterator.restore: position must be an int in [0, {len(self._examples)}], "
        f"got {position!r}"
      )
    self.epoch, self.position = epoch, position

  @classmethod
  def from_state(
    cls, examples: Sequence[T], state: Mapping[str, Any], **kwargs: Any
  ) -> DataIterator[T]:
    """Builds an iterator with the batching saved in `state` and restores it.

    kwargs: the other constructor arguments (process_index, process_count, num_epochs).
    """
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
      raise ValueError(f"DataIterator.from_state: state lacks keys {missing}")
    it = cls(
      examples,
      state["batch_size"],
      state["seed"],
      shuffle=state["shuffle"],
      drop_remainder=state["drop_remainder"],
      **kwargs,
    )
    it.restore(state)
    return it
