"""Experiment configs: shared defaults, up-front validation, the job registry and saving.

  from score_jax import configs
  c = configs.base_config()            # experiments/<name>.py override its fields
  configs.validate(c, num_devices=8)   # raises configs.ConfigError naming the field
  configs.save(c, workdir)

A job defined outside the built-ins (generate, score, evaluate) registers a `configs.Job` with
`configs.register_job`, naming its module and the validation of its own sections; the helpers
`require`, `is_int`, `is_number` and `validate_score_sections` are for such hooks.
"""

from score_jax.configs.checks import ConfigError, is_int, is_number, positive_ints, require
from score_jax.configs.defaults import base_config
from score_jax.configs.jobs import Job, get_job, job_names, register_job, unregister_job
from score_jax.configs.mesh import MESH_AXES, mesh_shape
from score_jax.configs.saving import save
from score_jax.configs.sections import (
  DECODE_LAYOUTS,
  NONFINITE,
  SCHEDULES,
  WEIGHT_GATHERS,
  check_task,
  validate_generate_section,
  validate_score_sections,
)
from score_jax.configs.validation import validate

__all__ = [
  "DECODE_LAYOUTS",
  "MESH_AXES",
  "NONFINITE",
  "SCHEDULES",
  "WEIGHT_GATHERS",
  "ConfigError",
  "Job",
  "base_config",
  "check_task",
  "get_job",
  "is_int",
  "is_number",
  "job_names",
  "mesh_shape",
  "positive_ints",
  "register_job",
  "require",
  "save",
  "unregister_job",
  "validate",
  "validate_generate_section",
  "validate_score_sections",
]
