"""Held-out problems split over processes in sampler batches, results gathered back per problem.

Every evaluation walks its problems the same way: the problem list is padded (repeating early
problems) to a whole number of batches on every process, so each process calls the sampler
equally often; each batch's global position is its RNG row offset, so samples do not depend on
how the problems are split over processes. Process k takes the k-th contiguous run of
positions, so the processes' problems are disjoint and, in process order, the one-process
order (every process holds the whole tokenized set: a few thousand problems at most).
`map_problems` returns per-problem arrays (each problem once, in problem order) and the JSON
records of every process, in problem order.

Shape letters: p problems.
"""

import json
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from score_jax.parallel import hosts

BatchFn = Callable[[np.ndarray, int], tuple[Sequence[np.ndarray], list[dict]]]


def problems_per_call(batch_size: int, samples: int, shards: int) -> int:
  """Problems per sampler call when each has `samples` rows: about `batch_size` rows a call, a
  multiple of the sampler's batch shards (the sampler refuses other batch sizes)."""
  p = max(1, batch_size // samples)
  while (p * samples) % shards:
    p += 1
  return p


def map_problems(num_problems: int, batch_size: int, fn: BatchFn) -> tuple[list, list[dict]]:
  """(arrays [num_problems, ...] of every process, records of every process) in problem order.

  Args:
    num_problems: how many problems (indices 0..num_problems-1).
    batch_size: problems per call of `fn` on each process.
    fn: (problem indices [p], global position of the first) -> (arrays each [p, ...], one
      JSON-able record per problem). Padding repeats early problems; their records are dropped.
  """
  n, procs, me = num_problems, jax.process_count(), jax.process_index()
  if n < 1:
    raise ValueError("map_problems: no problems to evaluate")
  chunk = batch_size * procs
  padded = -(-n // chunk) * chunk
  order = np.arange(padded) % n
  per_proc = padded // procs
  parts, records = [], []
  for start in range(me * per_proc, (me + 1) * per_proc, batch_size):
    idx = order[start : start + batch_size]
    arrays, recs = fn(idx, start)
    parts.append([np.asarray(a, np.float64) for a in arrays])
    records += [(start + j, r) for j, r in enumerate(recs) if start + j < n]
  columns = [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]
  # Rows come back in process order = global position order: the first n are problems 0..n-1.
  gathered = [hosts.allgather(c)[:n] for c in columns]
  return gathered, [r for _, r in sorted(gather_objects(records), key=lambda x: x[0])]


def gather_objects(items: list[Any]) -> list[Any]:
  """Every process's JSON-able list items, concatenated in process order."""
  if jax.process_count() == 1:
    return list(items)
  data = np.frombuffer(json.dumps(items).encode(), np.uint8)
  sizes = hosts.allgather(np.array([data.size], np.int64))
  buf = np.zeros((1, int(sizes.max())), np.uint8)
  buf[0, : data.size] = data
  rows = hosts.allgather(buf)
  out = []
  for row, size in zip(rows, sizes):
    out += json.loads(bytes(row[: int(size)]).decode())
  return out
