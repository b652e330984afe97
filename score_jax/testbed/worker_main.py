"""A grid worker process (score_jax.testbed.workers.spawn starts it):

  python -m score_jax.testbed.worker_main DIR INDEX

It loads the grid's config from DIR/workers/config.pkl, logs to DIR/workers/w<INDEX>/log.txt,
starts its own reward pool and runs the grid's units beside the process that started it.
"""

import os
import pickle
import sys

from score_jax import configs
from score_jax.rewards import factory
from score_jax.testbed import config as testbed_config  # noqa: F401 (registers the jobs)
from score_jax.testbed import grid
from score_jax.trainer import console


def main(workdir: str, index: int) -> None:
  with open(os.path.join(workdir, "workers", "config.pkl"), "rb") as f:
    config = pickle.load(f)
  console.setup(os.path.join(workdir, "workers", f"w{index}"), announce=False)
  configs.validate(config)
  with factory.make_pool(config) as pool:
    grid.run(config, workdir, pool=pool, worker=index)


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]))
