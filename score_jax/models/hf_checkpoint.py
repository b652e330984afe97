"""Hugging Face checkpoints: safetensors <-> our parameter tree (config.json: `hf_config`).

Owns the per-family HF name mapping (Gemma 1/2/3, Llama, Qwen2, Mistral), lazy (sharded)
safetensors reading, loading through the shared validated builder (`leaf_sources.build_params`,
optionally straight into mesh shardings), and export to `model.safetensors` + `config.json`
that transformers loads.
"""

import json
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import ml_dtypes
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from score_jax.models.checkpoint_errors import CheckpointError
from score_jax.models.config import ModelConfig
from score_jax.models.hf_config import hf_config_dict, load_hf_config
from score_jax.models.leaf_sources import (
  GetTensor,
  LeafSource,
  PyTree,
  build_params,
  source_shapes,
  to_host,
)

# Key prefixes of the text decoder, most specific first, with the matching lm_head key:
# transformers 5 Gemma3ForConditionalGeneration in memory, its (legacy) saved layout, plain LMs.
_PREFIXES = (
  ("model.language_model.", "lm_head.weight"),
  ("language_model.model.", "language_model.lm_head.weight"),
  ("model.", "lm_head.weight"),
)
# Non-text towers of multimodal checkpoints, skipped when loading the text decoder.
_MULTIMODAL = (
  "vision_tower.",
  "multi_modal_projector.",
  "model.vision_tower.",
  "model.multi_modal_projector.",
)


def _identity(x):
  return x


def _t(x):
  return x.T


def hf_sources(
  config: ModelConfig, prefix: str = "model.", lm_head_key: str = "lm_head.weight"
) -> list[LeafSource]:
  """The HF tensor behind every leaf of `config`'s parameter tree."""
  c = config
  d, f, v, nl = c.embed_dim, c.hidden_dim, c.vocab_size, c.num_layers
  h, n, k = c.num_heads, c.num_kv_heads, c.head_dim

  def layer(path, name, shape, fwd, inv):
    keys = tuple(f"{prefix}layers.{i}.{name}" for i in range(nl))
    return LeafSource(("layers", *path), keys, shape, fwd, inv)

  def proj(heads):  # HF [heads*k, d] <-> ours [d, heads, k]
    return (lambda w: w.T.reshape(d, heads, k)), (lambda x: x.reshape(d, heads * k).T)

  norm = lambda path, name: layer((*path, "scale"), name, (d,), _identity, _identity)
  out = [
    LeafSource(
      ("embedder", "input_embedding"),
      (f"{prefix}embed_tokens.weight",),
      (v, d),
      _identity,
      _identity,
      False,
    ),
    norm(("pre_attention_norm",), "input_layernorm.weight"),
    layer(("attn", "q_proj", "kernel"), "self_attn.q_proj.weight", (h * k, d), *proj(h)),
    layer(("attn", "k_proj", "kernel"), "self_attn.k_proj.weight", (n * k, d), *proj(n)),
    layer(("attn", "v_proj", "kernel"), "self_attn.v_proj.weight", (n * k, d), *proj(n)),
    layer(
      ("attn", "o_proj", "kernel"),
      "self_attn.o_proj.weight",
      (d, h * k),
      lambda w: w.T.reshape(h, k, d),
      lambda x: x.reshape(h * k, d).T,
    ),
    layer(("mlp", "gate_proj", "kernel"), "mlp.gate_proj.weight", (f, d), _t, _t),
    layer(("mlp", "up_proj", "kernel"), "mlp.up_proj.weight", (f, d), _t, _t),
    layer(("mlp", "down_proj", "kernel"), "mlp.down_proj.weight", (d, f), _t, _t),
    LeafSource(
      ("final_norm", "scale"), (f"{prefix}norm.weight",), (d,), _identity, _identity, False
    ),
  ]
  if c.qkv_bias:
    for name, heads in (("q_proj", h), ("k_proj", n), ("v_proj", n)):
      fwd, inv = (lambda w, hh=heads: w.reshape(hh, k)), (lambda x: x.reshape(-1))
      out.append(layer(("attn", name, "bias"), f"self_attn.{name}.bias", (heads * k,), fwd, inv))
  if c.qk_norm:
    out.append(
      layer(("attn", "q_norm", "scale"), "self_attn.q_norm.weight", (k,), _identity, _identity)
    )
    out.append(
      layer(("attn", "k_norm", "scale"), "self_attn.k_norm.weight", (k,), _identity, _identity)
    )
  if c.use_post_attn_norm:  # Gemma 2/3: HF's post_attention_layernorm really is post-attention
    out.append(norm(("post_attention_norm",), "post_attention_layernorm.weight"))
    out.append(norm(("pre_ffw_norm",), "pre_feedforward_layernorm.weight"))
  else:  # Llama & Gemma 1 name the pre-MLP norm post_attention_layernorm
    out.append(norm(("pre_ffw_norm",), "post_attention_layernorm.weight"))
  if c.use_post_ffw_norm:
    out.append(norm(("post_ffw_norm",), "post_feedforward_layernorm.weight"))
  if not c.tie_embeddings:
    out.append(LeafSource(("lm_head", "kernel"), (lm_head_key,), (v, d), _t, _t, False))
  return out


