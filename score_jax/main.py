"""The one absl entry point.

  python -m score_jax.main --config=experiments/<name>.py[:arg] --workdir=DIR [--config.f=v ...]

Loads the (locked) experiment config, validates it before any compute, starts the reward pool
(before JAX touches a device: its workers are spawned, never forked from an XLA process), starts
multi-process JAX when configured, saves the resolved config to the workdir and runs the job.
"""

import contextlib
import importlib

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from score_jax.configs import config_lib
from score_jax.rewards import factory

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file: experiments/<name>.py[:arg].", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Outputs, checkpoints and metrics; a rerun resumes."
)

# job name -> module with `run(config, workdir)`.
_JOBS = {
  "generate": "score_jax.generate",
  "score": "score_jax.trainer.loop",
  "evaluate": "score_jax.trainer.evaluate",
  "testbed": "score_jax.testbed.pipeline",
}
_POOL_JOBS = ("score", "evaluate", "testbed")


def _init_distributed(config) -> None:
  d = config.distributed
  if d.cpu_collectives:  # CPU processes need a collectives backend for cross-process reductions
    jax.config.update("jax_cpu_collectives_implementation", d.cpu_collectives)
  kwargs = {}
  if d.coordinator_address:
    kwargs["coordinator_address"] = d.coordinator_address
  if d.num_processes:
    kwargs["num_processes"] = d.num_processes
  if d.process_id >= 0:
    kwargs["process_id"] = d.process_id
  jax.distributed.initialize(**kwargs)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required: experiments/<name>.py[:arg].")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required.")
  config_lib.validate(config)  # types and ranges first: before any device is touched
  job = importlib.import_module(_JOBS[config.job])
  pooled = config.job in _POOL_JOBS
  pool = factory.make_pool(config) if pooled else None
  with pool or contextlib.nullcontext():
    if config.distributed.enabled:
      _init_distributed(config)
    config_lib.validate(config, num_devices=jax.device_count())
    logging.info(
      "JAX process %d/%d, %d devices", jax.process_index(), jax.process_count(), jax.device_count()
    )
    if jax.process_index() == 0:
      config_lib.save(config, _WORKDIR.value)
    job.run(config, _WORKDIR.value, **({"pool": pool} if pooled else {}))


if __name__ == "__main__":
  app.run(main)
