"""The decode layout: the sampler's one-token-per-step loop on CPU, and its cache conversions.

Per layer, its own arrays (no per-step slice of a stacked [l, ...] cache or parameter tree,
which the CPU compiler copies every step), keys transposed so one row's keys are contiguous
along slots. Converted once per decode call; see `layers._attend_one_token`.
"""

from typing import Any

import jax
import jax.numpy as jnp

from score_jax.models import decoder, layers
from score_jax.models.config import ModelConfig
from score_jax.models.decoder import Cache

PyTree = Any

DecodeCache = dict[str, Any]


def to_decode_layout(cache: Cache, slots: int | None = None) -> DecodeCache:
  """[l, b, s, n, k] k/v -> per layer (k [b, n, k, s'], v [b, n, s', k]); the rest as is.

  `slots` (static) keeps only the first s' slots: those a decode call can read or write (the
  slots of later turns are still empty), so each step streams less cache.
  """
  slots = cache["k"].shape[2] if slots is None else slots
  kv = tuple(
    (cache["k"][i, :, :slots].transpose(0, 2, 3, 1), cache["v"][i, :, :slots].transpose(0, 2, 1, 3))
    for i in range(cache["k"].shape[0])
  )
  rows = {key: cache[key][:, :slots] for key in ("valid", "positions")}
  return {"kv": kv, **rows, "index": cache["index"]}


def from_decode_layout(dcache: DecodeCache, into: Cache | None = None) -> Cache:
  """The inverse of `to_decode_layout`; with `into`, its first slots are overwritten."""
  k = jnp.stack([kt.transpose(0, 3, 1, 2) for kt, _ in dcache["kv"]])
  v = jnp.stack([vt.transpose(0, 2, 1, 3) for _, vt in dcache["kv"]])
  live = {"k": k, "v": v, "valid": dcache["valid"], "positions": dcache["positions"]}
  if into is not None:
    live = {
      key: jax.lax.dynamic_update_slice(into[key], x, (0,) * x.ndim) for key, x in live.items()
    }
  return {**live, "index": dcache["index"]}


def unstack_layers(params: PyTree) -> PyTree:
  """Params with the stacked 'layers' tree split into a tuple of per-layer trees."""
  num = jax.tree.leaves(params["layers"])[0].shape[0]
  per_layer = tuple(jax.tree.map(lambda x, i=i: x[i], params["layers"]) for i in range(num))
  return {**params, "layers": per_layer}


def decode_step(config: ModelConfig, params: PyTree, tokens_b, positions_b, active_b, dcache):
  """One new token per row through the model in the decode layout (`unstack_layers` params,
  `to_decode_layout` cache): returns (float32 next-token logits [b, v], updated cache).

  The same blocks, in the same order, as `forward` with a stacked cache and t = 1.
  """
  cfg = config
  tokens_bt, positions_bt, mask_bt = tokens_b[:, None], positions_b[:, None], active_b[:, None]
  ctx = decoder.cached_context(dcache, positions_bt, mask_bt)
  embedder = {"params": params["embedder"]}
  x_btd = decoder.Embedder(cfg).apply(embedder, tokens_bt, method=decoder.Embedder.encode)
  _, inv_freq_lk, window_l = decoder.layer_inputs(cfg)
  block = layers.Block(cfg, decode_layout=True)
  new_kv = []
  for i, layer_params in enumerate(params["layers"]):
    layer_in = (jnp.int32(i), inv_freq_lk[i], window_l[i])
    (x_btd, kv), _ = block.apply({"params": layer_params}, (x_btd, dcache["kv"][i]), layer_in, ctx)
    new_kv.append(kv)
  logits_bv = decoder.output_logits(cfg, params, x_btd)[:, 0]
  new_cache = {"kv": tuple(new_kv), "valid": ctx.kv_valid_bs, "positions": ctx.kv_positions_bs}
  return logits_bv, {**new_cache, "index": dcache["index"] + 1}
