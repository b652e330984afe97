"""The reward pool a run's config asks for (`config.train`: workers and per-item timeouts).

Create it before JAX touches a device: its workers are spawned, never forked from an XLA process.
"""

import contextlib

from score_jax.rewards import pool as pool_lib


@contextlib.contextmanager
def reward_pool(config, pool=None):
  """Yields the caller's `pool`, or a fresh one for `config` that is closed on exit."""
  if pool is not None:
    yield pool
    return
  own = make_pool(config)
  try:
    yield own
  finally:
    own.close()


def make_pool(config):
  """The reward pool for `config.train` (spawned workers: create it before JAX uses a device)."""
  t = config.train
  return pool_lib.RewardPool(
    t.reward_workers, math_timeout_s=t.math_timeout_s, code_timeout_s=t.code_timeout_s
  )
