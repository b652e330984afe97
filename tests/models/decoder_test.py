"""Tests for the decoder: parameter tree, KV-cache exactness, windows, RoPE, dtypes, errors."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from score_jax.models import decoder, layers, layerwise_decode, presets
from tests import numerics

pytestmark = pytest.mark.numerics

TINY = ("tiny-gemma", "tiny-gemma2", "tiny-gemma3", "tiny-llama", "tiny-qwen2", "tiny-mistral")


def _random_params(cfg, seed=0):
  """Host-side random parameters (no init compile): fan-in scaled kernels, random norms/biases.

  Norm scales and biases are random too, so a wrong norm convention or bias layout shows up.
  """
  rng = np.random.RandomState(seed)

  def leaf(path, x):
    keys = [p.key for p in path]
    if keys[-1] in ("scale", "bias"):
      base = 0.0 if keys[-1] == "bias" or cfg.norm_plus_one else 1.0
      return (base + 0.1 * rng.randn(*x.shape)).astype(np.float32)
    in_dims = {"input_embedding": (1,), "o_proj": (1, 2)}.get(keys[-2], (0,))
    dims = x.shape[1:] if keys[0] == "layers" else x.shape
    fan_in = np.prod([dims[i] for i in in_dims])
    return (rng.randn(*x.shape) * fan_in**-0.5).astype(np.float32)

  return jax.tree_util.tree_map_with_path(leaf, decoder.abstract_params(cfg))


@functools.cache
def _params(name: str):
  return _random_params(presets.get_preset(name))


def _fwd(cfg):
  return jax.jit(functools.partial(decoder.forward, cfg))


def _batch(rng, lengths, t, vocab):
  """Left-padded tokens/mask of rows with the given real lengths, plus one interior gap."""
  tokens = rng.randint(0, vocab, (len(lengths), t)).astype(np.int32)
  mask = np.zeros((len(lengths), t), bool)
  for i, n in enumerate(lengths):
    mask[i, t - n :] = True
  mask[0, t - 3] = False  # a row that skipped a step mid-stream (finished-row padding)
  return tokens, mask


@pytest.mark.parametrize("name", TINY)
def test_cache_prefill_decode_and_chunk_match_full_forward(name):
  cfg = presets.get_preset(name)
  params = _params(name)
  t = 26  # > 2 * sliding_window (8): local layers must drop old keys from the cache too
  tokens, mask = _batch(np.random.RandomState(1), [20, 26, 9], t, cfg.vocab_size)
  pos = np.asarray(decoder.default_positions(jnp.asarray(mask)))
  fwd = _fwd(cfg)
  full, none = fwd(params, tokens, pos, mask)
  assert none is None and full.dtype == jnp.float32 and full.shape == (3, t, cfg.vocab_size)

  cache = decoder.init_cache(cfg, 3, 32)
  pieces = []
  out, cache = fwd(params, tokens[:, :8], pos[:, :8], mask[:, :8], cache)
  pieces.append(out)
  for i in range(8, 18):  # one token at a time
    out, cache = fwd(params, tokens[:, i : i + 1], pos[:, i : i + 1], mask[:, i : i + 1], cache)
    pieces.append(out)
  out, cache = fwd(params, tokens[:, 18:], pos[:, 18:], mask[:, 18:], cache)  # chunk (turn 2)
  pieces.append(out)
  got = np.concatenate(pieces, axis=1)
  assert int(cache["index"]) == t
  np.testing.assert_array_equal(np.asarray(cache["valid"][:, :t]), mask)  # copies: exact
  np.testing.assert_array_equal(np.asarray(cache["positions"][:, :t]), pos)
  # Only real tokens' logits are defined; padding rows attend to nothing real. The cache
  # holds 32 slots, the full forward t: both reduce over at most 32 keys.
  full = np.asarray(full)
  bound = numerics.logit_bound(cfg, 32, np.abs(full[mask]).max())
  numerics.assert_close(got, full, bound, where=mask, what=f"{name} cached vs full logits")


@pytest.mark.parametrize("attention", ["reduce", "dots"])
@pytest.mark.parametrize("name", TINY)
def test_decode_layout_steps_match_full_forward(name, attention, monkeypatch):
  """The sampler's decode layout (per-layer params, key-transposed cache, one token per row per
  step) computes the logits of the stacked forward, and its cache converts back exactly. Both
  one-token attentions are checked here on the CPU: the multiply-reduce CPUs lower, and the
  dots accelerators lower (substituted for the CPU's branch of `platform_dependent`)."""
  if attention == "dots":
    monkeypatch.setattr(layers, "one_token_attention_reduce", layers.one_token_attention_dots)
  cfg = presets.get_preset(name)
  params = _params(name)
  t = 26
  tokens, mask = _batch(np.random.RandomState(1), [20, 26, 9], t, cfg.vocab_size)
  pos = np.asarray(decoder.default_positions(jnp.asarray(mask)))
  fwd = _fwd(cfg)
  full, _ = fwd(params, tokens, pos, mask)
  out, cache = fwd(params, tokens[:, :8], pos[:, :8], mask[:, :8], decoder.init_cache(cfg, 3, 32))
  pieces = [out]
  dcache = layerwise_decode.to_decode_layout(cache)
  back = layerwise_decode.from_decode_layout(dcache)
  for key in cache:  # a pure relayout: bit-exact both ways
    np.testing.assert_array_equal(np.asarray(back[key]), np.asarray(cache[key]))
  step = jax.jit(functools.partial(layerwise_decode.decode_step, cfg))
  per_layer = layerwise_decode.unstack_layers(params)
  for i in range(8, 18):
    logits, dcache = step(per_layer, tokens[:, i], pos[:, i], mask[:, i], dcache)
    pieces.append(logits[:, None])
  out, cache = fwd(
    params, tokens[:, 18:], pos[:, 18:], mask[:, 18:], layerwise_decode.from_decode_layout(dcache)
  )
  pieces.append(out)
  assert int(cache["index"]) == t
  full = np.asarray(full)
  bound = numerics.logit_bound(cfg, 32, np.abs(full[mask]).max())
  got = np.concatenate(pieces, axis=1)
  numerics.assert_close(
    got, full, bound, where=mask, what=f"{name} decode layout ({attention}) vs full logits"
  )


def test_default_positions_continue_after_cache():
  _, mask = _batch(np.random.RandomState(2), [12, 7, 16], 16, 320)
  full = decoder.default_positions(jnp.asarray(mask))
  np.testing.assert_array_equal(full[1], [0] * 9 + list(range(7)))
  cache = {"valid": jnp.asarray(mask[:, :11])}  # only 'valid' is read
  rest = decoder.default_positions(jnp.asarray(mask[:, 11:]), cache)
  np.testing.assert_array_equal(rest[mask[:, 11:]], np.asarray(full[:, 11:])[mask[:, 11:]])


def test_sliding_window_receptive_field():
  """Two local layers of window W: position t depends on tokens t-2(W-1) .. t only."""
  cfg = presets.get_preset("tiny-gemma2", layer_types=("local", "local"))
  w = cfg.sliding_window
  params = _random_params(cfg, seed=3)
  tokens = np.random.RandomState(3).randint(0, cfg.vocab_size, (1, 24)).astype(np.int32)
  changed = tokens.copy()
  changed[0, 0] = (tokens[0, 0] + 1) % cfg.vocab_size
  out, _ = _fwd(cfg)(params, np.concatenate([tokens, changed]))
  out = np.asarray(out)
  diff = np.abs(out[0] - out[1]).max(axis=-1)
  # Outside the receptive field the two rows compute the same math (masked keys weigh exactly
  # 0): equal up to rounding; inside it, token 0 must move the logits by more than rounding.
  bound = numerics.logit_bound(cfg, 24, np.abs(out).max())
  reach = 2 * (w - 1)
  assert (diff[: reach + 1] > bound).all(), (diff, bound)
  assert (diff[reach + 1 :] <= bound).all(), (diff, bound)
  # With the global layer (the preset's pattern), everything downstream sees token 0.
  cfg_g = presets.get_preset("tiny-gemma2")
  out, _ = _fwd(cfg_g)(params, np.concatenate([tokens, changed]))
  out = np.asarray(out)
  bound = numerics.logit_bound(cfg_g, 24, np.abs(out).max())
  assert (np.abs(out[0] - out[1]).max(axis=-1) > bound).all()


def test_parameter_tree_is_the_contract():
  def shapes(name):
    return jax.tree.map(lambda x: x.shape, decoder.abstract_params(presets.get_preset(name)))

  g3 = shapes("tiny-gemma3")
  nl, d, h, n, k, f, v = 4, 64, 4, 2, 16, 128, 320
  assert g3 == {
    "embedder": {"input_embedding": (v, d)},
    "layers": {
      "pre_attention_norm": {"scale": (nl, d)},
      "attn": {
        "q_proj": {"kernel": (nl, d, h, k)},
        "k_proj": {"kernel": (nl, d, n, k)},
        "v_proj": {"kernel": (nl, d, n, k)},
        "o_proj": {"kernel": (nl, h, k, d)},
        "q_norm": {"scale": (nl, k)},
        "k_norm": {"scale": (nl, k)},
      },
      "post_attention_norm": {"scale": (nl, d)},
      "pre_ffw_norm": {"scale": (nl, d)},
      "mlp": {
        "gate_proj": {"kernel": (nl, d, f)},
        "up_proj": {"kernel": (nl, d, f)},
        "down_proj": {"kernel": (nl, f, d)},
      },
      "post_ffw_norm": {"scale": (nl, d)},
    },
    "final_norm": {"scale": (d,)},
  }
  qwen = shapes("tiny-qwen2")
  assert qwen["layers"]["attn"]["q_proj"] == {"kernel": (2, d, h, k), "bias": (2, h, k)}
  assert qwen["layers"]["attn"]["k_proj"]["bias"] == (2, n, k)
  assert set(qwen["layers"]) == {"pre_attention_norm", "attn", "pre_ffw_norm", "mlp"}
  assert "lm_head" not in qwen and shapes("tiny-mistral")["lm_head"] == {"kernel": (d, v)}
  axes = decoder.param_logical_axes(presets.get_preset("tiny-gemma3"))
  q_axes = ("layers", "embed", "q_heads", "head_dim")
  assert tuple(axes["layers"]["attn"]["q_proj"]["kernel"]) == q_axes
  assert tuple(axes["embedder"]["input_embedding"]) == ("vocab", "embed")
  assert tuple(axes["layers"]["attn"]["q_norm"]["scale"]) == ("layers", "norm")


def test_init_dtypes_and_norm_convention():
  cfg = presets.get_preset("tiny-gemma", param_dtype="bfloat16")
  dtypes = {x.dtype for x in jax.tree.leaves(decoder.abstract_params(cfg))}
  assert dtypes == {jnp.dtype(jnp.bfloat16)}
  # Gemma stores w of x * (1 + w), so identity is 0; Llama stores w of x * w, identity 1.
  x = jnp.ones((1, 8))
  for name, want in (("tiny-gemma", 0.0), ("tiny-llama", 1.0)):
    norm = nn.meta.unbox(layers.RMSNorm(presets.get_preset(name)).init(jax.random.key(0), x))
    np.testing.assert_array_equal(norm["params"]["scale"], np.full(8, want, np.float32))  # init
  tokens = jnp.ones((1, 1), jnp.int32)
  emb = nn.meta.unbox(decoder.Embedder(cfg).init(jax.random.key(0), tokens, method="encode"))
  emb_vd = emb["params"]["input_embedding"].astype(jnp.float32)
  assert emb_vd.shape == (320, 64) and 0.8 < float(emb_vd.std()) * 64**0.5 < 1.2


@pytest.mark.parametrize(
  "name,kind",
  [
    ("llama3.1-8b", "llama3"),
    ("llama3.2-1b", "llama3"),
    ("gemma3-4b", "linear"),
    ("tiny-llama", "llama3"),
  ],
)
def test_rope_inv_freq_matches_transformers(name, kind):
  cfg = presets.get_preset(name)
  rope = {"rope_type": kind, "rope_theta": cfg.rope_theta, "factor": cfg.rope_scaling_factor}
  if kind == "llama3":
    rope.update(
      low_freq_factor=cfg.rope_llama3_low_freq_factor,
      high_freq_factor=cfg.rope_llama3_high_freq_factor,
      original_max_position_embeddings=cfg.rope_original_max_position,
    )
  hf = LlamaConfig(
    hidden_size=cfg.num_heads * cfg.head_dim,
    num_attention_heads=cfg.num_heads,
    head_dim=cfg.head_dim,
    rope_parameters=rope,
    max_position_embeddings=cfg.max_seq_len,
  )
  want, _ = ROPE_INIT_FUNCTIONS[kind](hf, torch.device("cpu"))
  got = layers.rope_inv_freq(cfg, "global")
  # Elementwise float32 on both sides (NumPy, torch): pow, reciprocal, then up to 6 operations
  # of llama3 smoothing, each within ELEMENTARY ulp; no reduction.
  ops = [numerics.ELEMENTARY] * 2 + ([1] * 8 if kind == "llama3" else [1])
  want = want.numpy()
  numerics.assert_close_f32(
    got, want, levels=ops, magnitude=np.abs(want), what=f"{name} inv_freq vs HF"
  )
  if "local" in cfg.layer_types:  # Gemma 3 local layers: base 10k, never scaled
    local = layers.rope_inv_freq(cfg, "local")
    numerics.assert_close_f32(
      local[1], 10_000.0 ** (-2 / cfg.head_dim), levels=[numerics.ELEMENTARY] * 2, sides=1,
      what="local inv_freq vs float64",
    )  # fmt: skip


def test_bfloat16_compute_close_to_float32():
  cfg32 = presets.get_preset("tiny-gemma2")
  cfg16 = dataclasses.replace(cfg32, dtype="bfloat16")
  params = _params("tiny-gemma2")
  tokens, mask = _batch(np.random.RandomState(4), [16, 11], 16, cfg32.vocab_size)
  ref, _ = _fwd(cfg32)(params, tokens, mask_bt=mask)
  out, _ = _fwd(cfg16)(params, tokens, mask_bt=mask)
  assert out.dtype == jnp.float32  # logits are always float32
  ref, out = np.asarray(ref)[mask], np.asarray(out)[mask]
  # bfloat16 rounds each level's operands and output (2 roundings of u = 2^-8; the float32
  # accumulation inside a dot is negligible next to them): a bound from the bf16 unit roundoff.
  levels = [2] * len(numerics.decoder_levels(cfg32, 16))
  bound = numerics.relative_bound(levels, sides=1, u=numerics.U_BF16) * np.abs(ref).max()
  numerics.assert_close(out, ref, bound, what="bfloat16 vs float32 logits")
  numerics.assert_argmax_matches(out.argmax(-1), ref, bound, what="bfloat16 vs float32 argmax")
  assert decoder.init_cache(cfg16, 2, 16)["k"].dtype == jnp.bfloat16
  assert decoder.init_cache(cfg16, 2, 16, dtype="float32")["v"].dtype == jnp.float32


@pytest.mark.slow  # three compilations of a value-and-grad: ~30 s on a loaded 2-core machine
def test_remat_and_unrolled_layers_change_nothing():
  base = presets.get_preset("tiny-gemma2")
  params = _params("tiny-gemma2")
  tokens = np.random.RandomState(5).randint(0, base.vocab_size, (2, 12)).astype(np.int32)

  def loss_and_grad(cfg):
    loss = lambda p: jnp.mean(decoder.forward(cfg, p, tokens)[0] ** 2)
    return jax.jit(jax.value_and_grad(loss))(params)

  ref_loss, ref_grad = loss_and_grad(base)
  loss, grad = loss_and_grad(dataclasses.replace(base, remat_policy="full"))
  # Remat recomputes the same math (fused differently). The loss is a mean of squares: twice
  # the logits' relative error, then a sum over every logit.
  n = tokens.size * base.vocab_size
  levels = numerics.decoder_levels(base, 12) * 2 + [n]
  numerics.assert_close_f32(loss, ref_loss, levels=levels, what="remat loss")
  grad_levels = numerics.gradient_levels(base, 12, tokens.size)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grad), jax.tree.leaves(ref_grad)):
    what = f"remat grad {jax.tree_util.keystr(path)}"
    numerics.assert_close_f32(a, b, levels=grad_levels, what=what)
  ref, _ = _fwd(base)(params, tokens)
  unrolled, _ = _fwd(dataclasses.replace(base, scan_layers=False))(params, tokens)
  ref = np.asarray(ref)
  bound = numerics.logit_bound(base, 12, np.abs(ref).max())
  numerics.assert_close(unrolled, ref, bound, what="unrolled vs scanned logits")


