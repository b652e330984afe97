"""The SFT baselines' data sets: collected at the start of each round, kept in the workdir.

An SFT algorithm with a `Collection` (rl.algorithms: STaR, Pair-SFT, STaR in Stage II) splits
its phase into rounds: STaR's `config.sft.star_iterations` (ReST-EM: every round samples from the
model as it is then), Pair-SFT's one (from the frozen base model). A round of L updates first
samples L x (train.global_batch) two-attempt episodes at the training temperature, the same
number of samples an RL method draws in L steps, scores them, keeps what the baseline keeps
(rl.sft_data) and saves the rows to WORKDIR/collected/; each of its L updates then trains on
train.global_batch rows drawn from them in a seeded order (cycling when fewer were kept, so
every method gets the same number of updates of the same size).

A resumed run loads a round's saved rows instead of sampling again, so resume stays exact.
"""

import dataclasses
import io
import json
import os

import jax
import numpy as np

from score_jax import storage, tasks
from score_jax.data import iterators
from score_jax.generation import rollout
from score_jax.parallel import hosts
from score_jax.rl import algorithms, experience, sft_data
from score_jax.rl.experience import Experience
from score_jax.trainer import console
from score_jax.trainer import setup as setup_lib

# Fields saved per round; the SFT step takes SFT_FIELDS of them.
_SAVED = ("tokens", "positions", "valid", "turn", "loss_mask")
_SFT_FIELDS = ("tokens", "positions", "valid", "loss_mask", "normalizer")


def rounds(config, algorithm: algorithms.Algorithm, length: int) -> list[tuple[int, int]]:
  """(first phase step, steps) of each round of an SFT phase of `length` steps."""
  n = config.sft.star_iterations if algorithm.collection.rounds == "star" else 1
  n = max(1, min(n, length))
  bounds = [round(i * length / n) for i in range(n + 1)]
  return [(a, b - a) for a, b in zip(bounds, bounds[1:]) if b > a]


@dataclasses.dataclass
class RoundData:
  rows: Experience  # this process's kept rows (SFT streams)
  stats: dict[str, float]  # what was collected and kept (global counts)
  num_global: int  # kept rows over all processes


