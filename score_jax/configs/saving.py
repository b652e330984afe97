"""A run's resolved config, logged and written next to its outputs."""

import json
import os

import ml_collections
from absl import logging


def save(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Logs the resolved config and writes it to `workdir/config.json` (and .txt, human-readable)."""
  os.makedirs(workdir, exist_ok=True)
  logging.info("Resolved config:\n%s", config)
  path = os.path.join(workdir, "config.json")
  with open(path + ".tmp", "w") as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=str)
  os.replace(path + ".tmp", path)  # atomic: a killed run never leaves half a config
  with open(os.path.join(workdir, "config.txt"), "w") as f:
    f.write(str(config))
  return path
