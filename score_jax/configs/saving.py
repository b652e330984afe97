"""A run's resolved config, logged and written next to its outputs."""

import json
import os

import ml_collections
from absl import logging

from score_jax import storage


def save(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Logs the resolved config and writes it to `workdir/config.json` (and .txt, human-readable)."""
  storage.makedirs(workdir)
  logging.info("Resolved config:\n%s", config)
  path = os.path.join(workdir, "config.json")
  # Atomic: a killed run never leaves half a config.
  storage.write_atomic(path, json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str))
  storage.write_atomic(os.path.join(workdir, "config.txt"), str(config))
  return path
