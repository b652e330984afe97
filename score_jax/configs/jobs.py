"""The jobs `config.job` can name: each one registered with its module and its own validation.

Owns `Job`, the job registry and the built-in jobs (generate, score, evaluate, repair_set).
`main.py` runs the registered job's module; `validate` runs the job's hook after the shared
fields. A job defined elsewhere registers itself when its module is imported (the experiment
config that selects it imports that module), so nothing here needs to know about it.
"""

import dataclasses
from collections.abc import Callable

import ml_collections

from score_jax.configs import sections


@dataclasses.dataclass(frozen=True)
class Job:
  """One job.

  Attributes:
    name: the value of `config.job`.
    module: the module main.py imports; it has `run(config, workdir)`, plus `pool=` when
      `uses_reward_pool`.
    uses_reward_pool: main.py starts the reward pool (before JAX touches a device) and passes it.
    validate: the checks of the job's own sections, run by `configs.validate` after the shared
      fields; raises ConfigError naming the field.
  """

  name: str
  module: str
  uses_reward_pool: bool = False
  validate: Callable[[ml_collections.ConfigDict], None] | None = None


_JOBS: dict[str, Job] = {}


def register_job(job: Job, replace: bool = False) -> Job:
  """Registers a job under `job.name`; a second registration of a name is an error."""
  if job.name in _JOBS and not replace:
    raise ValueError(f"job {job.name!r} is already registered")
  _JOBS[job.name] = job
  return job


def unregister_job(name: str) -> None:
  """Removes a job; for tests that register throwaway jobs."""
  _JOBS.pop(name, None)


def job_names() -> tuple[str, ...]:
  return tuple(_JOBS)


def get_job(name: str) -> Job | None:
  """The registered job of that name, or None."""
  return _JOBS.get(name) if isinstance(name, str) else None


HOW_TO_REGISTER = (
  "a job outside these registers itself with score_jax.configs.register_job when the module "
  "defining it is imported: import that module from the experiment config"
)

_score = sections.validate_score_sections
register_job(Job("generate", "score_jax.generate", validate=sections.validate_generate_section))
register_job(Job("score", "score_jax.trainer.loop", uses_reward_pool=True, validate=_score))
# The evaluation suite (trainer.suite) on a workdir's checkpoint; one JSON per evaluation.
register_job(Job("evaluate", "score_jax.trainer.suite", uses_reward_pool=True, validate=_score))
# The repair set of the suite's `repair` evaluation: the base model's failing first attempts.
register_job(Job("repair_set", "score_jax.trainer.repair", uses_reward_pool=True, validate=_score))
