"""Optimizer, schedule, and the sharded TrainState."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from score_jax.models import decoder, presets
from score_jax.models import sharding as model_sharding
from score_jax.parallel import mesh as mesh_lib
from score_jax.rl import optim
from tests import numerics

pytestmark = pytest.mark.numerics

CFG = presets.get_preset("tiny-gemma")


def test_schedule_warmup_then_decay():
  const = optim.make_schedule(optim.OptimConfig(learning_rate=1.0, warmup_steps=4))
  # (s + 1) / 4 and min(1, .) of small integers: exact in float32.
  np.testing.assert_array_equal([const(s) for s in (0, 1, 3, 100)], [0.25, 0.5, 1.0, 1.0])
  for decay in ("cosine", "linear"):
    cfg = optim.OptimConfig(
      learning_rate=2.0, warmup_steps=4, decay=decay, total_steps=10, end_lr_ratio=0.1
    )
    lr = optim.make_schedule(cfg)
    # Halfway through the decay both shapes are at (end + 1) / 2 of the peak.
    # About 9 float32 operations and one cos on operands of size <= lr, against decimals.
    numerics.assert_close_f32(
      [lr(3), lr(7), lr(10), lr(50)], [2.0, 1.1, 0.2, 0.2], levels=[numerics.ELEMENTARY] + [1] * 9,
      sides=1, magnitude=2.0, what=f"{decay} schedule",
    )  # fmt: skip
  cos = optim.make_schedule(optim.OptimConfig(1.0, decay="cosine", total_steps=4))
  numerics.assert_close_f32(
    cos(1), 0.5 * (1 + np.cos(np.pi / 4)), levels=[numerics.ELEMENTARY] + [1] * 6, sides=1,
    magnitude=1.0, what="cosine at 1/4",
  )  # fmt: skip


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="OptimConfig.total_steps.*decay='cosine'"):
    optim.OptimConfig(decay="cosine", warmup_steps=5, total_steps=5)
  with pytest.raises(ValueError, match="OptimConfig.decay.*'exponential'"):
    optim.OptimConfig(decay="exponential")
  with pytest.raises(ValueError, match="OptimConfig.learning_rate"):
    optim.OptimConfig(learning_rate=-1.0)
  with pytest.raises(ValueError, match="OptimConfig.max_grad_norm"):
    optim.OptimConfig(max_grad_norm=-1.0)


def _run(opt, params, grads_seq):
  state = opt.init(params)
  for g in grads_seq:
    updates, state = opt.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_optimizer_equals_optax_adamw_with_clipping():
  params = decoder.init_params(CFG, jax.random.key(0))
  keys = jax.random.split(jax.random.key(1), 3)
  grads = [jax.tree.map(lambda p, k=k: 3.0 * jax.random.normal(k, p.shape), params) for k in keys]
  cfg = optim.OptimConfig(learning_rate=1e-2, warmup_steps=2, weight_decay=0.1, max_grad_norm=1.0)
  want_opt = optax.chain(
    optax.clip_by_global_norm(1.0),
    optax.adamw(optim.make_schedule(cfg), weight_decay=0.1, mask=optim.decay_mask),
  )
  got = _run(optim.make_optimizer(cfg), params, grads)
  want = _run(want_opt, params, grads)
  # Exact: the chain is optax.adamw's transforms in the same order, run eagerly on the same
  # gradients, so both sides perform the same float32 operations.
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)
  # The clip binds (|g| >> 1) and decay skips the RMSNorm scales.
  mask = optim.decay_mask(params)
  assert mask["embedder"]["input_embedding"] and mask["layers"]["mlp"]["up_proj"]["kernel"]
  assert not mask["final_norm"]["scale"] and not mask["layers"]["pre_ffw_norm"]["scale"]


def test_train_state_is_born_sharded_like_the_params():
  mesh = mesh_lib.make_mesh((1, 2, 4))
  opt = optim.make_optimizer(optim.OptimConfig(weight_decay=0.1))
  sh = optim.train_state_shardings(CFG, opt, mesh)
  abstract = optim.abstract_train_state(CFG, opt, mesh)
  state = optim.init_train_state(CFG, opt, mesh, jax.random.key(0))
  p_sh = model_sharding.param_shardings(CFG, mesh)
  emb_sh = p_sh["embedder"]["input_embedding"]
  assert emb_sh.spec != jax.sharding.PartitionSpec()  # really sharded
  adam = state.opt_state[1]  # chain: clip, adam, decay, lr
  for moments in (adam.mu, adam.nu):
    got = jax.tree.map(lambda x: x.sharding, moments)
    assert got == p_sh
  assert adam.count.sharding.spec == jax.sharding.PartitionSpec()
  for a, s, x in zip(jax.tree.leaves(abstract), jax.tree.leaves(sh), jax.tree.leaves(state)):
    assert a.shape == x.shape and a.dtype == x.dtype and a.sharding == s == x.sharding
  assert state.step.dtype == jnp.int32 and state.rng.dtype == jnp.uint32
  # From given params (a checkpoint): same params, fresh moments.
  params = jax.device_get(state.params)
  again = optim.init_train_state(CFG, opt, mesh, jax.random.key(0), params=params)
  assert all(  # copies: exact
    np.array_equal(a, b) for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(params))
  )
  assert jax.tree.map(lambda x: x.sharding, again) == sh
