"""The sampler's jitted programs: prefill, append and the decode loop over an explicit KV cache.

Pure functions of (model config, params, cache state, ...); `sampling.Sampler` binds the config,
jits them once per shape bucket and owns the host side (buckets, padding, placement).

Shape letters: b batch (episodes), u unique prompts, t new tokens, s cache slots, g generation
bucket, v vocab.
"""

import enum

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from score_jax.models import decoder, layerwise_decode
from score_jax.parallel import mesh as mesh_lib

# When the decode loop gathers weights sharded over its mesh (`Sampler(weight_gather=...)`).
WEIGHT_GATHERS = ("per_call", "per_step")


class StopReason(enum.IntEnum):
  """Why a row's attempt ended."""

  STOP_ID = 1  # sampled one of the stop ids (kept as the attempt's last token)
  LENGTH = 2  # hit max_new_tokens (truncated)


def _inverse_cdf(keys_b, logits_bv, block: int = 64):
  """One categorical draw per row from a single uniform: the first index whose cumulative
  probability reaches u * total. The same distribution as Gumbel-max, with one random number
  per row instead of one per vocabulary entry (which cost a fifth of a CPU decode step).

  Two levels (block masses, then one block's entries) keep the scans short: a [b, v] cumsum
  costs more than the rest of the draw. Entries of zero probability (filtered out, padding)
  are never drawn, whatever the rounding at the block edges.
  """
  b, v = logits_bv.shape
  nb = -(-v // block)
  probs_bv = jax.nn.softmax(logits_bv, axis=-1)
  probs_bnk = jnp.pad(probs_bv, ((0, 0), (0, nb * block - v))).reshape(b, nb, block)
  # 1 - U[0, 1) is in (0, 1]: the target is > 0, so leading zero-mass blocks are passed over.
  u_b = 1.0 - jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(keys_b)
  mass_bn = probs_bnk.sum(-1)
  cdf_bn = jnp.cumsum(mass_bn, axis=-1)
  target_b = u_b * cdf_bn[:, -1]
  blk_b = jnp.minimum(jnp.sum(cdf_bn < target_b[:, None], axis=-1), nb - 1)
  pick = lambda x: jnp.take_along_axis(x, blk_b[:, None], axis=1)[:, 0]
  inner_bk = jnp.take_along_axis(probs_bnk, blk_b[:, None, None], axis=1)[:, 0]
  cdf_bk = (pick(cdf_bn) - pick(mass_bn))[:, None] + jnp.cumsum(inner_bk, axis=-1)
  j_b = jnp.sum(cdf_bk < target_b[:, None], axis=-1)
  iota_k = jnp.arange(block)
  first_b = jnp.min(jnp.where(inner_bk > 0, iota_k, block), axis=-1)
  last_b = jnp.max(jnp.where(inner_bk > 0, iota_k, -1), axis=-1)
  return (blk_b * block + jnp.clip(j_b, first_b, last_b)).astype(jnp.int32)


def sample_tokens(logits_bv, keys_b, temperature, top_k, top_p):
  """Samples one token per row in float32; returns (token_b, logp_b under the temperature)."""
  logits_bv = logits_bv.astype(jnp.float32)
  greedy = temperature <= 0.0
  scaled_bv = logits_bv / jnp.where(greedy, 1.0, temperature)
  vocab = logits_bv.shape[-1]

  def filtered_sample(scaled_bv):
    # Sort once and sample in sorted order, so ties at the cut-off never widen the allowed set.
    iota_bv = jnp.broadcast_to(jnp.arange(vocab, dtype=jnp.int32), scaled_bv.shape)
    neg_sorted_bv, order_bv = jax.lax.sort((-scaled_bv, iota_bv), num_keys=1)
    sorted_bv = -neg_sorted_bv
    probs_bv = jax.nn.softmax(sorted_bv, axis=-1)
    mass_before_bv = jnp.cumsum(probs_bv, axis=-1) - probs_bv
    rank_v = jnp.arange(vocab)
    keep_bv = (mass_before_bv < top_p) & ((top_k <= 0) | (rank_v < top_k))
    keep_bv = keep_bv.at[:, 0].set(True)
    idx_b = _inverse_cdf(keys_b, jnp.where(keep_bv, sorted_bv, -jnp.inf))
    return jnp.take_along_axis(order_bv, idx_b[:, None], axis=-1)[:, 0]

  def plain_sample(scaled_bv):
    return _inverse_cdf(keys_b, scaled_bv)

  def stochastic(scaled_bv):
    needs_filter = (top_k > 0) | (top_p < 1.0)
    return jax.lax.cond(needs_filter, filtered_sample, plain_sample, scaled_bv)

  def argmax(scaled_bv):
    # The first index of the maximum, as jnp.argmax, in two plain reductions: the CPU's
    # (value, index) pair reduction costs more than a whole sampled draw.
    top_b1 = jnp.max(scaled_bv, axis=-1, keepdims=True)
    first_b = jnp.min(jnp.where(scaled_bv == top_b1, jnp.arange(vocab), vocab), axis=-1)
    return jnp.minimum(first_b, vocab - 1).astype(jnp.int32)  # vocab only if all are NaN

  token_b = jax.lax.cond(greedy, argmax, stochastic, scaled_bv)
  logp_b = jnp.take_along_axis(jax.nn.log_softmax(scaled_bv, axis=-1), token_b[:, None], -1)
  return token_b, logp_b[:, 0]


def prefill(config, params, tokens_ut, mask_ut, cache_len, samples_per_prompt, num_prompts):
  """Prefills unique prompts, then repeats each row's cache and stream `samples_per_prompt`
  times (prompt-major); rows past `num_prompts` are padding and dropped.

  The repeat is static (a slice and a broadcast): with the rows sharded over devices each
  device repeats its own prompts, where a gather by row index would move caches between them.
  """
  num_unique, t = tokens_ut.shape
  # The prompt attends over its own t slots only; the empty rest of the cache is added after.
  cache = decoder.constrain_cache(decoder.init_cache(config, num_unique, t))
  pos_ut = jnp.maximum(jnp.cumsum(mask_ut, axis=1) - 1, 0).astype(jnp.int32)
  logits_utv, cache = decoder.forward(
    config, params, tokens_ut, pos_ut, mask_ut, cache, last_only=True
  )
  n, g = num_prompts, samples_per_prompt

  def take(x, axis):
    x = jax.lax.slice_in_dim(x, 0, n, axis=axis)
    return jnp.repeat(x, g, axis=axis, total_repeat_length=n * g)

  def take_and_extend(x, batch_axis):  # rows repeated, slots padded out to cache_len
    pad = [(0, 0)] * x.ndim
    pad[batch_axis + 1] = (0, cache_len - t)
    return jnp.pad(take(x, batch_axis), pad)

  cache = decoder.constrain_cache(
    {
      "k": take_and_extend(cache["k"], 1),
      "v": take_and_extend(cache["v"], 1),
      "valid": take_and_extend(cache["valid"], 0),
      "positions": take_and_extend(cache["positions"], 0),
      "index": cache["index"],
    }
  )
  b = n * g
  tokens_bs = jnp.zeros((b, cache_len), jnp.int32).at[:, :t].set(take(tokens_ut, 0))
  return {
    "cache": cache,
    "tokens_bs": tokens_bs,
    "logp_bs": jnp.zeros((b, cache_len), jnp.float32),
    "turn_bs": jnp.zeros((b, cache_len), jnp.int32),
    "next_pos_b": take(mask_ut.sum(axis=1).astype(jnp.int32), 0),
    # Left padding puts each row's last real token in the last column.
    "logits_bv": take(logits_utv[:, -1].astype(jnp.float32), 0),
  }


def append(config, params, state, tokens_bt, mask_bt):
  """Writes T (left-padded) tokens after each row's last real token; updates next logits."""
  pos_bt = state["next_pos_b"][:, None] + jnp.cumsum(mask_bt, axis=1).astype(jnp.int32) - 1
  pos_bt = jnp.maximum(pos_bt, 0)
  start = state["cache"]["index"]
  logits_btv, cache = decoder.forward(
    config, params, tokens_bt, pos_bt, mask_bt, state["cache"], last_only=True
  )
  put = lambda buf, x: jax.lax.dynamic_update_slice(buf, x.astype(buf.dtype), (0, start))
  return {
    **state,
    "cache": cache,
    "tokens_bs": put(state["tokens_bs"], tokens_bt),
    "logp_bs": put(state["logp_bs"], jnp.zeros(tokens_bt.shape)),
    "turn_bs": put(state["turn_bs"], jnp.zeros(tokens_bt.shape)),
    "next_pos_b": state["next_pos_b"] + mask_bt.sum(axis=1).astype(jnp.int32),
    "logits_bv": logits_btv[:, -1].astype(jnp.float32),
  }


def fsdp_gathered_specs(config, params, mesh):
  """Each weight's mesh PartitionSpec with the FSDP axis dropped and tensor-parallel axes kept:
  what one device's decode matmuls read (`params`: arrays or shapes of the model's tree)."""

  def spec(logical, x):
    kept = []
    for entry in mesh_lib.logical_to_mesh_spec(logical, x.shape, mesh):
      axes = tuple(a for a in ((entry,) if isinstance(entry, str) else entry or ()) if a != "fsdp")
      kept.append(axes[0] if len(axes) == 1 else (axes or None))
    return P(*kept)

  logical = decoder.param_logical_axes(config)
  return jax.tree.map(spec, logical, params, is_leaf=lambda x: isinstance(x, P))


def _fsdp_gathered(config, params):
  """The weights as `fsdp_gathered_specs` places them. Outside the decode loop this is one
  gather per call; left to the loop, an 8-GPU compile gathered every layer's weights in every
  step. A no-op without a mesh, or when nothing is FSDP-sharded (several processes: a replica)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return params
  return jax.tree.map(
    jax.lax.with_sharding_constraint,
    params,
    fsdp_gathered_specs(config, params, mesh),
    is_leaf=lambda x: isinstance(x, P),
  )


def _one_token_step(config, decode_layout: bool, weight_gather: str, live_slots, params, cache):
  """(the loop's initial cache, step(tok_b, pos_b, active_b, cache) -> (logits_bv, cache)).

  The decode layout (`layerwise_decode.to_decode_layout`) is converted once per call, outside
  the loop, keeping the `live_slots` the call can reach; otherwise each step runs the stacked
  model (`nn.scan` over layers) on the whole stacked cache.

  Either way the weights are cast to the compute dtype here, once per call: float32 master
  weights with bfloat16 compute (the paper configs) were otherwise converted inside the loop,
  every step (the H200 compile showed each step reading f32 and writing bf16 copies of all of
  them: 4x the weight bytes of a bf16 read). The same numbers: each use casts the same way.
  """
  params = decoder.cast_for_inference(config, params)
  if weight_gather == "per_call":
    params = _fsdp_gathered(config, params)
  if decode_layout:
    per_layer = layerwise_decode.unstack_layers(params)

    def step(tok_b, pos_b, active_b, cache):
      return layerwise_decode.decode_step(config, per_layer, tok_b, pos_b, active_b, cache)

    return layerwise_decode.to_decode_layout(cache, live_slots), step

  def stacked_step(tok_b, pos_b, active_b, cache):
    logits_b1v, cache = decoder.forward(
      config, params, tok_b[:, None], pos_b[:, None], active_b[:, None], cache
    )
    return logits_b1v[:, 0], cache

  return cache, stacked_step


def decode_loop(
  config,
  decode_layout,
  weight_gather,
  gen_len,
  pad_id,
  live_slots,
  params,
  state,
  rng,
  row_ids_b,
  turn,
  ops,
):
  """Samples up to ops['max_new'] tokens per row (<= gen_len), writing each into the cache.

  Static: `decode_layout` picks how each step reads weights and cache, `weight_gather` when
  sharded weights are gathered, `live_slots` bounds the slots it can reach (used by the decode
  layout only): see `_one_token_step`.
  """
  b = row_ids_b.shape[0]
  cache0, one_token = _one_token_step(
    config, decode_layout, weight_gather, live_slots, params, state["cache"]
  )
  start = state["cache"]["index"]
  # Per-row keys from the row's id, so tokens do not depend on batch layout or sharding.
  row_keys_b = jax.vmap(lambda r: jax.random.fold_in(jax.random.fold_in(rng, r), turn))(row_ids_b)
  stop_ids = ops["stop_ids"]

  def cond(c):
    return (c["i"] < ops["max_new"]) & jnp.any(c["active_b"])

  def body(c):
    i, active_b = c["i"], c["active_b"]
    # Named scopes label the ops for `benchmarks.decode_profile` (and any profiler).
    with jax.named_scope("sample"):
      keys_b = jax.vmap(lambda k: jax.random.fold_in(k, i))(row_keys_b)
      tok_b, logp_b = sample_tokens(
        c["logits_bv"], keys_b, ops["temperature"], ops["top_k"], ops["top_p"]
      )
    with jax.named_scope("stop_check"):
      tok_b = jnp.where(active_b, tok_b, pad_id)
      logp_b = jnp.where(active_b, logp_b, 0.0)
      is_stop_b = active_b & jnp.any(tok_b[:, None] == stop_ids[None, :], axis=-1)
    # The stop token goes into the cache too: the next turn continues after it.
    with jax.named_scope("model"):
      logits_bv, cache = one_token(tok_b, c["next_pos_b"], active_b, c["cache"])
    return {
      "i": i + 1,
      "cache": cache,
      "logits_bv": logits_bv.astype(jnp.float32),
      "next_pos_b": c["next_pos_b"] + active_b.astype(jnp.int32),
      "active_b": active_b & ~is_stop_b,
      "stopped_b": c["stopped_b"] | is_stop_b,
      "length_b": c["length_b"] + active_b.astype(jnp.int32),
      "tokens_bg": jax.lax.dynamic_update_slice(c["tokens_bg"], tok_b[:, None], (0, i)),
      "logp_bg": jax.lax.dynamic_update_slice(c["logp_bg"], logp_b[:, None], (0, i)),
    }

  init = {
    "i": jnp.int32(0),
    "cache": cache0,
    "logits_bv": state["logits_bv"],
    "next_pos_b": state["next_pos_b"],
    "active_b": jnp.ones((b,), bool),
    "stopped_b": jnp.zeros((b,), bool),
    "length_b": jnp.zeros((b,), jnp.int32),
    "tokens_bg": jnp.full((b, gen_len), pad_id, jnp.int32),
    "logp_bg": jnp.zeros((b, gen_len), jnp.float32),
  }
  c = jax.lax.while_loop(cond, body, init)
  return _decode_outputs(decode_layout, gen_len, state, start, turn, c)


def _decode_outputs(decode_layout, gen_len, state, start, turn, c):
  """(the sampler state after the decode loop's final carry `c`, the attempt's outputs)."""
  # Columns past the loop's last step are overwritten by later turns (the cache index is i).
  g_mask_bg = jnp.arange(gen_len)[None, :] < c["length_b"][:, None]
  put = lambda buf, x: jax.lax.dynamic_update_slice(buf, x.astype(buf.dtype), (0, start))
  new_state = {
    **state,
    "cache": (
      layerwise_decode.from_decode_layout(c["cache"], into=state["cache"])
      if decode_layout
      else c["cache"]
    ),
    "tokens_bs": put(state["tokens_bs"], c["tokens_bg"]),
    "logp_bs": put(state["logp_bs"], c["logp_bg"]),
    "turn_bs": put(state["turn_bs"], jnp.where(g_mask_bg, turn, 0)),
    "next_pos_b": c["next_pos_b"],
    "logits_bv": c["logits_bv"],
  }
  reason_b = jnp.where(c["stopped_b"], int(StopReason.STOP_ID), int(StopReason.LENGTH))
  out = {
    "tokens_bg": c["tokens_bg"],
    "logp_bg": c["logp_bg"],
    "length_b": c["length_b"],
    "stop_reason_b": reason_b.astype(jnp.int32),
  }
  return new_state, out
