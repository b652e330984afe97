"""Experiment configs: the shared defaults, up-front validation, logging and saving.

Experiment files in `experiments/` start from `base_config()` and override fields; `main.py`
loads them with `config_flags` (locked, so a typo in `--config.x=...` is an error and a value
of the wrong type is refused), then calls `validate` before any compute. Every error names the
field (`config.optim.lr`) and what was expected.
"""

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
from absl import logging

JOBS = ("generate",)
MESH_AXES = ("data", "fsdp", "tensor")


class ConfigError(ValueError):
  """A config field has a value that cannot work; the message names the field."""


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by every experiment. Each field carries a one-line comment."""
  c = ml_collections.ConfigDict()
  c.job = "generate"  # what main runs: one of JOBS
  c.seed = 0  # root PRNG seed; every other key is folded from it

  c.model = ml_collections.ConfigDict()
  c.model.preset = "smollm2-135m-instruct"  # a name from score_jax.models.presets
  c.model.checkpoint = (
    ""  # HF dir/.safetensors, Gemma Flax dir, .gguf, "smollm2-gguf", or "" = random init
  )
  c.model.tokenizer = ""  # tokenizer.model / tokenizer.json; "" = the one inside the checkpoint
  c.model.chat_template = ""  # gemma | chatml | llama3; "" = the preset family's default
  c.model.dtype = "float32"  # compute dtype
  c.model.param_dtype = "float32"  # storage dtype of the parameters
  c.model.remat_policy = "none"  # activation rematerialisation in the scanned layer

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = 1  # pure data-parallel replicas
  c.mesh.fsdp = -1  # parameter/optimizer sharding axis; -1 = all remaining devices
  c.mesh.tensor = 1  # tensor (model) parallel axis

  c.generate = ml_collections.ConfigDict()
  c.generate.prompts = ("What is 12+7?",)  # one chat turn each
  c.generate.system = ""  # system message ("" = the template's default)
  c.generate.max_new_tokens = 64  # per prompt
  c.generate.temperature = 0.0  # 0 = greedy
  c.generate.top_k = 0  # 0 = off
  c.generate.top_p = 1.0  # nucleus mass in (0, 1]

  c.distributed = ml_collections.ConfigDict()
  c.distributed.enabled = False  # call jax.distributed.initialize() (multi-host / multi-process)
  c.distributed.coordinator_address = ""  # host:port; "" = auto-detect (TPU pods, SLURM)
  c.distributed.num_processes = 0  # 0 = auto-detect
  c.distributed.process_id = -1  # -1 = auto-detect
  return c


def _get(config: ml_collections.ConfigDict, path: str) -> Any:
  node = config
  for part in path.split("."):
    node = node[part]
  return node


def _require(config, path: str, ok: Callable[[Any], bool], expected: str) -> Any:
  value = _get(config, path)
  if not ok(value):
    raise ConfigError(f"config.{path} = {value!r}: expected {expected}.")
  return value


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def mesh_shape(config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int, int]:
  """Resolves the (data, fsdp, tensor) mesh sizes, expanding the single -1 wildcard."""
  sizes = [
    _require(
      config, f"mesh.{a}", lambda v: _is_int(v) and (v >= 1 or v == -1), "a positive int or -1"
    )
    for a in MESH_AXES
  ]
  wildcards = [a for a, s in zip(MESH_AXES, sizes) if s == -1]
  if len(wildcards) > 1:
    raise ConfigError(f"config.mesh: at most one axis may be -1, got {', '.join(wildcards)}.")
  fixed = 1
  for s in sizes:
    fixed *= s if s != -1 else 1
  if num_devices % fixed:
    raise ConfigError(
      f"config.mesh = {dict(zip(MESH_AXES, sizes))}: the fixed axes' product {fixed} does not divide the {num_devices} devices."
    )
  sizes = [num_devices // fixed if s == -1 else s for s in sizes]
  if sizes[0] * sizes[1] * sizes[2] != num_devices:
    raise ConfigError(
      f"config.mesh = {dict(zip(MESH_AXES, sizes))}: product must equal the {num_devices} devices."
    )
  return tuple(sizes)


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Checks types, ranges and divisibility up front. Raises ConfigError naming the field."""
  from score_jax.models import presets  # local: keeps config files importable without jax work

  _require(config, "job", lambda v: v in JOBS, f"one of {JOBS}")
  _require(config, "seed", _is_int, "an int")
  preset = _require(config, "model.preset", lambda v: isinstance(v, str) and v, "a preset name")
  if preset not in presets.PRESETS:
    raise ConfigError(
      f"config.model.preset = {preset!r}: unknown preset. Known: {', '.join(sorted(presets.PRESETS))}."
    )
  for field in ("dtype", "param_dtype"):
    _require(
      config,
      f"model.{field}",
      lambda v: v in ("float32", "bfloat16", "float16"),
      "float32, bfloat16 or float16",
    )
  _require(
    config,
    "model.chat_template",
    lambda v: v in ("", "gemma", "chatml", "llama3"),
    "'', gemma, chatml or llama3",
  )
  if config.job == "generate":
    prompts = _require(
      config,
      "generate.prompts",
      lambda v: isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0,
      "a non-empty tuple of strings",
    )
    for i, p in enumerate(prompts):
      if not isinstance(p, str) or not p.strip():
        raise ConfigError(f"config.generate.prompts[{i}] = {p!r}: expected a non-empty string.")
    _require(config, "generate.max_new_tokens", lambda v: _is_int(v) and v >= 1, "an int >= 1")
    _require(config, "generate.temperature", lambda v: _is_number(v) and v >= 0, "a number >= 0")
    _require(config, "generate.top_k", lambda v: _is_int(v) and v >= 0, "an int >= 0")
    _require(config, "generate.top_p", lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]")
  if num_devices is not None:
    mesh_shape(config, num_devices)


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
