"""Gemma Flax/Orbax layout: a hand-built release-format checkpoint loads to the HF weights."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
import transformers

from score_jax.models import decoder, gemma_flax_checkpoint, hf_checkpoint, hf_config
from score_jax.models import sharding as model_sharding
from score_jax.models.checkpoint_errors import CheckpointError
from score_jax.parallel import mesh as mesh_lib
from tests import numerics

pytestmark = pytest.mark.numerics

TINY = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_attention_heads=4,
            head_dim=16, max_position_embeddings=256)  # fmt: skip
VARIANTS = {  # name -> (HF config, gating orientation of the Flax checkpoint)
  "gemma_mqa": (
    lambda: transformers.GemmaConfig(**TINY, num_hidden_layers=2, num_key_value_heads=1),
    False,
  ),  # fmt: skip
  "gemma_mha": (
    lambda: transformers.GemmaConfig(**TINY, num_hidden_layers=2, num_key_value_heads=4),
    False,
  ),  # fmt: skip
  "gemma2": (
    lambda: transformers.Gemma2Config(
      **TINY, num_hidden_layers=2, num_key_value_heads=2, sliding_window=8
    ),
    True,
  ),  # fmt: skip
}


def hf_model(name):
  torch.manual_seed(0)
  model = transformers.AutoModelForCausalLM.from_config(
    VARIANTS[name][0](), attn_implementation="eager"
  )
  with torch.no_grad():
    for pname, p in model.named_parameters():
      if "norm" in pname:
        p.copy_(torch.randn_like(p) * 0.5)
  return model.eval()


def release_tree(model, transpose: bool) -> dict:
  """The FLAT release layout written by hand from the HF state dict (independent of our code)."""
  cfg = model.config
  h, n, k, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.hidden_size
  sd = {key: v.detach().numpy() for key, v in model.state_dict().items()}
  heads_dk = lambda w, m: w.reshape(m, k, d).transpose(0, 2, 1)  # HF [m*K, D] -> [m, D, K]
  tree = {
    "transformer/embedder": {"input_embedding": sd["model.embed_tokens.weight"]},
    "transformer/final_norm": {"scale": sd["model.norm.weight"]},
  }
  for i in range(cfg.num_hidden_layers):
    p, t = f"model.layers.{i}.", f"transformer/layer_{i}/"
    q = heads_dk(sd[p + "self_attn.q_proj.weight"], h)
    kk, vv = (heads_dk(sd[p + f"self_attn.{x}_proj.weight"], n) for x in "kv")
    if n == h:
      tree[t + "attn/qkv_einsum"] = {"w": np.stack([q, kk, vv])}
    else:
      tree[t + "attn/q_einsum"] = {"w": q}
      tree[t + "attn/kv_einsum"] = {"w": np.stack([kk, vv])}
    tree[t + "attn/attn_vec_einsum"] = {"w": sd[p + "self_attn.o_proj.weight"].T.reshape(h, k, d)}
    gate, up = sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]  # [F, D]
    tree[t + "mlp/gating_einsum"] = {"w": np.stack([gate, up] if transpose else [gate.T, up.T])}
    tree[t + "mlp/linear"] = {"w": sd[p + "mlp.down_proj.weight"].T}
    tree[t + "pre_attention_norm"] = {"scale": sd[p + "input_layernorm.weight"]}
    if "pre_feedforward_layernorm.weight" in "".join(sd):
      tree[t + "pre_ffw_norm"] = {"scale": sd[p + "pre_feedforward_layernorm.weight"]}
      tree[t + "post_attention_norm"] = {"scale": sd[p + "post_attention_layernorm.weight"]}
      tree[t + "post_ffw_norm"] = {"scale": sd[p + "post_feedforward_layernorm.weight"]}
    else:
      tree[t + "pre_ffw_norm"] = {"scale": sd[p + "post_attention_layernorm.weight"]}
  return tree


def assert_trees_equal(a, b):
  """Exact: layouts are reshapes, transposes and copies of the same float32 values."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_release_layout_matches_hf(name, tmp_path):
  model = hf_model(name)
  transpose = VARIANTS[name][1]
  model.save_pretrained(tmp_path / "hf")
  config, hf_params = hf_checkpoint.load_hf_checkpoint(tmp_path / "hf")
  tree = release_tree(model, transpose)
  ocp.PyTreeCheckpointer().save(tmp_path / "flax", tree)
  params = gemma_flax_checkpoint.load_gemma_flax(tmp_path / "flax", config)  # orientation inferred
  assert_trees_equal(params, hf_params)

  tokens = np.random.default_rng(0).integers(1, 320, size=(2, 12)).astype(np.int32)
  mask = np.arange(12)[None] >= np.array([[0], [5]])
  with torch.no_grad():
    ref = model(
      input_ids=torch.tensor(tokens, dtype=torch.long),
      attention_mask=torch.tensor(mask, dtype=torch.long),
      position_ids=torch.tensor(np.maximum(mask.cumsum(1) - 1, 0)),
    ).logits.numpy()
  ours = np.asarray(decoder.forward(config, params, tokens, mask_bt=mask)[0])
  bound = numerics.logit_bound(config, 12, np.abs(ref[mask]).max())
  numerics.assert_close(ours, ref, bound, where=mask, what=f"{name} vs transformers")

  # Our writer reproduces the release layout exactly, and the NESTED form round-trips too.
  written = gemma_flax_checkpoint.save_gemma_flax(
    config, params, tmp_path / "ours", transpose_gating_einsum=transpose
  )
  assert_trees_equal(ocp.PyTreeCheckpointer().restore(written), tree)
  nested = gemma_flax_checkpoint.save_gemma_flax(
    config, params, tmp_path / "nested", layout="nested"
  )
  assert_trees_equal(gemma_flax_checkpoint.load_gemma_flax(nested, config), params)


