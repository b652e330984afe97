"""The device mesh a config asks for: (data, fsdp, tensor) sizes with one -1 wildcard resolved."""

import ml_collections

from score_jax.configs.checks import ConfigError, is_int, require

MESH_AXES = ("data", "fsdp", "tensor")


def mesh_shape(config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int, int]:
  """Resolves the (data, fsdp, tensor) mesh sizes, expanding the single -1 wildcard."""
  sizes = [
    require(
      config, f"mesh.{a}", lambda v: is_int(v) and (v >= 1 or v == -1), "a positive int or -1"
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
      f"config.mesh = {dict(zip(MESH_AXES, sizes))}: the fixed axes' product {fixed} does not "
      f"divide the {num_devices} devices."
    )
  sizes = [num_devices // fixed if s == -1 else s for s in sizes]
  if sizes[0] * sizes[1] * sizes[2] != num_devices:
    raise ConfigError(
      f"config.mesh = {dict(zip(MESH_AXES, sizes))}: product must equal the {num_devices} devices."
    )
  return tuple(sizes)
