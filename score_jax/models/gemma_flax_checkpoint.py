"""The official Gemma Flax/Orbax checkpoint layout (Kaggle releases, google-deepmind/gemma).

Per layer `layer_{i}/attn/{q_einsum [H,D,K], kv_einsum [2,N,D,K] | qkv_einsum [3,H,D,K] (MHA),
attn_vec_einsum [H,K,D], _query_norm, _key_norm}`, `mlp/{gating_einsum [2,D,F] or, with
transpose_gating_einsum (Gemma 2 9B/27B, Gemma 3), [2,F,D]; linear [F,D]}` (index 0 of the
gating tensor is the gelu gate, 1 the up projection), `pre_attention_norm`, `post_attention_norm`,
`pre_ffw_norm`, `post_ffw_norm` (norm `scale` = w of x*(1+w), as ours), plus `embedder/
input_embedding [V,D]` and `final_norm/scale`. Read both on-disk forms: FLAT (the released
checkpoints: `{'transformer/layer_0/attn/q_einsum': {'w': ...}}`) and NESTED (`{'layer_0':
{'attn': ...}}`, Flax `model.init` structure as saved by `gm.ckpts.save_params`). Tensors are
restored one at a time (Orbax partial restore) and go through the shared validated builder.
"""

import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from score_jax.models.checkpoint_errors import CheckpointError
from score_jax.models.config import ModelConfig
from score_jax.models.leaf_sources import LeafSource, build_params, to_host

PyTree = Any
# Multimodal parts of Gemma 3 checkpoints, skipped by this text-only loader.
_IGNORED = ("SigLiPFromPatches_0/", "vision_encoder/", "embedder/mm_")
# Leaves stored directly under `mlp/...` in NESTED form but as `mlp/...` + {'w'} in FLAT form.
_MLP_LEAVES = ("/mlp/gating_einsum", "/mlp/linear")


def _check_config(config: ModelConfig) -> None:
  if not config.family.startswith("gemma") or not config.norm_plus_one or config.qkv_bias:
    raise CheckpointError(
      f"the Gemma Flax layout holds Gemma models only; got family {config.family}"
    )
  if not config.tie_embeddings:
    raise CheckpointError(
      "the Gemma Flax layout has no lm_head: config.tie_embeddings must be True"
    )


def default_transpose_gating(config: ModelConfig) -> bool:
  """Orientation the gemma repo uses by family (Gemma 2 9B/27B also transpose: pass it)."""
  return config.family == "gemma3"


def flax_sources(
  config: ModelConfig, transpose_gating_einsum: bool, vocab_rows: int | None = None
) -> list[LeafSource]:
  """Where every leaf of our tree lives in the (canonical, `transformer/`-less) Flax layout."""
  _check_config(config)
  c = config
  d, f, v = c.embed_dim, c.hidden_dim, c.vocab_size
  h, n, k = c.num_heads, c.num_kv_heads, c.head_dim
  rows = vocab_rows or v

  def layer(path, name, shape, fwd):
    keys = tuple(f"layer_{i}/{name}" for i in range(c.num_layers))
    return LeafSource(("layers", *path), keys, shape, fwd)

  dhk = lambda x: x.transpose(1, 0, 2)  # [heads, D, K] -> [D, heads, K]
  out = [
    LeafSource(
      ("embedder", "input_embedding"),
      ("embedder/input_embedding",),
      (rows, d),
      lambda x: x[:v],
      stacked=False,
    ),
    LeafSource(("final_norm", "scale"), ("final_norm/scale",), (d,), lambda x: x, stacked=False),
    layer(("attn", "o_proj", "kernel"), "attn/attn_vec_einsum/w", (h, k, d), lambda x: x),
    layer(("mlp", "down_proj", "kernel"), "mlp/linear/w", (f, d), lambda x: x),
  ]
  if n == h:  # MHA checkpoints fuse q, k and v
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
      out.append(
        layer(("attn", name, "kernel"), "attn/qkv_einsum/w", (3, h, d, k), lambda x, i=i: dhk(x[i]))
      )
  else:
    out.append(layer(("attn", "q_proj", "kernel"), "attn/q_einsum/w", (h, d, k), dhk))
    for i, name in enumerate(("k_proj", "v_proj")):
      out.append(
        layer(("attn", name, "kernel"), "attn/kv_einsum/w", (2, n, d, k), lambda x, i=i: dhk(x[i]))
      )
  gating = (2, f, d) if transpose_gating_einsum else (2, d, f)
  for i, name in enumerate(("gate_proj", "up_proj")):
    fwd = (lambda x, i=i: x[i].T) if transpose_gating_einsum else (lambda x, i=i: x[i])
    out.append(layer(("mlp", name, "kernel"), "mlp/gating_einsum/w", gating, fwd))
  norms = [("pre_attention_norm", "pre_attention_norm", d), ("pre_ffw_norm", "pre_ffw_norm", d)]
  if c.use_post_attn_norm:
    norms.append(("post_attention_norm", "post_attention_norm", d))
  if c.use_post_ffw_norm:
    norms.append(("post_ffw_norm", "post_ffw_norm", d))
  if c.qk_norm:
    norms += [("attn/q_norm", "attn/_query_norm", k), ("attn/k_norm", "attn/_key_norm", k)]
  for ours, theirs, size in norms:
    out.append(layer((*ours.split("/"), "scale"), f"{theirs}/scale", (size,), lambda x: x))
  return out


