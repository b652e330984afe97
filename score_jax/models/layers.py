"""Decoder building blocks: RMSNorm, projections, RoPE, attention, gated MLP, one block.

Numerics follow Hugging Face transformers (the parity target): RMSNorm in float32, RoPE in the
rotate-half convention with float32 inverse frequencies (linear and llama3 scaling as HF),
attention logits and softmax in float32, soft-capping as cap * tanh(x / cap). Parameters are
stored in `param_dtype` and cast to the compute dtype at use. Shape letters: see config.py.
"""

import functools
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_jax.models.config import ModelConfig

# Finite (not -inf) so fully masked rows (left padding) give a uniform softmax instead of NaN.
MASK_VALUE = float(np.finfo(np.float32).min)
# Window of global layers: never binds.
NO_WINDOW = int(np.iinfo(np.int32).max)

constrain = nn.with_logical_constraint
# Logical names of the activations that get sharding constraints.
BTD = ("activation_batch", "activation_length", "activation_embed")
BTHK = ("activation_batch", "activation_length", "activation_heads", "activation_head_dim")
BTNK = ("activation_batch", "activation_length", "activation_kv_heads", "activation_head_dim")
BTF = ("activation_batch", "activation_length", "activation_mlp")
BTV = ("activation_batch", "activation_length", "activation_vocab")


class AttnContext(NamedTuple):
  """What every layer needs to build its mask; computed once per call, shared by the scan."""

  q_positions_bt: jax.Array  # RoPE positions of the new tokens
  q_slots_t: jax.Array  # slot index of each new token (cache index + t); [b, k] for a subset
  kv_positions_bs: jax.Array  # RoPE positions of every key slot
  kv_valid_bs: jax.Array  # bool: slot holds a real token
  kv_slots_s: jax.Array  # 0..S-1
  cache_index: jax.Array | None  # int32 [] first slot written by this call (None: no cache)
  # Packed rows (several sequences per row, no cache): the sequence id of every slot; a query
  # only sees keys of its own sequence. None: one sequence per row.
  segments_bt: jax.Array | None = None
  # The queries' own sequence ids when they are a subset of the slots (`query_subset`).
  q_segments_bt: jax.Array | None = None


def take_slots(x: jax.Array, slots_bk: jax.Array) -> jax.Array:
  """x [b, t, ...] at each row's slots [b, k] -> [b, k, ...]."""
  idx = slots_bk.astype(jnp.int32).reshape(slots_bk.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, idx, axis=1)


def query_subset(ctx: AttnContext, slots_bk: jax.Array) -> AttnContext:
  """The context of queries at each row's `slots_bk` only, against every key (no cache)."""
  segments = ctx.segments_bt
  return ctx._replace(
    q_positions_bt=take_slots(ctx.q_positions_bt, slots_bk),
    q_slots_t=jnp.take(ctx.q_slots_t, slots_bk.astype(jnp.int32)),
    q_segments_bt=None if segments is None else take_slots(segments, slots_bk),
  )


