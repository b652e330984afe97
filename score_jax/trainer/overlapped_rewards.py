"""Reward checking overlapped with sampling: each attempt is scored while the device samples on.

`OverlappedScorer` is the `rollout.AttemptSink` of one training step. The sampler hands it an
attempt's texts as soon as they reach the host; it scores them (reward pool or host check) at
the next moment the device is busy: while the next turn decodes, or while the next call of a
chunked step (`rollout.prompts_per_call`) prefills and decodes. `finish` scores what is left:
the step's last attempt and any episodes the sampler did not pass (Stage II's base-model
continuations), which is all the reward time left on the step's critical path.
"""

import time
from collections.abc import Sequence

import numpy as np

from score_jax.data import records
from score_jax.rewards.outcome import Outcome
from score_jax.tasks import scoring
from score_jax.tasks.task import Task

UNSCORED = -1


class OverlappedScorer:
  """Outcomes [episodes, attempts] of one step, filled attempt by attempt as they finish."""

  def __init__(self, pool, task: Task, examples: Sequence[records.Example], num_attempts: int):
    """examples: one per episode row, in the sampler's row order."""
    self.pool, self.task, self.examples = pool, task, list(examples)
    self.outcomes = np.full((len(self.examples), num_attempts), UNSCORED, np.int8)
    self.queue: list[tuple[np.ndarray, int, list[str]]] = []
    self.overlapped_s = 0.0  # scoring time spent while the device was busy

  def attempt_done(self, rows: np.ndarray, attempt: int, texts: list[str]) -> None:
    self.queue.append((np.asarray(rows), attempt, texts))

  def device_busy(self) -> None:
    t0 = time.perf_counter()
    self._drain()
    self.overlapped_s += time.perf_counter() - t0

  def _drain(self) -> None:
    while self.queue:
      rows, attempt, texts = self.queue.pop(0)
      self._score(rows, attempt - 1, texts)

  def _score(self, rows: np.ndarray, col: int, texts: Sequence[str]) -> None:
    examples = [self.examples[r] for r in rows]
    _, outcomes, _ = scoring.score_attempts(self.pool, self.task, examples, [[t] for t in texts])
    self.outcomes[rows, col] = outcomes[:, 0]

  def finish(self, examples_b: Sequence[records.Example], texts_ba: Sequence[Sequence[str]]):
    """(rewards [b, a] float32, outcomes [b, a] int8, outcome counts) of the whole step.

    examples_b, texts_ba: every episode's example and attempts as sampled (from
    `Episodes.prompt_index` and `Episodes.texts`): the rows the sink scored must be these.
    """
    if [ex.id for ex in examples_b] != [ex.id for ex in self.examples]:
      raise ValueError("the sampled episodes' rows do not follow the examples the scorer got")
    self._drain()
    for col in range(self.outcomes.shape[1]):
      rows = np.flatnonzero(self.outcomes[:, col] == UNSCORED)
      if rows.size:
        self._score(rows, col, [texts_ba[r][col] for r in rows])
    rewards = (self.outcomes == Outcome.CORRECT).astype(np.float32)
    counts = {o.name.lower(): int(np.sum(self.outcomes == o)) for o in Outcome}
    return rewards, self.outcomes, counts
