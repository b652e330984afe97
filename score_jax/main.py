"""The one absl entry point.

  python -m score_jax.main --config=experiments/<name>.py[:arg] --workdir=DIR [--config.f=v ...]

Loads the (locked) experiment config, validates it before any compute (the job's own sections
too: `config.job` names a job registered with `score_jax.configs.register_job`, built-in or
registered by a module the experiment config imports, with its own sections' validation),
starts the reward pool (before JAX touches a device: its workers are spawned,
never forked from an XLA process), starts multi-process JAX when configured, saves the resolved
config to the workdir and runs the job. Library logs go to DIR/log.txt, not the terminal.
"""

import contextlib
import importlib

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from score_jax import configs
from score_jax.parallel import platforms
from score_jax.rewards import factory
from score_jax.trainer import console

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file: experiments/<name>.py[:arg].", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Outputs, checkpoints and metrics; a rerun resumes."
)


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
  platforms.skip_absent_tpu()
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required: experiments/<name>.py[:arg].")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required.")
  # Library chatter (absl INFO, Orbax, JAX) goes to DIR/log.txt; the terminal keeps progress,
  # results and warnings (--verbosity=1 or --alsologtostderr bring everything back).
  console.setup(_WORKDIR.value)
  configs.validate(config)  # types and ranges first: before any device is touched
  job = configs.get_job(config.job)  # registered: validate checked it, its own sections too
  module = importlib.import_module(job.module)
  pooled = job.uses_reward_pool
  pool = factory.make_pool(config) if pooled else None
  with pool or contextlib.nullcontext():
    if config.distributed.enabled:
      _init_distributed(config)
      console.setup(_WORKDIR.value, process_index=jax.process_index(), announce=False)
    configs.validate(config, num_devices=jax.device_count())
    logging.info(
      "JAX process %d/%d, %d devices", jax.process_index(), jax.process_count(), jax.device_count()
    )
    if jax.process_index() == 0:
      configs.save(config, _WORKDIR.value)
    module.run(config, _WORKDIR.value, **({"pool": pool} if pooled else {}))


if __name__ == "__main__":
  app.run(main)
