"""Arrays across processes: one process's rows -> a global array, and all processes' rows."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def global_array(local: np.ndarray, mesh: Mesh, spec: P) -> jax.Array:
  """This process's rows of a batch array -> one global array (rows over `spec`)."""
  if jax.process_count() == 1:
    return jax.device_put(local, NamedSharding(mesh, spec))
  return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), local)


def allgather(x: np.ndarray) -> np.ndarray:
  """Concatenates every process's rows of `x` in process order (identity on one process)."""
  if jax.process_count() == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils  # noqa: PLC0415

  out = multihost_utils.process_allgather(np.asarray(x))
  return np.asarray(out).reshape((-1,) + np.shape(x)[1:])