def hf_param_shapes(config: ModelConfig, prefix: str = "model.") -> dict[str, tuple[int, ...]]:
  """HF tensor name -> shape that a checkpoint for `config` must hold (used by the GGUF loader)."""
  return source_shapes(hf_sources(config, prefix))


def _detect_prefix(keys) -> tuple[str, str]:
  keys = set(keys)
  for prefix, head in _PREFIXES:
    if f"{prefix}embed_tokens.weight" in keys:
      return prefix, head
  raise CheckpointError(
    "no embedding tensor found: expected one of "
    + ", ".join(f"{p}embed_tokens.weight" for p, _ in _PREFIXES)
  )


def params_from_hf(
  config: ModelConfig,
  get_tensor: GetTensor,
  mesh: jax.sharding.Mesh | None = None,
  *,
  hf_shapes: Mapping[str, tuple[int, ...]] | None = None,
  prefix: str | None = None,
  source: str = "HF checkpoint",
) -> PyTree:
  """Our params from HF tensors fetched by name (`get_tensor(hf_key) -> np.ndarray`).

  Args:
    config: target architecture; dtypes are cast to config.param_dtype.
    get_tensor: returns one HF tensor by its key name.
    mesh: when given, leaves are built sharded (see `build_params`).
    hf_shapes: every key the checkpoint holds -> shape; enables full validation up front and
      prefix detection (`model.`, `model.language_model.`, `language_model.model.`).
    prefix: key prefix of the decoder; default detected from hf_shapes, else `model.`.
    source: name used in error messages.
  """
  if prefix is None:
    prefix, head = _detect_prefix(hf_shapes) if hf_shapes is not None else _PREFIXES[-1]
  else:
    head = dict(_PREFIXES).get(prefix, "lm_head.weight")
  multimodal = prefix != "model."

  def ignore(key: str) -> bool:
    if key.endswith("rotary_emb.inv_freq"):  # buffers some old checkpoints saved; unused
      return True
    if key == head and config.tie_embeddings:  # transformers ties and drops it on load too
      return True
    return multimodal and key.startswith(_MULTIMODAL)

  sources = hf_sources(config, prefix, head)
  return build_params(
    config, sources, get_tensor, mesh, available=hf_shapes, ignore=ignore, source=source
  )


