"""The decoder-only transformer (Gemma 1/2/3, Llama, Qwen2, Mistral) and its functional API.

One Flax Linen module, used purely: parameters and the KV cache are explicit pytrees in and out.
The layers are one `nn.scan` (stacked parameters with a leading L axis, logical axis 'layers');
per-layer differences (local/global window, RoPE frequencies) enter the scan as per-layer
arrays, so any local/global pattern scans. Parameter tree and cache layout are a contract with
the checkpoint importers and the sampler (see `init_cache`).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_jax.models import layers
from score_jax.models.config import ModelConfig

PyTree = Any
Cache = dict[str, jax.Array]


class Embedder(nn.Module):
  """Token embedding [v, d]; also the output head when embeddings are tied."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    init = nn.initializers.normal(stddev=cfg.embed_dim**-0.5)
    self.input_embedding = self.param(
      "input_embedding",
      nn.with_logical_partitioning(init, ("vocab", "embed")),
      (cfg.vocab_size, cfg.embed_dim),
      cfg.params_dtype,
    )

  def encode(self, tokens_bt: jax.Array) -> jax.Array:
    dt = self.config.compute_dtype
    x_btd = jnp.take(self.input_embedding, tokens_bt, axis=0).astype(dt)
    if self.config.scale_embeddings:  # HF Gemma rounds the normaliser to the compute dtype
      x_btd = x_btd * jnp.asarray(self.config.embed_scale, dtype=dt)
    return x_btd

  def decode(self, x_btd: jax.Array) -> jax.Array:
    emb_vd = self.input_embedding.astype(self.config.compute_dtype)
    return jnp.einsum("btd,vd->btv", x_btd, emb_vd, preferred_element_type=jnp.float32)


def _remat(block_cls, policy: str):
  if policy == "none":
    return block_cls
  # 'full' saves nothing; prevent_cse=False is safe (and faster) inside a scan.
  pol = None if policy == "full" else getattr(jax.checkpoint_policies, policy)
  return nn.remat(block_cls, policy=pol, prevent_cse=False)


def layer_stack(cfg: ModelConfig, length: int):
  """The scanned layers: `length` Blocks over stacked parameters (leading axis 'layers')."""
  return nn.scan(
    _remat(layers.Block, cfg.remat_policy),
    variable_axes={"params": 0},
    split_rngs={"params": True},
    in_axes=(0, nn.broadcast),
    length=length,
    # scan_layers=False unrolls the loop fully: same stacked parameters, no while loop.
    unroll=1 if cfg.scan_layers else length,
    metadata_params={nn.PARTITION_NAME: "layers"},
  )


def cache_free_context(positions_bt, mask_bt, segments_bt=None) -> layers.AttnContext:
  """The attention context of a call without a cache: every slot is both query and key."""
  slots_t = jnp.arange(mask_bt.shape[1], dtype=jnp.int32)
  return layers.AttnContext(
    q_positions_bt=positions_bt.astype(jnp.int32),
    q_slots_t=slots_t,
    kv_positions_bs=positions_bt.astype(jnp.int32),
    kv_valid_bs=mask_bt.astype(bool),
    kv_slots_s=slots_t,
    cache_index=None,
    segments_bt=None if segments_bt is None else segments_bt.astype(jnp.int32),
  )


def layer_inputs(cfg: ModelConfig):
  """Per-layer scan inputs: layer index, RoPE inverse frequencies, attention window."""
  inv = {t: layers.rope_inv_freq(cfg, t) for t in ("global", "local")}
  inv_freq_lk = np.stack([inv[t] for t in cfg.layer_types])
  window_l = np.array(
    [cfg.sliding_window if t == "local" else layers.NO_WINDOW for t in cfg.layer_types],
    dtype=np.int32,
  )
  return (jnp.arange(cfg.num_layers, dtype=jnp.int32), jnp.asarray(inv_freq_lk), window_l)


def cached_context(cache, positions_bt, mask_bt) -> layers.AttnContext:
  """The attention context of t new tokens written at the cache's index: its valid bits and
  positions after the write (`kv_valid_bs`, `kv_positions_bs`: the updated cache's) and the
  new tokens' slots. Any cache with 'valid', 'positions' and 'index' (both layouts)."""
  index = cache["index"].astype(jnp.int32)
  positions_bt = positions_bt.astype(jnp.int32)
  kv_valid = jax.lax.dynamic_update_slice(cache["valid"], mask_bt.astype(bool), (0, index))
  return layers.AttnContext(
    q_positions_bt=positions_bt,
    q_slots_t=index + jnp.arange(positions_bt.shape[1], dtype=jnp.int32),
    kv_positions_bs=jax.lax.dynamic_update_slice(cache["positions"], positions_bt, (0, index)),
    kv_valid_bs=kv_valid,
    kv_slots_s=jnp.arange(kv_valid.shape[1], dtype=jnp.int32),
    cache_index=index,
  )