def test_bad_inputs_raise_naming_the_problem():
  cfg = presets.get_preset("tiny-llama")
  params = _params("tiny-llama")
  tokens = jnp.zeros((2, 5), jnp.int32)
  with pytest.raises(ValueError, match=r"shape \(2, 4\) != tokens_bt shape \(2, 5\)"):
    decoder.forward(cfg, params, tokens, mask_bt=jnp.ones((2, 4), bool))
  with pytest.raises(ValueError, match="tokens_bt must be"):
    decoder.forward(cfg, params, jnp.zeros((5,), jnp.int32))
  with pytest.raises(ValueError, match="do not fit a cache of 4 slots"):
    decoder.forward(cfg, params, tokens, cache=decoder.init_cache(cfg, 2, 4))
  with pytest.raises(ValueError, match=r"cache\['k'\] shape"):
    other = decoder.init_cache(presets.get_preset("tiny-gemma"), 2, 8)  # 1 kv head, not 2
    decoder.forward(cfg, params, tokens, cache=other)
  with pytest.raises(ValueError, match="batch_size=0"):
    decoder.init_cache(cfg, 0, 8)
  with pytest.raises(ValueError, match="segments_bt shape"):
    decoder.forward(cfg, params, tokens, segments_bt=jnp.ones((2, 4), jnp.int32))
  with pytest.raises(ValueError, match="not decoding"):
    cache = decoder.init_cache(cfg, 2, 8)
    decoder.forward(cfg, params, tokens, cache=cache, segments_bt=jnp.ones((2, 5), jnp.int32))


