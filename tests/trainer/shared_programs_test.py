"""Runs of one process share the sampler and the jitted steps exactly when their settings are
equal (trainer.setup.make_sampler / make_steps): a grid's seeds reuse compiled programs, and a
changed learning rate, objective or bucket gets its own."""

import functools

import ml_collections

from score_jax.trainer import setup as setup_lib
from tests.trainer.train_test import _fast_config


def _pieces_of(c, model_cfg):
  mesh, sampler_mesh = setup_lib.make_meshes(c)  # a new Mesh object each time, equal by value
  steps = setup_lib.make_steps(c, model_cfg, mesh)
  return steps, setup_lib.make_sampler(c, model_cfg, sampler_mesh, 0)


def test_equal_settings_share_programs_and_any_change_does_not(tmp_path):
  c = _fast_config()
  model_cfg = setup_lib.load_base(c, str(tmp_path), setup_lib.make_meshes(c)[0])[0]
  _pieces = functools.partial(_pieces_of, model_cfg=model_cfg)
  steps, sampler = _pieces(c)
  other_seed = ml_collections.ConfigDict(c.to_dict())
  other_seed.seed = c.seed + 1  # a grid's next RL seed: nothing the programs depend on
  assert _pieces(other_seed) == (steps, sampler)
  lr = ml_collections.ConfigDict(c.to_dict())
  lr.optim.lr = 2 * c.optim.lr
  lr_steps, lr_sampler = _pieces(lr)
  assert lr_steps is not steps and lr_sampler is sampler  # the optimizer differs, not the model
  assert lr_steps.optimizer is not steps.optimizer
  kl = ml_collections.ConfigDict(c.to_dict())
  kl.rl.kl_estimator = "k3" if c.rl.kl_estimator != "k3" else "k2"
  assert _pieces(kl)[0] is not steps
  buckets = ml_collections.ConfigDict(c.to_dict())
  buckets.rollout.gen_buckets = (16,)
  buckets.rollout.max_new_tokens = 16
  assert _pieces(buckets)[1] is not sampler
  layouts = {}
  for layout in ("auto", "on", "off"):
    lc = ml_collections.ConfigDict(c.to_dict())
    lc.rollout.decode_layout = layout
    layouts[layout] = _pieces(lc)[1]
  assert layouts["auto"] is sampler and sampler.decode_layout  # these tests run on CPUs
  assert layouts["on"].decode_layout and not layouts["off"].decode_layout
  assert layouts["off"] is not sampler
  per_step = ml_collections.ConfigDict(c.to_dict())
  per_step.rollout.weight_gather = "per_step"
  assert sampler.weight_gather == "per_call" and _pieces(per_step)[1].weight_gather == "per_step"
