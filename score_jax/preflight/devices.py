"""A target's devices without the chips: the compiler's topology description.

TPU: `jax.experimental.topologies.get_topology_desc(platform="tpu")` through libtpu (the `aot`
extra); every device of every host of the slice, with its process index, as a real run sees them.
GPU: the CUDA PJRT plugin's compile-only topology (`1x1x8` = one node of 8) with a written
target description of the chip (`jax[cuda12]`, the `cuda` extra, brings the compiler and
libraries; no GPU needed). The GPU compiler does not refuse a program that does not fit, so
`analysis` compares its peak with the chip's usable memory.
"""

import os

from score_jax.parallel import targets
from score_jax.parallel.targets import Target

# What the GPU compiler needs to know of a chip it cannot see (XLA's GpuTargetConfig text):
# public H100 SXM / H200 figures (132 SMs of compute capability 9.0, 228 KiB shared memory and
# 64K registers per SM, 50 MiB L2) with each one's memory and bandwidth.
_HOPPER = """gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: 132
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {bandwidth}
  l2_cache_size: 52428800
  clock_rate_ghz: 1.755
  device_memory_size: {memory}
  shared_memory_per_block_optin: 232448
  cuda_compute_capability {{
    major: 9
    minor: 0
  }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{
  major: 9
  minor: 8
}}
device_description_str: "{name}"
"""
_GPU_NAMES = {"h100": "NVIDIA H100 80GB HBM3", "h200": "NVIDIA H200"}


def gpu_target_config(target: Target) -> str:
  chip = target.chip
  return _HOPPER.format(
    bandwidth=int(chip.hbm_bandwidth), memory=chip.hbm_bytes, name=_GPU_NAMES[chip.name]
  )


class MissingCompiler(RuntimeError):
  """The extra that brings a target's compiler is not installed."""


def host_devices(target: Target):
  """One host's devices as a one-host topology of the same chips (None for one-host targets).

  Each process compiles its own sampler program over its local devices. The compile-only TPU
  topology refuses a program over a sub-slice of its devices (device ids outside the replica
  groups it expects: a compiler CHECK failure), so the per-host programs are compiled for a
  one-host slice of the same chips and interconnect instead.
  """
  if target.num_hosts == 1:
    return None
  chips = target.chip.chips_per_host
  host = targets.parse(f"{target.chip.name}-{chips * target.chip.cores_per_device}")
  return topology_devices(host)


def topology_devices(target: Target):
  """The target's devices (all hosts), for building meshes and lowering programs."""
  from jax.experimental import topologies  # noqa: PLC0415

  if target.chip.platform == "tpu":
    _quiet_libtpu()
    try:
      import libtpu  # noqa: F401, PLC0415
    except ImportError as err:
      raise MissingCompiler(
        "compiling for TPU needs libtpu: pip install -e '.[aot]' (the default install has none)"
      ) from err
    kw = {"num_slices": target.num_slices} if target.num_slices > 1 else {}
    topo = topologies.get_topology_desc(topology_name=target.topology, platform="tpu", **kw)
    return list(topo.devices)
  try:
    topo = topologies.get_topology_desc(
      platform="cuda", topology=target.topology, target_config=gpu_target_config(target)
    )
  except (RuntimeError, NotImplementedError) as err:  # no CUDA plugin, or its libraries
    raise MissingCompiler(
      f"compiling for {target.name} needs JAX's CUDA plugin and libraries (no GPU needed): "
      f"pip install 'jax[cuda12]==0.10.2' (about 5 GB); got: {str(err).splitlines()[0]}"
    ) from err
  return list(topo.devices)


def _quiet_libtpu() -> None:
  """libtpu probes the GCE metadata of a TPU VM; off one, say so up front instead of warning."""
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-1")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  # Compiling only: no chip is opened, so several preflights (and a run on this host) may load
  # libtpu at once; without this the second one fails on /tmp/libtpu_lockfile.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
