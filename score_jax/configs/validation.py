"""Up-front validation of a whole config, before any compute.

Owns `validate`: the fields every job reads (job, seed, model), then the job's own hook (see
`score_jax.configs.jobs`), then, given the device count, the mesh and the batch split over it.
Every error is a ConfigError naming the field (`config.optim.lr`) and what was expected.
"""

import ml_collections

from score_jax.configs import jobs
from score_jax.configs.checks import ConfigError, is_int, require
from score_jax.configs.mesh import mesh_shape

DTYPES = ("float32", "bfloat16", "float16")
CHAT_TEMPLATES = ("", "gemma", "chatml", "llama3")


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Checks types, ranges and divisibility up front. Raises ConfigError naming the field."""
  job = _validate_shared(config)
  if job.validate is not None:
    job.validate(config)
  if num_devices is not None:
    data, fsdp, _ = mesh_shape(config, num_devices)
    if config.job == "score":
      b, m = config.train.global_batch, config.train.num_microbatches
      if b % (data * fsdp * m):
        raise ConfigError(
          f"config.train.global_batch = {b}: must be divisible by the mesh's batch shards "
          f"data*fsdp = {data * fsdp} times config.train.num_microbatches = {m} "
          f"(= {data * fsdp * m})."
        )


def _validate_shared(config: ml_collections.ConfigDict) -> jobs.Job:
  """The fields every job reads; returns the registered job `config.job` names."""
  from score_jax.models import presets  # local: keeps config files importable without jax work

  known = f"one of {jobs.job_names()}; {jobs.HOW_TO_REGISTER}"
  require(config, "job", lambda v: jobs.get_job(v) is not None, known)
  require(config, "seed", is_int, "an int")
  preset = require(config, "model.preset", lambda v: isinstance(v, str) and v, "a preset name")
  if preset not in presets.PRESETS:
    raise ConfigError(
      f"config.model.preset = {preset!r}: unknown preset. "
      f"Known: {', '.join(sorted(presets.PRESETS))}."
    )
  for field in ("dtype", "param_dtype"):
    require(config, f"model.{field}", lambda v: v in DTYPES, "float32, bfloat16 or float16")
  require(
    config, "model.chat_template", lambda v: v in CHAT_TEMPLATES, "'', gemma, chatml or llama3"
  )
  return jobs.get_job(config.job)