def _walk(tree: Mapping, prefix: tuple = ()):
  for key, value in tree.items():
    if isinstance(value, Mapping):
      yield from _walk(value, (*prefix, key))
    else:
      yield (*prefix, key), value


def _canonical(path: tuple[str, ...]) -> str:
  """Checkpoint tree path -> `layer_0/attn/q_einsum/w` style name, whichever on-disk form."""
  name = "/".join(path)
  name = name.removeprefix("transformer/")
  return name + "/w" if name.endswith(_MLP_LEAVES) else name


class OrbaxReader:
  """Lists a Gemma Orbax checkpoint from its metadata and restores one tensor at a time."""

  def __init__(self, path: str | pathlib.Path):
    self.path = pathlib.Path(path).absolute()
    self._ckpt = ocp.PyTreeCheckpointer()
    try:
      meta = self._ckpt.metadata(self.path)
    except (FileNotFoundError, ValueError) as e:
      raise CheckpointError(f"{self.path}: not an Orbax checkpoint ({e})") from e
    meta = getattr(meta, "item_metadata", meta)
    tree = getattr(meta, "tree", meta)
    if not isinstance(tree, Mapping):  # orbax only warns when the directory holds no PyTree
      raise CheckpointError(f"{self.path}: not an Orbax checkpoint (no PyTree metadata found)")
    self._paths, self.shapes = {}, {}
    for path, leaf in _walk(tree):
      name = _canonical(tuple(str(p) for p in path))
      self._paths[name], self.shapes[name] = path, tuple(leaf.shape)

  def get_tensor(self, name: str) -> np.ndarray:
    path = self._paths[name]
    item: dict = {}
    args: dict = {}
    node_i, node_a = item, args
    for p in path[:-1]:
      node_i, node_a = node_i.setdefault(p, {}), node_a.setdefault(p, {})
    node_i[path[-1]] = 0
    node_a[path[-1]] = ocp.RestoreArgs(restore_type=np.ndarray)
    out = self._ckpt.restore(
      self.path, args=ocp.args.PyTreeRestore(item=item, restore_args=args, partial_restore=True)
    )
    for p in path:
      out = out[p]
    return np.asarray(out)


def load_gemma_flax(
  path: str | pathlib.Path,
  config: ModelConfig,
  mesh: jax.sharding.Mesh | None = None,
  *,
  transpose_gating_einsum: bool | None = None,
  drop_extra_vocab: bool = False,
) -> PyTree:
  """Loads a Gemma Flax/Orbax checkpoint (FLAT or NESTED form) into our parameter tree.

  Args:
    path: the Orbax checkpoint directory.
    config: the architecture (the layout stores no config; use a gemma preset).
    mesh: when given, leaves are born sharded (see leaf_sources.build_params).
    transpose_gating_einsum: gating tensor orientation; None infers it from its shape.
    drop_extra_vocab: Gemma 1/2 releases pad the embedding to 256128 rows; keep only the
      first config.vocab_size rows instead of failing on the shape.
  """
  _check_config(config)
  reader = OrbaxReader(path)
  source = str(reader.path)
  d, f = config.embed_dim, config.hidden_dim
  gating = reader.shapes.get("layer_0/mlp/gating_einsum/w")
  if transpose_gating_einsum is None and gating is not None:
    if d == f:
      raise CheckpointError(f"{source}: embed_dim == hidden_dim; pass transpose_gating_einsum")
    transpose_gating_einsum = tuple(gating) == (2, f, d)
  rows = None
  emb = reader.shapes.get("embedder/input_embedding")
  if drop_extra_vocab and emb is not None and emb[0] > config.vocab_size:
    rows = emb[0]
  sources = flax_sources(config, bool(transpose_gating_einsum), rows)
  ignore = lambda key: key.startswith(_IGNORED)
  return build_params(
    config, sources, reader.get_tensor, mesh, available=reader.shapes, ignore=ignore, source=source
  )


