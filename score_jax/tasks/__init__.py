"""Tasks: what the trainer samples and how attempts are rewarded, one registered entry each.

  from score_jax import tasks
  task = tasks.load_task("math", "train")
  examples, prompt_ids = tasks.encode_prompts(task, tok, template, system, max_len)
  rewards, outcomes, counts = tasks.score_attempts(pool, task, examples, texts)

A new task registers a `TaskSpec` with `tasks.register` (or a `<prefix>:<variant>` family with
`tasks.register_family`) from its own module; importing this package registers the built-ins
(math, mbpp, humaneval, procedural:<reasoning-gym task>).
"""

from score_jax.tasks import builtin  # noqa: F401  (registers the built-in tasks)
from score_jax.tasks.registry import (
  KINDS,
  TaskSpec,
  UnknownTaskError,
  get_spec,
  is_registered,
  register,
  register_family,
  registered_names,
  unregister,
)
from score_jax.tasks.scoring import reward_item, score_attempts
from score_jax.tasks.task import Task, encode_prompts, load_task

__all__ = [
  "KINDS",
  "Task",
  "TaskSpec",
  "UnknownTaskError",
  "encode_prompts",
  "get_spec",
  "is_registered",
  "load_task",
  "register",
  "register_family",
  "registered_names",
  "reward_item",
  "score_attempts",
  "unregister",
]