def _check_inputs(cfg: ModelConfig, tokens_bt, positions_bt, mask_bt, cache, segments_bt=None):
  """Static shape checks (run at trace time) with messages naming the bad argument."""
  if tokens_bt.ndim != 2:
    raise ValueError(f"tokens_bt must be [batch, time], got shape {tokens_bt.shape}")
  named = (("positions_bt", positions_bt), ("mask_bt", mask_bt), ("segments_bt", segments_bt))
  for name, arr in named:
    if arr is not None and arr.shape != tokens_bt.shape:
      raise ValueError(f"{name} shape {arr.shape} != tokens_bt shape {tokens_bt.shape}")
  if cache is None:
    return
  if segments_bt is not None:
    raise ValueError("segments_bt (packed rows) is for cache-free scoring, not decoding")
  b, t = tokens_bt.shape
  want = init_cache_shapes(cfg, b, cache["valid"].shape[-1] if "valid" in cache else 0)
  if set(cache) != set(want):
    raise ValueError(f"cache keys {sorted(cache)} != expected {sorted(want)}")
  for key, shape in want.items():
    if cache[key].shape != shape:
      raise ValueError(f"cache[{key!r}] shape {cache[key].shape} != expected {shape}")
  if t > want["valid"][1]:
    raise ValueError(f"{t} new tokens do not fit a cache of {want['valid'][1]} slots")


class Decoder(nn.Module):
  """Decoder-only LM. `__call__` returns (float32 logits [b, t, v], updated cache or None)."""

  config: ModelConfig

  @nn.compact
  def __call__(
    self,
    tokens_bt,
    positions_bt,
    mask_bt,
    cache: Cache | None = None,
    segments_bt=None,
    last_only: bool = False,
  ):
    cfg = self.config
    _check_inputs(cfg, tokens_bt, positions_bt, mask_bt, cache, segments_bt)
    positions_bt = positions_bt.astype(jnp.int32)
    mask_bt = mask_bt.astype(bool)
    t = tokens_bt.shape[1]
    if cache is None:
      kv, index = None, None
      ctx = cache_free_context(positions_bt, mask_bt, segments_bt)
    else:
      kv, index = (cache["k"], cache["v"]), cache["index"].astype(jnp.int32)
      ctx = cached_context(cache, positions_bt, mask_bt)

    embedder = Embedder(cfg, name="embedder")
    x_btd = embedder.encode(tokens_bt)
    stack = layer_stack(cfg, cfg.num_layers)
    (x_btd, kv), _ = stack(cfg, name="layers")((x_btd, kv), layer_inputs(cfg), ctx)
    if last_only:  # the sampler needs only the next token's logits: skip [b, t, vocab]
      x_btd = x_btd[:, -1:]
    norm, head = layers.RMSNorm(cfg, name="final_norm"), _lm_head(cfg, name="lm_head")
    logits_btv = _output_head(cfg, x_btd, norm, embedder.decode, head)
    logits_btv = layers.constrain(
      logits_btv, ("activation_batch", "activation_length", "activation_vocab")
    )
    if cache is None:
      return logits_btv, None
    new_cache = {"k": kv[0], "v": kv[1], "valid": ctx.kv_valid_bs, "positions": ctx.kv_positions_bs}
    return logits_btv, {**new_cache, "index": index + t}


def _dummy_inputs():
  ones = jnp.ones((1, 1), jnp.int32)
  return ones, ones, ones.astype(bool)


def init_params(config: ModelConfig, rng: jax.Array) -> PyTree:
  """Fresh parameters as plain (unboxed) arrays in `config.param_dtype`."""
  variables = Decoder(config).init(rng, *_dummy_inputs())
  return nn.meta.unbox(variables["params"])


def abstract_params(config: ModelConfig) -> PyTree:
  """Parameter tree of jax.ShapeDtypeStruct (no memory, no compute)."""
  return jax.tree.unflatten(*_abstract_params(config))


def param_logical_axes(config: ModelConfig) -> PyTree:
  """Parameter tree of PartitionSpec with logical axis names (see sharding.LOGICAL_RULES)."""
  return jax.tree.unflatten(*_param_logical_axes(config))


# Both trace the model's init (~0.2 s for a 4-layer model, more for large ones), and the loop asks
# for them every step (flops) and run (shardings). Cached per config as (treedef, leaves): each
# caller gets a new tree, so none can change another's.
@functools.lru_cache(maxsize=32)
def _abstract_params(config: ModelConfig):
  tree = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
  leaves, treedef = jax.tree.flatten(tree)
  return treedef, leaves


