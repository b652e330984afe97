"""The former home of `Task`, `load_task`, `encode_prompts` and `score_attempts`.

Kept so `from score_jax.tasks import tasks as episodes` still works while callers move to the
package's public face (`from score_jax import tasks`); it defines nothing of its own.
"""

from score_jax.tasks.scoring import reward_item, score_attempts
from score_jax.tasks.task import Task, encode_prompts, load_task

__all__ = ["Task", "encode_prompts", "load_task", "reward_item", "score_attempts"]