class SafetensorsReader:
  """Lazy reader of `model.safetensors` or a sharded `model.safetensors.index.json` set."""

  def __init__(self, path: str | pathlib.Path):
    p = pathlib.Path(path)
    if p.is_dir():
      index, single = p / "model.safetensors.index.json", p / "model.safetensors"
      p = index if index.exists() else single
      if not p.exists():
        raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json")
    self.source = str(p)
    if p.name.endswith(".index.json"):
      try:
        weight_map = json.loads(p.read_text())["weight_map"]
      except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{p}: not a safetensors index with a 'weight_map' ({e})") from e
      files = {name: p.parent / name for name in sorted(set(weight_map.values()))}
    elif p.suffix == ".safetensors":
      files, weight_map = {p.name: p}, None
    else:
      raise CheckpointError(f"{p}: expected a .safetensors file, an index .json or a directory")
    self._handles, self.shapes, self._file_of, self._dtypes = {}, {}, {}, {}
    for name, file in files.items():
      if not file.exists():
        raise CheckpointError(f"{p}: shard {name} listed in the index does not exist")
      handle = safe_open(str(file), framework="numpy")
      self._handles[name] = handle
      for key in handle.keys():
        sl = handle.get_slice(key)
        self.shapes[key], self._dtypes[key], self._file_of[key] = (
          tuple(sl.get_shape()),
          sl.get_dtype(),
          name,
        )
    if weight_map is not None:
      wrong = [f"{k} (index: {f})" for k, f in weight_map.items() if self._file_of.get(k) != f]
      if wrong:
        raise CheckpointError(
          f"{p}: index entries not found in their shard: {', '.join(wrong[:20])}"
        )

  def get_tensor(self, key: str) -> np.ndarray:
    """One tensor as numpy; bfloat16 comes back as ml_dtypes.bfloat16 (numpy has none)."""
    x = self._handles[self._file_of[key]].get_tensor(key)
    if self._dtypes[key] == "BF16":
      x = x.view(ml_dtypes.bfloat16)
    return x


def load_hf_checkpoint(
  path_or_dir: str | pathlib.Path,
  config: ModelConfig | None = None,
  mesh: jax.sharding.Mesh | None = None,
) -> tuple[ModelConfig, PyTree]:
  """Loads (config, params) from an HF directory or a .safetensors / index file.

  config defaults to the directory's config.json (see `load_hf_config`).
  """
  path = pathlib.Path(path_or_dir)
  if config is None:
    config = load_hf_config(path if path.is_dir() else path.parent)
  reader = SafetensorsReader(path)
  params = params_from_hf(
    config, reader.get_tensor, mesh, hf_shapes=reader.shapes, source=reader.source
  )
  return config, params


def export_hf(
  config: ModelConfig,
  params: PyTree,
  out_dir: str | pathlib.Path,
  *,
  extra_config: Mapping[str, Any] | None = None,
  max_shard_bytes: int | None = None,
) -> pathlib.Path:
  """Writes `model.safetensors` (or shards + index) and `config.json` for transformers.

  Tensors keep the params' dtype. extra_config is merged into config.json (e.g. token ids).
  On several hosts every process must call this; only process 0 writes.
  """
  cfg_json = hf_config_dict(config)
  cfg_json.update(extra_config or {})
  out = pathlib.Path(out_dir)
  tensors: dict[str, np.ndarray] = {}
  for src in hf_sources(config):
    leaf = params
    for name in src.path:
      if name not in leaf:
        raise CheckpointError(
          f"params have no leaf {'/'.join(src.path)} needed for {config.family}"
        )
      leaf = leaf[name]
    value = to_host(leaf)
    layers = value if src.stacked else value[None]
    for key, x in zip(src.keys, layers):
      tensors[key] = np.ascontiguousarray(src.to_source(x))
  if jax.process_index() != 0:
    return out
  out.mkdir(parents=True, exist_ok=True)
  meta = {"format": "pt"}  # transformers refuses safetensors without this metadata tag
  total = sum(x.nbytes for x in tensors.values())
  if max_shard_bytes is None or total <= max_shard_bytes:
    save_file(tensors, str(out / "model.safetensors"), metadata=meta)
  else:
    groups, size = [[]], 0
    for key, x in tensors.items():
      if groups[-1] and size + x.nbytes > max_shard_bytes:
        groups.append([])
        size = 0
      groups[-1].append(key)
      size += x.nbytes
    weight_map = {}
    for i, keys in enumerate(groups):
      name = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
      save_file({k: tensors[k] for k in keys}, str(out / name), metadata=meta)
      weight_map.update({k: name for k in keys})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
  (out / "config.json").write_text(json.dumps(cfg_json, indent=2, sort_keys=True) + "\n")
  return out
