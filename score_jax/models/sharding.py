"""The decoder's parameters on a mesh: their NamedShardings, and params born sharded."""

from typing import Any

import jax
from jax.sharding import Mesh

from score_jax.models import decoder
from score_jax.models.config import ModelConfig
from score_jax.parallel.mesh import logical_to_sharding, use_rules

PyTree = Any


def param_shardings(config: ModelConfig, mesh: Mesh) -> PyTree:
  """NamedSharding for every parameter leaf of `config`'s decoder."""
  return logical_to_sharding(
    decoder.param_logical_axes(config), decoder.abstract_params(config), mesh
  )


def init_params_sharded(config: ModelConfig, rng: jax.Array, mesh: Mesh) -> PyTree:
  """Initialises parameters born sharded (never materialised whole on one device)."""
  shardings = param_shardings(config, mesh)
  with use_rules(mesh):
    return jax.jit(lambda r: decoder.init_params(config, r), out_shardings=shardings)(rng)