def rope_inv_freq(config: ModelConfig, layer_type: str) -> np.ndarray:
  """float32 [k/2] inverse frequencies of one layer type, computed as HF's rope init does."""
  local = layer_type == "local"
  theta = config.rope_local_theta if local and config.rope_local_theta else config.rope_theta
  dim = config.head_dim
  exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
  inv_freq = (np.float32(1.0) / (np.float32(theta) ** exponent)).astype(np.float32)
  kind = config.rope_scaling_type if (not local or config.rope_scale_local) else "none"
  factor = np.float32(config.rope_scaling_factor)
  if kind == "linear":
    inv_freq = inv_freq / factor
  elif kind == "llama3":
    low, high = config.rope_llama3_low_freq_factor, config.rope_llama3_high_freq_factor
    old_len = config.rope_original_max_position
    wavelen = np.float32(2 * math.pi) / inv_freq
    scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (np.float32(old_len) / wavelen - np.float32(low)) / np.float32(high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
    inv_freq = np.where(medium, smoothed, scaled)
  return inv_freq.astype(np.float32)


def apply_rope(x_btnk: jax.Array, positions_bt: jax.Array, inv_freq_k: jax.Array) -> jax.Array:
  """Rotary embedding, HF rotate_half layout (first/second half of k, not interleaved)."""
  freqs = positions_bt.astype(jnp.float32)[..., None] * inv_freq_k  # [b, t, k/2]
  emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
  cos, sin = jnp.cos(emb).astype(x_btnk.dtype), jnp.sin(emb).astype(x_btnk.dtype)
  x1, x2 = jnp.split(x_btnk, 2, axis=-1)
  return x_btnk * cos + jnp.concatenate([-x2, x1], axis=-1) * sin


def softcap(x: jax.Array, cap: float | None) -> jax.Array:
  return x if cap is None else cap * jnp.tanh(x / cap)


class RMSNorm(nn.Module):
  """RMSNorm over the last axis; Gemma stores w of x*(1+w), Llama w of x*w."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    init = nn.initializers.zeros if cfg.norm_plus_one else nn.initializers.ones
    scale = self.param(
      "scale", nn.with_logical_partitioning(init, ("norm",)), (x.shape[-1],), cfg.params_dtype
    )
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + cfg.norm_eps)
    if cfg.norm_plus_one:  # HF Gemma: scale applied in float32, then cast
      return (normed * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)
    return scale.astype(x.dtype) * normed.astype(x.dtype)  # HF Llama: cast, then scale


class Linear(nn.Module):
  """y = x . kernel, contracting x's last `num_in` axes with the kernel's first `num_in`."""

  config: ModelConfig
  shape: tuple[int, ...]
  axes: tuple[str, ...]
  num_in: int = 1
  use_bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg, n = self.config, len(self.shape)
    in_axes, out_axes = tuple(range(self.num_in)), tuple(range(self.num_in, n))
    init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axes, out_axes)
    kernel = self.param(
      "kernel", nn.with_logical_partitioning(init, self.axes), self.shape, cfg.params_dtype
    )
    dt = cfg.compute_dtype
    y = jnp.tensordot(x.astype(dt), kernel.astype(dt), axes=self.num_in)
    if self.use_bias:
      bias = self.param(
        "bias",
        nn.with_logical_partitioning(nn.initializers.zeros, self.axes[self.num_in :]),
        self.shape[self.num_in :],
        cfg.params_dtype,
      )
      y = y + bias.astype(dt)
    return y


def _masked_probs(cfg: ModelConfig, logits_bngts, ctx: AttnContext, window, dtype):
  """Scaled, soft-capped attention logits -> probabilities over the key slots each query sees."""
  logits = softcap(logits_bngts * cfg.attn_scale, cfg.attn_logit_softcap)
  # Query slot i sees key slot j iff j is a real token, j <= i, and (local layers) the
  # position gap is under the window (HF: W keys including the query itself).
  q_slots = ctx.q_slots_t if ctx.q_slots_t.ndim == 2 else ctx.q_slots_t[None]
  causal_bts = ctx.kv_valid_bs[:, None, :] & (ctx.kv_slots_s <= q_slots[..., None])
  gap_bts = ctx.q_positions_bt[:, :, None] - ctx.kv_positions_bs[:, None, :]
  mask_bts = causal_bts & (gap_bts < window)
  if ctx.segments_bt is not None:
    q_segments = ctx.segments_bt if ctx.q_segments_bt is None else ctx.q_segments_bt
    mask_bts &= q_segments[:, :, None] == ctx.segments_bt[:, None, :]
  logits = jnp.where(mask_bts[:, None, None], logits, MASK_VALUE)
  return jax.nn.softmax(logits, axis=-1).astype(dtype)


def _attend_stacked(cfg, q, key, val, ctx, window, layer, kv):
  """Attention against a stacked [l, b, s, n, k] cache (or none): batched dots, any t."""
  b, t, h, k = q.shape
  n = key.shape[2]
  if kv is not None:  # write the new keys/values at slots [index, index + t) of this layer
    cache_k, cache_v = kv
    start = (layer, 0, ctx.cache_index, 0, 0)
    cache_k = jax.lax.dynamic_update_slice(cache_k, key[None].astype(cache_k.dtype), start)
    cache_v = jax.lax.dynamic_update_slice(cache_v, val[None].astype(cache_v.dtype), start)
    kv = (cache_k, cache_v)
    key, val = cache_k[layer].astype(q.dtype), cache_v[layer].astype(q.dtype)
  q_bngtk = q.reshape(b, t, n, h // n, k)
  logits = jnp.einsum("btngk,bsnk->bngts", q_bngtk, key, preferred_element_type=jnp.float32)
  probs = _masked_probs(cfg, logits, ctx, window, q.dtype)
  return jnp.einsum("bngts,bsnk->btngk", probs, val).reshape(b, t, h, k), kv


def _attend_one_token(cfg, q, key, val, ctx, window, kv):
  """One new token per row against this layer's own cache in the decode layout
  (keys transposed [b, n, k, s], values [b, n, s, k]; `layerwise_decode.to_decode_layout`).

  How the query meets the cache depends on the platform the program is lowered for
  (`jax.lax.platform_dependent`): see `one_token_attention_reduce` and
  `one_token_attention_dots`.
  """
  b, t, h, k = q.shape
  n = key.shape[2]
  cache_kt, cache_v = kv
  i = ctx.cache_index
  cache_kt = jax.lax.dynamic_update_slice(
    cache_kt, key.transpose(0, 2, 3, 1).astype(cache_kt.dtype), (0, 0, 0, i)
  )
  cache_v = jax.lax.dynamic_update_slice(
    cache_v, val.transpose(0, 2, 1, 3).astype(cache_v.dtype), (0, 0, i, 0)
  )
  q_bngk = q.reshape(b, n, h // n, k)

  def probs_fn(logits_bngs):
    probs = _masked_probs(cfg, logits_bngs[:, :, :, None, :], ctx, window, q.dtype)
    return probs[:, :, :, 0, :]

  out_bngk = jax.lax.platform_dependent(
    q_bngk,
    cache_kt,
    cache_v,
    cpu=functools.partial(one_token_attention_reduce, probs_fn),
    default=functools.partial(one_token_attention_dots, probs_fn),
  )
  return out_bngk.astype(q.dtype).reshape(b, t, h, k), (cache_kt, cache_v)


def one_token_attention_reduce(probs_fn, q_bngk, cache_kt, cache_v):
  """CPU: products and sums instead of dots (products in float32, as a dot accumulates). Each
  row's query meets only its own keys; XLA:CPU fuses the value sum into the o_proj matmul, and
  the whole decode step ran 1.46x faster than with the batched dots below (5.26 vs 7.66 ms,
  `bench sampler`'s CPU model, 2-core AMD EPYC, 2026-12-05; an order of magnitude in 2026-11)."""
  f32 = jnp.float32
  logits_bngs = jnp.sum(q_bngk[..., None].astype(f32) * cache_kt[:, :, None].astype(f32), axis=3)
  probs_bngs1 = probs_fn(logits_bngs)[..., None].astype(f32)
  return jnp.sum(probs_bngs1 * cache_v[:, :, None].astype(f32), axis=3)


def one_token_attention_dots(probs_fn, q_bngk, cache_kt, cache_v):
  """Accelerators: batched dots accumulating in float32 that read the cache as stored. The
  multiply-reduce above made the H200 compiler write a float32 copy of every layer's value
  cache each step (~245 MB per step for gemma-2b at 32 rows x 416 slots)."""
  f32 = jnp.float32
  logits_bngs = jnp.einsum("bngk,bnks->bngs", q_bngk, cache_kt, preferred_element_type=f32)
  probs_bngs = probs_fn(logits_bngs)
  return jnp.einsum("bngs,bnsk->bngk", probs_bngs, cache_v, preferred_element_type=f32)


class Attention(nn.Module):
  """Multi-head attention with GQA/MQA, RoPE, optional QK-norm, softcap, sliding window.

  `decode_layout`: `kv` is this layer's own cache in the decode layout and t == 1 (the
  sampler's decode loop on CPU); otherwise `kv` is the stacked cache of all layers or None.
  """

  config: ModelConfig
  decode_layout: bool = False

  @nn.compact
  def __call__(self, x_btd, ctx: AttnContext, inv_freq_k, window, layer, kv, q_slots_bk=None):
    """`q_slots_bk` (int [b, k], no cache): queries at those slots only, keys and values at
    every slot; the output is [b, k, d]."""
    cfg = self.config
    if q_slots_bk is not None and kv is not None:  # a cache would need the keys' own slots
      raise ValueError("Attention: q_slots_bk (a query subset) is for calls without a cache")
    d, h, n, k = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    q_axes, kv_axes = ("embed", "q_heads", "head_dim"), ("embed", "kv_heads", "head_dim")
    q_ctx = ctx if q_slots_bk is None else query_subset(ctx, q_slots_bk)
    x_q = x_btd if q_slots_bk is None else take_slots(x_btd, q_slots_bk)
    q = Linear(cfg, (d, h, k), q_axes, use_bias=cfg.qkv_bias, name="q_proj")(x_q)
    key = Linear(cfg, (d, n, k), kv_axes, use_bias=cfg.qkv_bias, name="k_proj")(x_btd)
    val = Linear(cfg, (d, n, k), kv_axes, use_bias=cfg.qkv_bias, name="v_proj")(x_btd)
    if cfg.qk_norm:
      q, key = RMSNorm(cfg, name="q_norm")(q), RMSNorm(cfg, name="k_norm")(key)
    q = apply_rope(q, q_ctx.q_positions_bt, inv_freq_k)
    key = apply_rope(key, ctx.q_positions_bt, inv_freq_k)
    q, key, val = constrain(q, BTHK), constrain(key, BTNK), constrain(val, BTNK)
    if self.decode_layout:
      out, kv = _attend_one_token(cfg, q, key, val, ctx, window, kv)
    else:
      out, kv = _attend_stacked(cfg, q, key, val, q_ctx, window, layer, kv)
    out = constrain(out, BTHK)
    o_axes = ("q_heads", "head_dim", "embed")
    return Linear(cfg, (h, k, d), o_axes, num_in=2, name="o_proj")(out), kv


class MLP(nn.Module):
  """Gated MLP: down(act(gate(x)) * up(x)); GeGLU (tanh gelu) for Gemma, SwiGLU for Llama.

  The projections run on the rows flattened to [b * t, d]: the same products, but the weight
  gradients become plain matmuls; over [b, t, d] the CPU compiler fused the GeGLU backward with
  a transpose to [f, b * t] that cost more than the layer's matmuls.
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, x_btd: jax.Array) -> jax.Array:
    cfg = self.config
    b, t, d = x_btd.shape
    f = cfg.hidden_dim
    x_nd = x_btd.reshape(b * t, d)
    gate = Linear(cfg, (d, f), ("embed", "mlp"), name="gate_proj")(x_nd)
    up = Linear(cfg, (d, f), ("embed", "mlp"), name="up_proj")(x_nd)
    act = (
      jax.nn.gelu(gate, approximate=True) if cfg.activation == "gelu_tanh" else jax.nn.silu(gate)
    )
    hidden_btf = constrain((act * up).reshape(b, t, f), BTF)
    out_nd = Linear(cfg, (f, d), ("mlp", "embed"), name="down_proj")(hidden_btf.reshape(b * t, f))
    return out_nd.reshape(b, t, d)


class Block(nn.Module):
  """One transformer layer; scanned over layers with per-layer (index, inv_freq, window)."""

  config: ModelConfig
  decode_layout: bool = False  # see Attention

  @nn.compact
  def __call__(self, carry, layer_in, ctx: AttnContext, q_slots_bk=None):
    """`q_slots_bk` (int [b, k], no cache): the layer's output at those slots only ([b, k, d]);
    its keys and values still come from every slot."""
    cfg = self.config
    x, kv = carry
    layer, inv_freq_k, window = layer_in
    act_names = ("activation_batch", "activation_length", "activation_embed")
    x = constrain(x, act_names)
    h = RMSNorm(cfg, name="pre_attention_norm")(x)
    attn = Attention(cfg, self.decode_layout, name="attn")
    h, kv = attn(h, ctx, inv_freq_k, window, layer, kv, q_slots_bk)
    if q_slots_bk is not None:
      x = take_slots(x, q_slots_bk)
    if cfg.use_post_attn_norm:
      h = RMSNorm(cfg, name="post_attention_norm")(h)
    x = x + h
    h = MLP(cfg, name="mlp")(RMSNorm(cfg, name="pre_ffw_norm")(x))
    if cfg.use_post_ffw_norm:
      h = RMSNorm(cfg, name="post_ffw_norm")(h)
    return (constrain(x + h, act_names), kv), None
