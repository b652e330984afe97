"""The device mesh and the ONE logical-to-mesh rules table.

Parameters and key activations carry logical axis names (`vocab`, `embed`, `activation_batch`,
...); `LOGICAL_RULES` maps them onto the mesh axes `data`, `fsdp`, `tensor`. Parameters are
sharded with explicit NamedShardings (`score_jax.models.sharding`); activations resolve through
`nn.with_logical_constraint` inside `use_rules(mesh)`.

Divisibility: a parameter dimension whose size is not divisible by its mesh axes (MQA's single
kv head over tensor=4, SmolLM2's 9 heads) is replicated along that dimension instead of failing.
"""

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

PyTree = Any
MESH_AXES = ("data", "fsdp", "tensor")
# The mesh axes a batch's rows are split over (every batch array's first dimension).
BATCH_AXES = ("data", "fsdp")

# (logical name, mesh axes). Names mapped to None are replicated; every name the model uses is
# listed so a typo is an error rather than silent replication.
LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
  ("batch", ("data", "fsdp")),
  ("vocab", "tensor"),
  ("embed", "fsdp"),
  ("mlp", "tensor"),
  ("q_heads", "tensor"),
  ("kv_heads", "tensor"),
  ("head_dim", None),
  ("layers", None),
  ("norm", None),
  ("activation_batch", ("data", "fsdp")),
  ("activation_length", None),
  ("activation_embed", None),
  ("activation_heads", "tensor"),
  ("activation_kv_heads", None),
  ("activation_head_dim", None),
  ("activation_mlp", "tensor"),
  ("activation_vocab", "tensor"),
)
_RULES = dict(LOGICAL_RULES)


def make_mesh(
  shape: Mapping[str, int] | Sequence[int], devices: Sequence[Any] | None = None
) -> Mesh:
  """Mesh with axes (data, fsdp, tensor); at most one size may be -1 (= the remaining devices).

  Uses the first prod(shape) devices when that product divides the device count.
  """
  if isinstance(shape, Mapping):
    unknown = sorted(set(shape) - set(MESH_AXES))
    if unknown:
      raise ValueError(f"mesh shape has unknown axes {unknown}; axes are {MESH_AXES}")
    sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
  else:
    sizes = [int(s) for s in shape]
    if len(sizes) != len(MESH_AXES):
      raise ValueError(f"mesh shape {tuple(shape)} must have 3 sizes for axes {MESH_AXES}")
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  bad = [f"{a}={s}" for a, s in zip(MESH_AXES, sizes) if s == 0 or s < -1]
  if bad or sizes.count(-1) > 1:
    named = dict(zip(MESH_AXES, sizes))
    raise ValueError(f"mesh sizes must be positive with at most one -1, got {named}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if n % known:
      raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))}: {known} does not divide {n} devices")
    sizes[sizes.index(-1)] = n // known
  total = math.prod(sizes)
  if n % total:
    raise ValueError(
      f"mesh {dict(zip(MESH_AXES, sizes))} needs {total} devices, which does not divide the "
      f"{n} available"
    )
  return jax.make_mesh(
    tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices[:total]
  )


def _mesh_axes_of(name: str | None) -> tuple[str, ...]:
  if name is None:
    return ()
  if name not in _RULES:
    raise ValueError(f"logical axis {name!r} has no rule in sharding.LOGICAL_RULES")
  axes = _RULES[name]
  return () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)


def logical_to_mesh_spec(logical: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
  """Maps one logical PartitionSpec to a mesh PartitionSpec for an array of `shape`.

  A dimension falls back to replicated when its size is not divisible by the product of its
  mesh axes, or when one of those axes already shards an earlier dimension.
  """
  if len(logical) > len(shape):
    raise ValueError(f"logical spec {logical} has more entries than shape {tuple(shape)}")
  used: set[str] = set()
  out = []
  for name, size in zip(logical, shape):
    axes = tuple(a for a in _mesh_axes_of(name) if mesh.shape[a] > 1)
    n = math.prod(mesh.shape[a] for a in axes)
    if not axes or size % n or used & set(axes):
      out.append(None)
    else:
      used |= set(axes)
      out.append(axes[0] if len(axes) == 1 else axes)
  return PartitionSpec(*out)


def logical_to_sharding(logical_tree: PyTree, shapes_tree: PyTree, mesh: Mesh) -> PyTree:
  """Tree of logical PartitionSpecs + tree of arrays/ShapeDtypeStructs -> NamedSharding tree."""
  return jax.tree.map(
    lambda spec, x: NamedSharding(mesh, logical_to_mesh_spec(spec, x.shape, mesh)),
    logical_tree,
    shapes_tree,
    is_leaf=lambda x: isinstance(x, PartitionSpec),
  )


def batch_shards(mesh: Mesh) -> int:
  """How many ways a batch's rows are split: data * fsdp."""
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


@contextlib.contextmanager
def use_rules(mesh: Mesh) -> Iterator[Mesh]:
  """Context in which the model's `with_logical_constraint` calls resolve on `mesh`."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    yield mesh