def flax_tree(
  config: ModelConfig, params: PyTree, *, transpose_gating_einsum: bool | None = None
) -> dict[str, np.ndarray]:
  """Our params as canonical Flax-layout tensors (`layer_0/attn/q_einsum/w` -> array)."""
  _check_config(config)
  t = (
    default_transpose_gating(config) if transpose_gating_einsum is None else transpose_gating_einsum
  )
  host = jax.tree.map(to_host, params)
  layers, attn, mlp = host["layers"], host["layers"]["attn"], host["layers"]["mlp"]
  q, kk, vv, o = (attn[n]["kernel"] for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
  out = {
    "embedder/input_embedding": host["embedder"]["input_embedding"],
    "final_norm/scale": host["final_norm"]["scale"],
  }
  hdk = lambda x: x.transpose(1, 0, 2)  # [D, heads, K] -> [heads, D, K]
  for i in range(config.num_layers):
    pre = f"layer_{i}/"
    if config.num_kv_heads == config.num_heads:
      out[pre + "attn/qkv_einsum/w"] = np.stack([hdk(q[i]), hdk(kk[i]), hdk(vv[i])])
    else:
      out[pre + "attn/q_einsum/w"] = hdk(q[i])
      out[pre + "attn/kv_einsum/w"] = np.stack([hdk(kk[i]), hdk(vv[i])])
    out[pre + "attn/attn_vec_einsum/w"] = o[i]
    gate, up = mlp["gate_proj"]["kernel"][i], mlp["up_proj"]["kernel"][i]
    out[pre + "mlp/gating_einsum/w"] = np.stack([gate.T, up.T] if t else [gate, up])
    out[pre + "mlp/linear/w"] = mlp["down_proj"]["kernel"][i]
    for ours, theirs in (
      ("pre_attention_norm", "pre_attention_norm"),
      ("pre_ffw_norm", "pre_ffw_norm"),
      ("post_attention_norm", "post_attention_norm"),
      ("post_ffw_norm", "post_ffw_norm"),
    ):
      if ours in layers:
        out[pre + theirs + "/scale"] = layers[ours]["scale"][i]
    if config.qk_norm:
      for ours, theirs in (("q_norm", "_query_norm"), ("k_norm", "_key_norm")):
        out[pre + f"attn/{theirs}/scale"] = attn[ours]["scale"][i]
  return out


def to_flat(tensors: Mapping[str, np.ndarray]) -> dict:
  """Canonical names -> the released FLAT form {'transformer/a/b': {'w': x}}."""
  out: dict = {}
  for name, x in tensors.items():
    parent, leaf = name.rsplit("/", 1)
    out.setdefault(f"transformer/{parent}", {})[leaf] = x
  return out


def to_nested(tensors: Mapping[str, np.ndarray]) -> dict:
  """Canonical names -> the NESTED Flax `model.init` form (mlp leaves without 'w')."""
  out: dict = {}
  for name, x in tensors.items():
    if name.endswith(tuple(m + "/w" for m in _MLP_LEAVES)):
      name = name[: -len("/w")]
    *parents, leaf = name.split("/")
    node = out
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = x
  return out


def save_gemma_flax(
  config: ModelConfig,
  params: PyTree,
  path: str | pathlib.Path,
  *,
  layout: str = "flat",
  transpose_gating_einsum: bool | None = None,
) -> pathlib.Path:
  """Saves our params as a Gemma Flax/Orbax checkpoint (layout 'flat' as released, or 'nested')."""
  if layout not in ("flat", "nested"):
    raise ValueError(f"layout must be 'flat' or 'nested', got {layout!r}")
  tensors = flax_tree(config, params, transpose_gating_einsum=transpose_gating_einsum)
  tree = to_flat(tensors) if layout == "flat" else to_nested(tensors)
  path = pathlib.Path(path).absolute()
  ocp.PyTreeCheckpointer().save(path, tree)
  return path
