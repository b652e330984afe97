"""decoder.logits_at_slots: the last layer at chosen slots only equals the full forward there."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax.models import decoder, layers, presets
from tests import numerics
from tests.models.decoder_test import TINY, _batch, _params, _random_params

pytestmark = pytest.mark.numerics


def _slots(rng, mask, k):
  """k slots per row in random order, repeats and left-padding slots included."""
  b, t = mask.shape
  slots = rng.randint(0, t, (b, k)).astype(np.int32)
  slots[:, 0] = slots[:, 1]  # a repeated slot
  slots[0, 2] = 0  # row 0's first slot is padding (it is scored as the full forward scores it)
  return slots


def _assert_slots_match(cfg, params, tokens, pos, mask, slots, segments=None, what=""):
  full, _ = decoder.forward(cfg, params, tokens, pos, mask, segments_bt=segments)
  want = np.take_along_axis(np.asarray(full), slots[:, :, None], axis=1)
  at_slots = jax.jit(decoder.logits_at_slots, static_argnums=0)
  got = at_slots(cfg, params, tokens, pos, mask, jnp.asarray(slots), segments)
  assert got.shape == want.shape and got.dtype == jnp.float32
  bound = numerics.logit_bound(cfg, tokens.shape[1], np.abs(want).max())
  numerics.assert_close(got, want, bound, what=what)


@pytest.mark.parametrize("name", TINY)
def test_logits_at_slots_equal_the_full_forward_there(name):
  cfg = presets.get_preset(name)
  rng = np.random.RandomState(2)
  t = 26  # > 2 * sliding_window: the last layer's window must bind for the subset queries too
  tokens, mask = _batch(rng, [20, 26, 9], t, cfg.vocab_size)
  pos = np.asarray(decoder.default_positions(jnp.asarray(mask)))
  _assert_slots_match(cfg, _params(name), tokens, pos, mask, _slots(rng, mask, 7), what=name)


def test_one_layer_model_and_a_packed_row():
  base = presets.get_preset("tiny-gemma2")
  one = dataclasses.replace(base, num_layers=1, layer_types=base.layer_types[-1:])
  rng = np.random.RandomState(3)
  tokens, mask = _batch(rng, [12, 5], 16, base.vocab_size)
  pos = np.asarray(decoder.default_positions(jnp.asarray(mask)))
  slots = _slots(rng, mask, 5)
  _assert_slots_match(one, _random_params(one), tokens, pos, mask, slots, what="one layer")
  # Two sequences packed in one row: a slot of the second must not see the first.
  segments = np.concatenate([np.full((2, 7), 1), np.full((2, 9), 2)], axis=1) * mask
  pos = np.where(np.arange(16) < 7, np.arange(16), np.arange(16) - 7) * mask
  params = _params("tiny-gemma2")
  _assert_slots_match(base, params, tokens, pos, mask, slots, segments, what="packed row")


def test_gradients_through_the_slots_equal_the_full_forwards():
  cfg = dataclasses.replace(presets.get_preset("tiny-gemma2"), remat_policy="full")
  params = _params("tiny-gemma2")
  rng = np.random.RandomState(4)
  tokens, mask = _batch(rng, [18, 11], 18, cfg.vocab_size)
  pos = np.asarray(decoder.default_positions(jnp.asarray(mask)))
  slots = jnp.asarray(np.sort(rng.choice(np.arange(7, 18), (2, 6)), axis=1).astype(np.int32))

  def full_loss(p):
    logits = decoder.forward(cfg, p, tokens, pos, mask)[0]
    return jnp.mean(jnp.take_along_axis(logits, slots[:, :, None], axis=1) ** 2)

  def slot_loss(p):
    return jnp.mean(decoder.logits_at_slots(cfg, p, tokens, pos, mask, slots) ** 2)

  want = jax.jit(jax.grad(full_loss))(params)
  got = jax.jit(jax.grad(slot_loss))(params)
  levels = numerics.gradient_levels(cfg, 18, slots.size)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    numerics.assert_close_f32(a, b, levels=levels, what=f"grad {jax.tree_util.keystr(path)}")


def test_bad_slots_are_refused_naming_the_shape():
  cfg = presets.get_preset("tiny-llama")
  tokens = jnp.zeros((2, 5), jnp.int32)
  mask = jnp.ones((2, 5), bool)
  with pytest.raises(ValueError, match=r"slots_bk must be \[batch, k\], got \(3, 2\)"):
    decoder.logits_at_slots(cfg, _params("tiny-llama"), tokens, mask, mask, jnp.zeros((3, 2)))


def test_a_query_subset_with_a_cache_is_refused():
  cfg = presets.get_preset("tiny-llama")
  mask = jnp.ones((2, 5), bool)
  ctx = decoder.cache_free_context(decoder.default_positions(mask), mask)
  cache = decoder.init_cache(cfg, 2, 8)
  x = jnp.zeros((2, 5, cfg.embed_dim))
  layer_in = tuple(a[0] for a in decoder.layer_inputs(cfg))
  with pytest.raises(ValueError, match="q_slots_bk .* without a cache"):
    carry = (x, (cache["k"], cache["v"]))
    layers.Block(cfg).init(jax.random.key(0), carry, layer_in, ctx, jnp.zeros((2, 3), jnp.int32))
