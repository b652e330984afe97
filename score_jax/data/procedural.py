"""Procedurally generated tasks from reasoning-gym (0.1.25), with binary scores.

Owns `load_procedural` and `score`. Families used here: arithmetic ('basic_arithmetic',
'chain_sum', 'products', 'decimal_arithmetic') and algebra ('simple_equations',
'polynomial_equations'); any other reasoning-gym dataset name works too.

Scores are made binary as SCoRe's rewards are: an answer scores 1.0 iff the dataset's own
`score_answer` gives exactly 1.0 (its maximum), else 0.0. reasoning-gym grants partial credit
(e.g. the base scorer gives len(gold)/len(answer) when the gold is a substring of the answer, and
'polynomial_equations' decays with numeric distance); all of that becomes 0. Surrounding
whitespace is stripped first, since the base scorer otherwise gives " 13" half credit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from score_jax.data import records

FAMILIES = {
  "arithmetic": ("basic_arithmetic", "chain_sum", "products", "decimal_arithmetic"),
  "algebra": ("simple_equations", "polynomial_equations"),
}


def _check_task(task: str) -> None:
  from reasoning_gym.factory import DATASETS  # Deferred: importing reasoning_gym takes 1-2 s.

  if task not in DATASETS:
    raise ValueError(
      f"unknown reasoning-gym task {task!r}; suggested: {FAMILIES}; all: {sorted(DATASETS)}"
    )


def load_procedural(task: str, n: int, seed: int, **config: Any) -> list[records.Example]:
  """Generates n problems of a reasoning-gym task, deterministically from seed.

  Args:
    task: reasoning-gym dataset name, e.g. 'chain_sum' or 'simple_equations'.
    n: number of problems.
    seed: generator seed; the same (task, n, seed, config) always gives the same problems.
    **config: the task's own config fields (e.g. min_terms=3 for 'chain_sum').

  Returns:
    Examples with id '<task>/<seed>/<index>', question, answer = gold answer, metadata =
    {task, seed, index, entry: the raw reasoning-gym entry (needed by `score`)}.
  """
  import reasoning_gym

  _check_task(task)
  if n <= 0:
    raise ValueError(f"load_procedural: n must be positive, got {n}")
  dataset = reasoning_gym.create_dataset(task, size=n, seed=seed, **config)
  examples = []
  for index in range(n):
    entry = dataset[index]
    examples.append(
      records.Example(
        id=f"{task}/{seed}/{index}",
        question=entry["question"],
        answer=str(entry["answer"]),
        metadata={"task": task, "seed": seed, "index": index, "entry": entry},
      )
    )
  return examples


@functools.cache
def _scorer(task: str) -> Callable[[str | None, dict], float]:
  from reasoning_gym.factory import get_score_answer_fn

  _check_task(task)
  # Scoring depends only on the entry and the task's reward constants (default config values).
  return get_score_answer_fn(task)


def score(task: str, answer: str | None, entry: records.Example | Mapping[str, Any]) -> float:
  """1.0 if `answer` earns reasoning-gym's full score for `entry`, else 0.0.

  Args:
    task: the reasoning-gym task name the entry came from.
    answer: the model's extracted answer (None when no answer was found: scores 0.0).
    entry: an Example from `load_procedural`, or a raw reasoning-gym entry dict.
  """
  raw = entry.metadata.get("entry") if isinstance(entry, records.Example) else entry
  if not isinstance(raw, Mapping) or "answer" not in raw or "metadata" not in raw:
    raise ValueError(f"score: entry for task {task!r} is not a reasoning-gym entry: {entry!r:.200}")
  source = raw["metadata"].get("source_dataset", task)
  if source != task:
    raise ValueError(f"score: entry comes from task {source!r}, but task {task!r} was given")
  if answer is None:
    return 0.0
  value = _scorer(task)(answer.strip(), dict(raw))
  return 1.0 if value >= 1.0 else 0.0