@functools.lru_cache(maxsize=32)
def _param_logical_axes(config: ModelConfig):
  boxed = jax.eval_shape(lambda: Decoder(config).init(jax.random.key(0), *_dummy_inputs()))
  specs = nn.get_partition_spec(boxed["params"])
  is_leaf = lambda x: isinstance(x, jax.sharding.PartitionSpec)
  leaves, treedef = jax.tree.flatten(specs, is_leaf=is_leaf)
  return treedef, leaves


def count_params(config: ModelConfig) -> int:
  """Number of parameters of `config` (computed abstractly)."""
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_params(config)))


def default_positions(mask_bt: jax.Array, cache: Cache | None = None) -> jax.Array:
  """RoPE positions for left-padded rows: real tokens count 0, 1, ... after those cached."""
  offset = 0 if cache is None else jnp.sum(cache["valid"], axis=1, keepdims=True)
  return jnp.maximum(jnp.cumsum(mask_bt.astype(jnp.int32), axis=1) - 1, 0) + offset


def forward(
  config: ModelConfig,
  params: PyTree,
  tokens_bt: jax.Array,
  positions_bt: jax.Array | None = None,
  mask_bt: jax.Array | None = None,
  cache: Cache | None = None,
  segments_bt: jax.Array | None = None,
  last_only: bool = False,
) -> tuple[jax.Array, Cache | None]:
  """Runs the decoder. mask defaults to all real; positions to `default_positions`.

  `last_only` returns the logits of the last column only ([b, 1, vocab]): a left-padded prefill
  or append needs just each row's next-token distribution, and the full [b, t, vocab] would be
  the largest buffer of the program (37 GiB per v5e device for the paper's MATH prefill).

  `logits_at_slots` computes the logits of chosen slots only (the RL update's).

  `segments_bt` (int, no cache) packs several sequences into a row: slots attend only within
  their own segment id; give each segment its own positions (0, 1, ...).
  """
  tokens_bt = jnp.asarray(tokens_bt, jnp.int32)
  if mask_bt is None:
    mask_bt = jnp.ones(tokens_bt.shape, bool)
  # Validate before deriving defaults so a bad shape gets the named error, not a jnp one.
  positions_or_tokens = tokens_bt if positions_bt is None else positions_bt
  _check_inputs(config, tokens_bt, positions_or_tokens, mask_bt, cache, segments_bt)
  if positions_bt is None:
    positions_bt = default_positions(jnp.asarray(mask_bt), cache)
  args = (tokens_bt, positions_bt, mask_bt, cache, segments_bt, last_only)
  return Decoder(config).apply({"params": params}, *args)


def init_cache_shapes(config: ModelConfig, batch_size: int, max_len: int) -> dict[str, tuple]:
  kv = (config.num_layers, batch_size, max_len, config.num_kv_heads, config.head_dim)
  slots = (batch_size, max_len)
  return {"k": kv, "v": kv, "valid": slots, "positions": slots, "index": ()}


# Parameters every use casts to the compute dtype first (Linear, Embedder); norm scales are
# used in float32 and keep their dtype.
CAST_AT_USE = ("kernel", "bias", "input_embedding")


def cast_for_inference(config: ModelConfig, params: PyTree) -> PyTree:
  """Params as a forward pass uses them: matmul weights in the compute dtype, norms as stored.

  Exactly the numbers the forward computes with (each use casts the same way), in half the
  memory for bf16 compute: the sampler's per-host replica on several hosts is this copy.
  """
  dt = config.compute_dtype

  def leaf(path, x):
    return x.astype(dt) if getattr(path[-1], "key", None) in CAST_AT_USE else x

  return jax.tree_util.tree_map_with_path(leaf, params)


CACHE_KV_AXES = (None, "activation_batch", "activation_length", "activation_kv_heads", None)


def constrain_cache(cache: Cache) -> Cache:
  """The cache's rows over the batch axes (inside jit under `parallel.mesh.use_rules`).

  Without it the compiler may keep a whole [l, b, s, n, k] cache on every device: the paper's
  MATH sampler (128 rows x 3200 slots per host of a v5e-16) then needs 22 GiB per device.
  """
  rows = ("activation_batch", "activation_length")
  return {
    "k": layers.constrain(cache["k"], CACHE_KV_AXES),
    "v": layers.constrain(cache["v"], CACHE_KV_AXES),
    "valid": layers.constrain(cache["valid"], rows),
    "positions": layers.constrain(cache["positions"], rows),
    "index": cache["index"],
  }


