"""Keeping JAX off a TPU runtime that cannot start: libtpu installed, no TPU chips here.

The `aot` and `test` extras install libtpu so the preflight can compile for TPUs on any
machine. JAX then tries to start the TPU runtime on every run, which on a laptop or CI box
costs a second and prints alarming errors before falling back to the CPU. When this host has no
TPU chips and no CUDA plugin is installed, the CPU is the only backend there can be, so say so.
"""

import importlib.util
import os


def _installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:  # a missing parent package
    return False


def skip_absent_tpu() -> None:
  """Sets JAX_PLATFORMS=cpu when libtpu is installed but neither TPU chips nor a CUDA plugin
  are present. Call before the first JAX computation; an explicit JAX_PLATFORMS wins."""
  if os.environ.get("JAX_PLATFORMS") or not _installed("libtpu"):
    return
  if _installed("jax_plugins.xla_cuda12") or _installed("jax_cuda12_plugin"):
    return
  from jax._src import hardware_utils  # noqa: PLC0415  (imports nothing that starts a backend)

  chips, _ = hardware_utils.num_available_tpu_chips_and_device_id()
  if not chips:
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax  # noqa: PLC0415

    jax.config.update("jax_platforms", "cpu")
