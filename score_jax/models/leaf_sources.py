"""Our parameter tree from a checkpoint's tensors, shared by every importer (HF, Gemma Flax, GGUF).

Owns `LeafSource` (where one leaf of the tree comes from), `build_params` (the tree built one
layer tensor at a time, validated first, optionally straight into its mesh shardings) and
`to_host` (a leaf gathered back for export).
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from score_jax.models import decoder
from score_jax.models import sharding as model_sharding
from score_jax.models.checkpoint_errors import CheckpointError, check_keys, check_shape
from score_jax.models.config import ModelConfig

PyTree = Any
GetTensor = Callable[[str], np.ndarray]


@dataclasses.dataclass(frozen=True)
class LeafSource:
  """Where one parameter leaf comes from: one source tensor per layer (or one, unstacked).

  to_ours maps a source tensor (shape src_shape) to our per-layer leaf shape; to_source is its
  inverse (None when the leaf cannot be exported on its own, e.g. a fused Flax qkv tensor).
  """

  path: tuple[str, ...]
  keys: tuple[str, ...]
  src_shape: tuple[int, ...]
  to_ours: Callable[[np.ndarray], np.ndarray]
  to_source: Callable[[np.ndarray], np.ndarray] | None = None
  stacked: bool = True


def source_shapes(sources: Sequence[LeafSource]) -> dict[str, tuple[int, ...]]:
  """Every source key with its expected shape (keys shared by several leaves appear once)."""
  return {key: tuple(s.src_shape) for s in sources for key in s.keys}


def _subtree(tree: Any, path: tuple[str, ...]) -> Any:
  for name in path:
    tree = tree[name]
  return tree


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def _norm_index(index: tuple[slice, ...], shape: tuple[int, ...]) -> tuple:
  return tuple(s.indices(n) for s, n in zip(index, shape))


def _check_coverage(abstract: PyTree, sources: Sequence[LeafSource]) -> None:
  covered = {s.path for s in sources}
  wanted = {
    tuple(getattr(p, "key", p) for p in path)
    for path, _ in jax.tree_util.tree_leaves_with_path(abstract)
  }
  if covered != wanted:  # a mapping bug, not a user error: say exactly which leaves
    raise CheckpointError(f"mapping covers {sorted(covered ^ wanted)} inconsistently with the tree")


def _sharded_leaf(
  src: LeafSource,
  shape: tuple[int, ...],
  shard: jax.sharding.Sharding,
  layer_value: Callable[[int], np.ndarray],
  dtype: np.dtype,
) -> jax.Array:
  """One leaf born in `shard`: only this process's device slices are ever held in memory."""
  indices = {
    _norm_index(idx, shape): idx for idx in shard.addressable_devices_indices_map(shape).values()
  }
  if src.stacked:  # layer by layer: each layer tensor is read once for all local shards
    bufs = {key: np.empty([len(range(*r)) for r in key], dtype) for key in indices}
    for i in range(len(src.keys)):
      rows = {key: range(*key[0]) for key in indices}
      if not any(i in r for r in rows.values()):
        continue
      x = layer_value(i)
      for key, idx in indices.items():
        if i in rows[key]:
          bufs[key][rows[key].index(i)] = x[idx[1:]]
  else:
    x = layer_value(0)
    bufs = {key: np.ascontiguousarray(x[idx]) for key, idx in indices.items()}
  return jax.make_array_from_callback(shape, shard, lambda idx: bufs[_norm_index(idx, shape)])


def build_params(
  config: ModelConfig,
  sources: Sequence[LeafSource],
  get_tensor: GetTensor,
  mesh: jax.sharding.Mesh | None = None,
  *,
  available: Mapping[str, tuple[int, ...]] | None = None,
  ignore: Callable[[str], bool] = lambda key: False,
  source: str = "checkpoint",
) -> PyTree:
  """Builds the parameter tree from per-layer source tensors, validated first.

  With `available` (every key the checkpoint holds -> shape) missing/unexpected/misshaped
  tensors fail before anything is read; without it each tensor's shape is checked as read.
  With a mesh every leaf is born in its `model_sharding.param_shardings` sharding: each layer tensor
  is read once and only the slices of this process's devices are kept (never the whole model).
  """
  expected = source_shapes(sources)
  if available is not None:
    check_keys(expected, available, source, ignore=ignore)
  abstract = decoder.abstract_params(config)
  shardings = model_sharding.param_shardings(config, mesh) if mesh is not None else None
  dtype = np.dtype(config.params_dtype)
  _check_coverage(abstract, sources)

  def read(key: str) -> np.ndarray:
    try:
      x = np.asarray(get_tensor(key))
    except KeyError as e:
      raise CheckpointError(f"{source}: 1 missing tensor(s): {key}") from e
    check_shape(key, expected[key], x.shape, source)
    return x

  params: dict = {}
  for src in sources:
    shape = tuple(_subtree(abstract, src.path).shape)

    def layer_value(i, src=src, shape=shape):
      x = src.to_ours(read(src.keys[i])).astype(dtype)
      want = shape[1:] if src.stacked else shape
      if x.shape != want:
        raise CheckpointError(
          f"{source}: {src.keys[i]} maps to {x.shape}, leaf {src.path} needs {want}"
        )
      return x

    if shardings is not None:
      value = _sharded_leaf(src, shape, _subtree(shardings, src.path), layer_value, dtype)
    elif src.stacked:
      value = jnp.asarray(np.stack([layer_value(i) for i in range(len(src.keys))]))
    else:
      value = jnp.asarray(layer_value(0))
    _set(params, src.path, value)
  return params


def to_host(x) -> np.ndarray:
  """A (possibly multi-host sharded) array gathered into one host numpy array."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils

    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x))
