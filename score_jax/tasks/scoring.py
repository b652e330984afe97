"""Attempts -> rewards: every attempt of a batch scored as its task's spec says.

Owns `reward_item` (an attempt as a reward-pool item) and `score_attempts` (a batch's rewards,
outcomes and outcome counts). Pool-scored tasks go through the reward pool (process pool,
per-item deadlines); host-checked tasks (reasoning-gym) are scored here, each in microseconds.
A checker that raises is an ERROR outcome, counted and logged, never a silent 0.

Shape letters: b episodes, a attempts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from absl import logging

from score_jax.data import records
from score_jax.rewards.outcome import Outcome
from score_jax.tasks.task import Task


def reward_item(task: Task, example: records.Example, text: str) -> tuple[str, tuple]:
  """The reward pool item of one attempt (pool-scored tasks only)."""
  if task.spec.reward_item is None:
    raise ValueError(f"{task.name}: scored on the host (host_check), not by the reward pool")
  return task.spec.reward_item(example, text)


def _host_outcomes(task: Task, examples_b: Sequence[records.Example], texts_ba) -> np.ndarray:
  outcomes = np.empty((len(texts_ba), len(texts_ba[0])), np.int8)
  for i, (ex, row) in enumerate(zip(examples_b, texts_ba)):
    for j, text in enumerate(row):
      try:
        ok = task.spec.host_check(ex, text)
        outcomes[i, j] = Outcome.CORRECT if ok else Outcome.WRONG
      except Exception as e:  # counted as ERROR by the caller, with the reason in the log
        logging.warning("%s reward of %s attempt %d: ERROR %s", task.name, ex.id, j + 1, e)
        outcomes[i, j] = Outcome.ERROR
  return outcomes


def score_attempts(pool, task: Task, examples_b: Sequence[records.Example], texts_ba):
  """Rewards [b, a] float32, outcomes [b, a] int8 and outcome counts of every attempt."""
  b, a = len(texts_ba), len(texts_ba[0])
  if task.spec.host_check is not None:
    outcomes = _host_outcomes(task, examples_b, texts_ba)
  else:
    items = [reward_item(task, ex, t) for ex, row in zip(examples_b, texts_ba) for t in row]
    outcomes = pool.score(items).outcomes.reshape(b, a)
  rewards = (outcomes == Outcome.CORRECT).astype(np.float32)
  counts = {o.name.lower(): int(np.sum(outcomes == o)) for o in Outcome}
  return rewards, outcomes, counts