class Collector:
  """Serves each SFT update its batch, collecting a round's data set when the round starts."""

  def __init__(self, trainer):
    self.t = trainer
    self._key, self._data = None, None

  def batch(self, state, algorithm, segment) -> tuple[Experience | None, dict[str, float]]:
    """The update's SFT rows (None when no process kept any row) and the round's stats."""
    spans = rounds(self.t.config, algorithm, segment.length)
    r = max(i for i, (start, _) in enumerate(spans) if start <= segment.step)
    start, length = spans[r]
    key = (segment.index, r)
    if self._key != key:
      self._data = self._load_or_collect(state, algorithm, segment.index, r, length)
      self._key = key
    data = self._data
    if data.num_global == 0:
      return None, data.stats
    return self._rows(data, key, segment.step - start), data.stats

  def _rows(self, data: RoundData, key, j: int) -> Experience:
    c = self.t.config
    b = c.train.global_batch // jax.process_count()
    n = data.rows.num_rows
    if n == 0:  # other processes kept rows; this one trains on holes (no loss)
      empty = np.zeros((b, c.train.stream_multiple or 1), np.int32)
      batch = Experience(empty, empty, empty.astype(bool), loss_mask=empty.astype(bool))
    else:
      order = np.random.default_rng([c.seed, *key]).permutation(n)
      take = order[(j * b + np.arange(b)) % n]
      batch = data.rows.replace(
        **{k: np.asarray(v)[take] for k, v in data.rows.slot_arrays().items()}
      )
      batch = batch.compact(c.train.stream_multiple or 1)
    if jax.process_count() > 1:
      batch = batch.pad(int(hosts.allgather(np.array([batch.num_slots])).max()))
    norm = experience.global_normalizer(batch.loss_mask, c.rl.aggregation)
    return batch.replace(normalizer=norm).only(_SFT_FIELDS)

  # ------------------------------------------------------------------------ one round's data

  def _path(self, phase: int, r: int) -> str:
    name = f"phase{phase}_round{r}.p{jax.process_index()}"
    return os.path.join(self.t.workdir, "collected", name)

  def _load_or_collect(self, state, algorithm, phase: int, r: int, length: int) -> RoundData:
    path = self._path(phase, r)
    if storage.exists(path + ".json"):
      stats = json.loads(storage.read_text(path + ".json"))
      with np.load(io.BytesIO(storage.read_bytes(path + ".npz"))) as z:
        rows = Experience(**{k: z[k] for k in _SAVED})
      return RoundData(rows, stats, int(stats["kept_global"]))
    rows, stats = self._collect(state, algorithm, phase, r, length)
    arrays = {k: np.asarray(getattr(rows, k)) for k in _SAVED}
    storage.write_atomic(path + ".npz", storage.buffer_of(lambda f: np.savez(f, **arrays)))
    # Written last: marks the round complete.
    storage.write_atomic(path + ".json", json.dumps(stats, indent=1))
    return RoundData(rows, stats, int(stats["kept_global"]))

  def _collect(self, state, algorithm, phase: int, r: int, length: int):
    """Samples `length` steps' worth of episodes and keeps the baseline's rows."""
    t, c, col = self.t, self.t.config, algorithm.collection
    if col.source == "base":
      params = t.base_sampler_params()
    else:
      params = setup_lib.sampler_params(state.params, t.mesh, t.sampler_mesh, t.model_cfg)
    me, nproc = jax.process_index(), jax.process_count()
    # The round's own prompt order, so collecting never moves the main iterator.
    it = iterators.DataIterator(
      list(range(len(t.examples))),
      t.prompts_global,
      c.seed + 1 + 1000 * phase + r,
      process_index=me,
      process_count=nproc,
    )
    key = jax.random.fold_in(jax.random.key(c.seed), 1_000_000 + 1000 * phase + r)
    g = t.rollout_cfg.samples_per_prompt
    eps, problems, rewards = [], [], []
    for j in range(length):
      idx = next(it)
      ep = rollout.run_episodes(
        t.sampler,
        params,
        [t.prompt_ids[i] for i in idx],
        t.instruction,
        t.rollout_cfg,
        jax.random.fold_in(key, j),
        row_offset=me * t.local_prompts * g,
        reserve_instruction_len=len(t.instruction),
        decode=t.tok.decode,
      )
      exs = [t.examples[idx[i]] for i in ep.prompt_index]
      rw, _, _ = tasks.score_attempts(t.pool, t.task, exs, ep.texts)
      eps.append(ep)
      problems.append(np.asarray(idx)[ep.prompt_index])
      rewards.append(rw)
    problems, rewards = np.concatenate(problems), np.concatenate(rewards)
    rows = self._keep(col, eps, problems, rewards, [c.seed, phase, r, me])
    return rows, self._stats(col, rewards, rows.num_rows, length)

  def _keep(self, col, eps, problems, rewards, seed) -> Experience:
    t, multiple = self.t, self.t.config.train.stream_multiple or 1
    if col.keep == "star":
      exp = experience.concat([e.experience for e in eps])
      return sft_data.star_rows(exp, sft_data.star_keep(rewards, col.plus)).compact(multiple)
    pairs = sft_data.pair_responses(problems, rewards, np.random.default_rng(seed), col.plus)
    if not pairs:
      empty = np.zeros((0, multiple), np.int32)
      return Experience(empty, empty, empty.astype(bool), empty, empty.astype(bool))
    tokens = [row for e in eps for row in e.attempt_tokens]
    truncated = np.concatenate([e.truncated for e in eps])
    close = t.rollout_cfg.close_ids
    return sft_data.pair_streams(
      t.prompt_ids, problems, tokens, truncated, pairs, t.instruction, close, multiple
    )

  def _stats(self, col, rewards, kept: int, length: int) -> dict[str, float]:
    r = hosts.allgather(rewards) > 0
    kept_global = int(hosts.allgather(np.array([kept])).sum())
    b = self.t.config.train.global_batch
    stats = {
      "episodes": float(len(r)),
      "kept_global": float(kept_global),
      "acc_t1": float(r[:, 0].mean()),
      "acc_t2": float(r[:, -1].mean()),
      "i2c": float((~r[:, 0] & r[:, -1]).mean()),
      "c2i": float((r[:, 0] & ~r[:, -1]).mean()),
      # How many passes the round's updates make over what was kept (the budget is fixed).
      "epochs": float(length * b / kept_global) if kept_global else 0.0,
    }
    if jax.process_index() == 0:
      what = f"{col.keep}{'+' if col.plus else ''} from the {col.source} model"
      console.say(
        f"collected {int(stats['episodes'])} episodes ({what}): kept {kept_global} rows, "
        f"acc@t1 {stats['acc_t1']:.3f} acc@t2 {stats['acc_t2']:.3f}, "
        f"{stats['epochs']:.2f} epochs over {length} updates"
      )
    return stats