def init_cache(config: ModelConfig, batch_size: int, max_len: int, dtype=None) -> Cache:
  """Empty KV cache: k/v [l, b, s, n, k] (after RoPE), valid/positions [b, s], index [].

  Each call with t new tokens writes slots [index, index + t) for every row and advances index;
  the caller keeps index + t <= max_len (dynamic_update_slice would clamp, not fail, in jit).
  """
  if batch_size <= 0 or max_len <= 0:
    raise ValueError(f"init_cache needs positive sizes, got {batch_size=} {max_len=}")
  shapes = init_cache_shapes(config, batch_size, max_len)
  dt = jnp.dtype(dtype) if dtype is not None else config.compute_dtype
  return {
    "k": jnp.zeros(shapes["k"], dt),
    "v": jnp.zeros(shapes["v"], dt),
    "valid": jnp.zeros(shapes["valid"], bool),
    "positions": jnp.zeros(shapes["positions"], jnp.int32),
    "index": jnp.zeros((), jnp.int32),
  }


def _lm_head(cfg: ModelConfig, **kwargs) -> layers.Linear:
  """The untied output head (a tied one is `Embedder.decode`)."""
  return layers.Linear(cfg, (cfg.embed_dim, cfg.vocab_size), ("embed", "vocab"), **kwargs)


def _output_head(cfg: ModelConfig, x_btd, final_norm, tied_decode, lm_head) -> jax.Array:
  """Final norm and output head -> float32 logits, softcapped in float32 (HF: in the compute
  dtype; identical in float32). Given the modules: bound in `Decoder`, applied in
  `output_logits`; only the one the config uses is called (an untied head has no params)."""
  x_btd = final_norm(x_btd)
  logits_btv = tied_decode(x_btd) if cfg.tie_embeddings else lm_head(x_btd)
  return layers.softcap(logits_btv.astype(jnp.float32), cfg.final_logit_softcap)


def output_logits(config: ModelConfig, params: PyTree, x_btd: jax.Array) -> jax.Array:
  """The last layer's output -> float32 logits: `Decoder`'s final norm and head, applied alone."""
  cfg = config

  def norm(x):
    return layers.RMSNorm(cfg).apply({"params": params["final_norm"]}, x)

  def tied_decode(x):
    return Embedder(cfg).apply({"params": params["embedder"]}, x, method=Embedder.decode)

  def lm_head(x):
    return _lm_head(cfg).apply({"params": params["lm_head"]}, x)

  return _output_head(cfg, x_btd, norm, tied_decode, lm_head)


def logits_at_slots(
  config: ModelConfig,
  params: PyTree,
  tokens_bt: jax.Array,
  positions_bt: jax.Array,
  mask_bt: jax.Array,
  slots_bk: jax.Array,
  segments_bt: jax.Array | None = None,
) -> jax.Array:
  """`forward`'s float32 logits at each row's `slots_bk` (int [b, k]) only: [b, k, vocab].

  An RL update needs logits only before its loss tokens. Besides the vocabulary head (~1/5 of
  Gemma-2B's FLOPs), the last layer's queries, attention, o_proj and MLP run at those slots only;
  its keys and values, and every earlier layer, still need every slot. Same parameters, no
  cache; the layers before the last are the same scan as `Decoder`'s.
  """
  cfg = config
  tokens_bt = jnp.asarray(tokens_bt, jnp.int32)
  _check_inputs(cfg, tokens_bt, positions_bt, mask_bt, None, segments_bt)
  if slots_bk.ndim != 2 or slots_bk.shape[0] != tokens_bt.shape[0]:
    raise ValueError(f"slots_bk must be [batch, k], got {slots_bk.shape} for {tokens_bt.shape}")
  ctx = cache_free_context(positions_bt, mask_bt, segments_bt)
  emb = {"params": params["embedder"]}
  x_btd = Embedder(cfg).apply(emb, tokens_bt, method=Embedder.encode)
  inputs, last = layer_inputs(cfg), cfg.num_layers - 1
  if last:
    first = jax.tree.map(lambda p: p[:last], params["layers"])
    stack = layer_stack(cfg, last)(cfg)
    sliced = tuple(a[:last] for a in inputs)
    (x_btd, _), _ = stack.apply({"params": first}, (x_btd, None), sliced, ctx)
  block = _remat(layers.Block, cfg.remat_policy)(cfg)
  final = {"params": jax.tree.map(lambda p: p[last], params["layers"])}
  at_last = tuple(a[last] for a in inputs)
  (x_bkd, _), _ = block.apply(final, (x_btd, None), at_last, ctx, slots_bk.astype(jnp.int32))
  return layers.constrain(output_logits(cfg, params, x_bkd), layers.BTV)
