"""Cacheless attention in causal query blocks (ModelConfig.attn_query_block) computes what one
block computes: logits and gradients of real tokens, packed rows, sliding windows."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from score_jax import configs
from score_jax.models import decoder, layers, presets
from score_jax.trainer import method_runs
from score_jax.trainer import setup as setup_lib
from tests import numerics

# A global-attention family with GQA, one with sliding-window layers and soft-caps, one with
# QK-norm and a 4-layer local/global pattern: every mask term meets a block boundary.
NAMES = ("tiny-llama", "tiny-gemma2", "tiny-gemma3")
T = 29  # blocks of 8 leave a ragged last block of 5


def test_query_blocks_cover_the_row_once():
  assert layers.query_blocks(96, 32) == [(0, 32), (32, 64), (64, 96)]
  assert layers.query_blocks(29, 8) == [(0, 8), (8, 16), (16, 24), (24, 29)]
  assert layers.query_blocks(32, 32) == [(0, 32)]  # fits in one block
  assert layers.query_blocks(96, 0) == [(0, 96)]  # 0 = off
  # Long rows: at most MAX_QUERY_BLOCKS blocks, which grow instead.
  long = layers.query_blocks(4096, 32)
  assert len(long) == layers.MAX_QUERY_BLOCKS and long[0] == (0, 256) and long[-1][1] == 4096
  for t, size in ((1000, 32), (33, 32), (7, 2)):
    blocks = layers.query_blocks(t, size)
    assert blocks[0][0] == 0 and blocks[-1][1] == t
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))


def _params(cfg):
  params = decoder.init_params(cfg, jax.random.key(0))
  # Random norm scales too, so that no layer is close to an identity map.
  keys = iter(jax.random.split(jax.random.key(1), 64))
  return jax.tree.map(lambda x: x + 0.3 * jax.random.normal(next(keys), x.shape, x.dtype), params)


def _left_padded(cfg, rng):
  tokens = rng.integers(0, cfg.vocab_size, (3, T)).astype(np.int32)
  mask = np.ones((3, T), bool)
  mask[1, :11] = False  # left padding across the first block boundary
  mask[2, :3] = False
  mask[0, 17] = False  # a finished-row gap inside a block
  return tokens, mask


@pytest.mark.numerics
@pytest.mark.parametrize("name", NAMES)
def test_blocks_give_one_blocks_logits_and_gradients(name):
  one = presets.get_preset(name, attn_query_block=0)
  blocked = dataclasses.replace(one, attn_query_block=8)
  params = _params(one)
  tokens, mask = _left_padded(one, np.random.default_rng(0))
  positions = decoder.default_positions(jnp.asarray(mask))

  def loss(cfg, p):  # real tokens only: a padding query's output is not defined
    logits, _ = decoder.forward(cfg, p, tokens, positions, mask)
    return jnp.sum(jnp.where(mask[..., None], jax.nn.log_softmax(logits), 0.0)[..., 0])

  run = lambda cfg: jax.jit(
    lambda p: (
      decoder.forward(cfg, p, tokens, positions, mask)[0],
      jax.grad(lambda q: loss(cfg, q))(p),
    )
  )(params)
  (ref, ref_grad), (got, grad) = run(one), run(blocked)
  ref = np.asarray(ref)
  bound = numerics.logit_bound(one, T, np.abs(ref[mask]).max())
  numerics.assert_close(got, ref, bound, where=mask, what=f"{name} blocked vs one-block logits")
  levels = numerics.gradient_levels(one, T, int(mask.sum()))
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grad), jax.tree.leaves(ref_grad)):
    numerics.assert_close_f32(a, b, levels=levels, what=f"{name} grad {jax.tree_util.keystr(path)}")


@pytest.mark.numerics
def test_blocks_keep_packed_segments_apart():
  cfg = presets.get_preset("tiny-gemma3", attn_query_block=8)
  params = _params(cfg)
  rng = np.random.default_rng(1)
  a, b = rng.integers(3, cfg.vocab_size, 13), rng.integers(3, cfg.vocab_size, 14)
  tokens = np.concatenate([a, b, [0, 0]])[None]  # segment 2 starts inside the second block
  positions = np.concatenate([np.arange(13), np.arange(14), [0, 0]])[None]
  segments = np.concatenate([np.full(13, 1), np.full(14, 2), [0, 0]])[None]
  packed, _ = decoder.forward(cfg, params, tokens, positions, segments > 0, segments_bt=segments)
  alone_b, _ = decoder.forward(cfg, params, b[None])
  packed, alone_b = np.asarray(packed[0]), np.asarray(alone_b[0])
  bound = numerics.logit_bound(cfg, T, np.abs(packed[:27]).max())
  numerics.assert_close(packed[13:27], alone_b, bound, what="blocked packed segment 2")
  leaky, _ = decoder.forward(cfg, params, tokens, positions, segments > 0)
  numerics.assert_exceeds(leaky[0, 13:27], alone_b, bound, what="blocks without segment ids")


def test_config_field_is_validated_and_resolved():
  with pytest.raises(ValueError, match="ModelConfig.attn_query_block: must be an int >= 0"):
    presets.get_preset("tiny-llama", attn_query_block=-2)
  assert presets.get_preset("tiny-llama").attn_query_block == 32
  assert presets.get_preset("testbed-gemma").attn_query_block == 0  # frozen figures' numerics
  c = configs.base_config()
  for preset, value, want in (
    ("tiny-llama", -1, 32),
    ("testbed-gemma", -1, 0),
    ("tiny-llama", 0, 0),
  ):
    c.model.preset, c.model.attn_query_block = preset, value
    assert setup_lib.model_overrides(c.model)["attn_query_block"] == want
  c.model.attn_query_block = -3
  with pytest.raises(configs.ConfigError, match=r"config.model.attn_query_block = -3"):
    configs.validate(c)


def test_workdirs_written_before_the_field_keep_their_cache(tmp_path):
  c = ml_collections.ConfigDict({"model": {"preset": "testbed-gemma", "attn_query_block": -1}})
  old = {"model": {"preset": "testbed-gemma"}}  # a config.json from before the field existed
  (tmp_path / "rl_config.json").write_text(json.dumps(old))
  method_runs.check_workdir_config(c, str(tmp_path), "rl", ())
  c.model.attn_query_block = 16  # a different choice is another config
  (tmp_path / "rl_config.json").write_text(json.dumps(old))
  with pytest.raises(configs.ConfigError, match="model.attn_query_block"):
    method_runs.check_workdir_config(c, str(tmp_path), "rl", ())