@pytest.mark.parametrize("name", ["tiny-gemma", "tiny-gemma3"])
def test_packed_row_gives_each_segment_its_own_logits(name):
  """Two sequences packed into one row (segment ids, own positions) = each run on its own."""
  cfg = presets.get_preset(name)
  params = _params(name)
  rng = np.random.default_rng(0)
  a, b = rng.integers(3, cfg.vocab_size, 7), rng.integers(3, cfg.vocab_size, 12)
  tokens = np.concatenate([a, b, [0, 0, 0]])[None]
  positions = np.concatenate([np.arange(7), np.arange(12), [0, 0, 0]])[None]
  segments = np.concatenate([np.full(7, 1), np.full(12, 2), [0, 0, 0]])[None]
  mask = segments > 0
  packed, _ = decoder.forward(cfg, params, tokens, positions, mask, segments_bt=segments)
  alone_a, _ = decoder.forward(cfg, params, a[None])
  alone_b, _ = decoder.forward(cfg, params, b[None])
  packed, alone_a, alone_b = (np.asarray(x[0]) for x in (packed, alone_a, alone_b))
  bound = numerics.logit_bound(cfg, 22, np.abs(packed[:19]).max())
  numerics.assert_close(packed[:7], alone_a, bound, what=f"{name} packed segment 1")
  numerics.assert_close(packed[7:19], alone_b, bound, what=f"{name} packed segment 2")
  leaky, _ = decoder.forward(cfg, params, tokens, positions, mask)  # no segments: b sees a
  numerics.assert_exceeds(leaky[0, 7:19], alone_b, bound, what="a row without segment ids")
