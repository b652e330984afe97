"""Shared test helpers (not a test module)."""

import importlib.util
import os
import subprocess
import sys

import jax
import numpy as np

from score_jax.models import decoder


def diverse_params(config, seed=0):
  """Random weights (NumPy, nothing to compile) with layers strong enough to matter.

  At the decoder's init scale the residual stream is dominated by the (tied) input embedding and
  every model just repeats its last token, which would make token-for-token checks vacuous.
  """
  rng = np.random.default_rng(seed)

  def leaf(path, s):
    if "scale" in jax.tree_util.keystr(path):
      std = 2.0
    else:
      std = 0.375 if len(s.shape) >= 3 else config.embed_dim**-0.5
    return (std * rng.standard_normal(s.shape)).astype(s.dtype)

  return jax.tree_util.tree_map_with_path(leaf, decoder.abstract_params(config))


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def experiment_config(name: str, arg: str = "tiny"):
  """experiments/<name>.py's get_config(arg) (experiment files are loaded by path)."""
  path = os.path.join(REPO, "experiments", f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def compilation_cache_env(cache_dir) -> dict[str, str]:
  """Environment variables that give JAX subprocesses one persistent compilation cache: a
  test's runs of the same programs compile them once (every compile cached, however short)."""
  return {
    "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
  }


def one_device_cached_env(cache_dir):
  """Environment of a training subprocess: one device keeps compiles short, and a persistent
  compilation cache shared by the test's runs makes restarts cheap."""
  return dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=1",
    **compilation_cache_env(cache_dir),
  )


def run_main(config: str, workdir, *flags, env=None, timeout: int = 900):
  """`python -m score_jax.main --config=<config> --workdir=<workdir> <flags>` in the repo, as a
  user runs it: one CPU device unless `env` says otherwise (the test's XLA_FLAGS dropped)."""
  if env is None:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  cmd = [sys.executable, "-m", "score_jax.main", f"--config={config}", f"--workdir={workdir}"]
  return subprocess.run(
    [*cmd, *flags], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
  )