def test_sharded_load_and_vocab_padding(tmp_path):
  model = hf_model("gemma2")
  model.save_pretrained(tmp_path / "hf")
  config, hf_params = hf_checkpoint.load_hf_checkpoint(tmp_path / "hf")
  tree = release_tree(model, True)
  emb = tree["transformer/embedder"]["input_embedding"]
  tree["transformer/embedder"]["input_embedding"] = np.concatenate(
    [emb, np.ones((16, 64), np.float32)]
  )
  ocp.PyTreeCheckpointer().save(tmp_path / "flax", tree)
  with pytest.raises(
    CheckpointError, match=r"embedder/input_embedding \(expected \(320, 64\), found \(336, 64\)\)"
  ):
    gemma_flax_checkpoint.load_gemma_flax(tmp_path / "flax", config)
  mesh = mesh_lib.make_mesh((1, 2, 4))
  params = gemma_flax_checkpoint.load_gemma_flax(
    tmp_path / "flax", config, mesh, drop_extra_vocab=True
  )
  assert_trees_equal(params, hf_params)
  for leaf, want in zip(
    jax.tree.leaves(params), jax.tree.leaves(model_sharding.param_shardings(config, mesh))
  ):
    assert leaf.sharding == want


def test_errors(tmp_path):
  model = hf_model("gemma_mqa")
  model.save_pretrained(tmp_path / "hf")
  config, _ = hf_checkpoint.load_hf_checkpoint(tmp_path / "hf")
  tree = release_tree(model, False)
  del tree["transformer/layer_1/attn/kv_einsum"]
  tree["transformer/layer_0/attn/extra"] = {"w": np.zeros(2, np.float32)}
  ocp.PyTreeCheckpointer().save(tmp_path / "missing", tree)
  with pytest.raises(CheckpointError, match=r"1 missing tensor\(s\): layer_1/attn/kv_einsum/w"):
    gemma_flax_checkpoint.load_gemma_flax(tmp_path / "missing", config)
  tree["transformer/layer_1/attn/kv_einsum"] = release_tree(model, False)[
    "transformer/layer_1/attn/kv_einsum"
  ]
  ocp.PyTreeCheckpointer().save(tmp_path / "extra", tree)
  with pytest.raises(CheckpointError, match=r"1 unexpected tensor\(s\): layer_0/attn/extra/w"):
    gemma_flax_checkpoint.load_gemma_flax(tmp_path / "extra", config)
  llama = hf_config.load_hf_config(tmp_path / "hf", family="llama", norm_plus_one=False)
  with pytest.raises(CheckpointError, match="Gemma models only; got family llama"):
    gemma_flax_checkpoint.load_gemma_flax(tmp_path / "extra", llama)
  with pytest.raises(CheckpointError, match="not an Orbax checkpoint"):
    gemma_flax_checkpoint.load_gemma_flax(tmp_path / "nowhere", config)
