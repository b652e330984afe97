"""Any finished workdir's own config, to evaluate it (or any of its checkpoints) again.

  python -m score_jax.main --config=experiments/from_workdir.py:/tmp/tb/runs/score_seed0 \
      --workdir=/tmp/tb/runs/score_seed0 --config.eval.suite="('attempts','scaling')" \
      [--config.eval.checkpoint=best|latest|<step>]

Reads WORKDIR/config.json (the resolved config every run saves), sets job = evaluate and leaves
everything else as the run had it, so the evaluation sees the run's model, tokenizer, task and
prompts without knowing which experiment file made it. Evaluations already written for the
same checkpoint are skipped. `:tiny` is not meaningful here (the argument is a path); with no
argument it returns the MATH defaults with job = evaluate, for config checks.
"""

import json
import os

import ml_collections

from score_jax import configs
from score_jax.testbed import config as testbed_config  # noqa: F401  (registers the testbed task)


def _tuples(x):
  """JSON lists back to the tuples the config fields hold."""
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  return x


def get_config(arg: str = ""):
  c = configs.base_config()
  if arg and arg != "tiny":
    path = os.path.join(arg, "config.json")
    if not os.path.exists(path):
      raise ValueError(f"experiments/from_workdir.py: {path} does not exist (not a workdir?)")
    with open(path) as f:
      saved = _tuples(json.load(f))
    c = ml_collections.ConfigDict(saved)
  c.job = "evaluate"
  return c
