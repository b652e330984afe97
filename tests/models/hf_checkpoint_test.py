"""HF safetensors import/export: logits parity with transformers, sharded loads, clear errors."""

import json

import jax
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import save_file

from score_jax.models import decoder, hf_checkpoint, hf_config, presets
from score_jax.models import sharding as model_sharding
from score_jax.models.checkpoint_errors import CheckpointError
from score_jax.parallel import mesh as mesh_lib
from tests import numerics

pytestmark = pytest.mark.numerics

TINY = dict(
  vocab_size=320,
  hidden_size=64,
  intermediate_size=128,
  num_attention_heads=4,
  num_key_value_heads=2,
  head_dim=16,
  max_position_embeddings=256,
)
LLAMA3_ROPE = dict(rope_type="llama3", rope_theta=500_000.0, factor=8.0, low_freq_factor=1.0,
                   high_freq_factor=4.0, original_max_position_embeddings=16)  # fmt: skip
GEMMA3_ROPE = {
  "full_attention": dict(rope_type="linear", factor=2.0, rope_theta=1_000_000.0),
  "sliding_attention": dict(rope_type="default", rope_theta=10_000.0),
}
# Small caps and an unusual query scalar so each setting visibly changes the logits.
HF_CONFIGS = {
  "gemma": lambda: transformers.GemmaConfig(
    **{**TINY, "num_key_value_heads": 1}, num_hidden_layers=2
  ),  # fmt: skip
  "gemma2": lambda: transformers.Gemma2Config(
    **TINY,
    num_hidden_layers=3,
    sliding_window=8,
    query_pre_attn_scalar=24,
    attn_logit_softcapping=3.0,
    final_logit_softcapping=2.0,
  ),  # fmt: skip
  "gemma3": lambda: transformers.Gemma3TextConfig(
    **TINY,
    num_hidden_layers=4,
    sliding_window=8,
    query_pre_attn_scalar=32,
    layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
    rope_parameters=GEMMA3_ROPE,
  ),  # fmt: skip
  "llama": lambda: transformers.LlamaConfig(
    **TINY, num_hidden_layers=2, tie_word_embeddings=False, rope_parameters=LLAMA3_ROPE
  ),
  "qwen2": lambda: transformers.Qwen2Config(**TINY, num_hidden_layers=2, tie_word_embeddings=True),
  "mistral": lambda: transformers.MistralConfig(
    **TINY, num_hidden_layers=2, sliding_window=8, tie_word_embeddings=False
  ),
}
# Mixed lengths, left padded; all longer than the sliding window of 8.
LENGTHS = (20, 13, 9)
T = 20


def make_hf_model(family: str, seed: int = 0, cls=transformers.AutoModelForCausalLM):
  torch.manual_seed(seed)
  model = cls.from_config(HF_CONFIGS[family](), attn_implementation="eager").eval()
  with torch.no_grad():  # randomise norms (catches a (1+w) mixup) and biases (init at 0)
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(torch.randn_like(p) * 0.5)
      elif name.endswith("bias"):
        p.copy_(torch.randn_like(p) * 0.1)
  return model


def batch(vocab: int = 320, seed: int = 1):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, vocab, size=(len(LENGTHS), T)).astype(np.int32)
  mask = np.arange(T)[None, :] >= (T - np.array(LENGTHS))[:, None]
  tokens = np.where(mask, tokens, 0)
  return tokens, mask


def hf_logits(model, tokens, mask) -> np.ndarray:
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  with torch.no_grad():
    out = model(
      input_ids=torch.tensor(tokens, dtype=torch.long),
      attention_mask=torch.tensor(mask, dtype=torch.long),
      position_ids=torch.tensor(positions, dtype=torch.long),
    )
  return out.logits.float().numpy()


def assert_logits_close(config, ours, ref, mask, what) -> float:
  """Our float32 forward vs transformers' (another summation order): tests/numerics.py."""
  ref = np.asarray(ref)
  bound = numerics.logit_bound(config, T, np.abs(ref[mask]).max())
  return numerics.assert_close(ours, ref, bound, where=mask, what=what)


def our_logits(config, params, tokens, mask) -> np.ndarray:
  return np.asarray(decoder.forward(config, params, tokens, mask_bt=mask)[0])


@pytest.mark.parametrize("family", list(HF_CONFIGS))
def test_hf_parity_and_export_roundtrip(family, tmp_path):
  model = make_hf_model(family)
  model.save_pretrained(tmp_path / "hf")
  config, params = hf_checkpoint.load_hf_checkpoint(tmp_path / "hf")
  assert config.family == family
  tokens, mask = batch()
  ref = hf_logits(model, tokens, mask)
  ours = our_logits(config, params, tokens, mask)
  err = assert_logits_close(config, ours, ref, mask, f"{family} vs transformers")
  print(f"{family}: max logit error vs transformers {err:.2e}")

  hf_checkpoint.export_hf(config, params, tmp_path / "out")
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(
    tmp_path / "out", attn_implementation="eager"
  ).eval()
  assert type(reloaded) is type(model)
  # The export round-trips every float32 weight bit for bit (exact); the reloaded model's
  # logits then differ from the original's by at most torch's own rounding.
  want = dict(model.named_parameters())
  for name, p in reloaded.named_parameters():
    np.testing.assert_array_equal(p.detach().numpy(), want[name].detach().numpy(), err_msg=name)
  assert_logits_close(config, hf_logits(reloaded, tokens, mask), ref, mask, "reloaded export")
  assert hf_config.load_hf_config(tmp_path / "out") == config


@pytest.mark.slow
def test_sharded_index_and_mesh_load(tmp_path):
  model = make_hf_model("gemma3")
  model.save_pretrained(tmp_path / "hf", max_shard_size="40KB")
  assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
  config, params = hf_checkpoint.load_hf_checkpoint(tmp_path / "hf")
  mesh = mesh_lib.make_mesh((1, 2, 4))
  _, sharded = hf_checkpoint.load_hf_checkpoint(tmp_path / "hf", config, mesh=mesh)
  want = model_sharding.param_shardings(config, mesh)
  for (path, leaf), got, ref in zip(
    jax.tree_util.tree_leaves_with_path(sharded), jax.tree.leaves(want), jax.tree.leaves(params)
  ):
    assert leaf.sharding == got, path
    np.testing.assert_array_equal(np.asarray(leaf), np.asarray(ref), err_msg=str(path))  # copies
  mlp = sharded["layers"]["mlp"]["gate_proj"]["kernel"]
  assert mlp.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
  assert len(mlp.addressable_shards[0].data.shape) == 3 and mlp.addressable_shards[0].data.shape[
    1:
  ] == (32, 32)
  tokens, mask = batch()
  ours = our_logits(config, sharded, tokens, mask)
  assert_logits_close(config, ours, hf_logits(model, tokens, mask), mask, "mesh-loaded gemma3")


def test_bfloat16_checkpoint_and_multimodal_prefix(tmp_path):
  model = make_hf_model("gemma3", cls=transformers.AutoModelForCausalLM).to(torch.bfloat16)
  model.save_pretrained(tmp_path / "bf16")
  config, params = hf_checkpoint.load_hf_checkpoint(tmp_path / "bf16")
  emb = model.model.embed_tokens.weight.detach().float().numpy()
  # bfloat16 -> float32 widening is exact.
  np.testing.assert_array_equal(np.asarray(params["embedder"]["input_embedding"]), emb)
  assert params["embedder"]["input_embedding"].dtype == np.float32

  # Text part of Gemma3ForConditionalGeneration: other prefix, vision tensors skipped.
  text = HF_CONFIGS["gemma3"]().to_dict()
  vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                image_size=28, patch_size=14)  # fmt: skip
  torch.manual_seed(0)
  cg = transformers.Gemma3ForConditionalGeneration(
    transformers.Gemma3Config(text_config=text, vision_config=vision)
  ).eval()
  cg.save_pretrained(tmp_path / "cg")
  config, params = hf_checkpoint.load_hf_checkpoint(tmp_path / "cg")
  assert config.family == "gemma3" and config.layer_types[2] == "global"
  tokens, mask = batch()
  ours = our_logits(config, params, tokens, mask)
  assert_logits_close(
    config, ours, hf_logits(cg, tokens, mask), mask, "Gemma3ForConditionalGeneration"
  )


def _tiny_llama_dir(tmp_path):
  config = presets.get_preset("tiny-llama")
  rng = np.random.default_rng(0)  # random leaves from the abstract tree: no init compile needed
  params = jax.tree.map(
    lambda s: rng.standard_normal(s.shape).astype(np.float32), decoder.abstract_params(config)
  )
  out = hf_checkpoint.export_hf(config, params, tmp_path / "llama")
  reader = hf_checkpoint.SafetensorsReader(out)
  tensors = {k: reader.get_tensor(k) for k in reader.shapes}
  return config, out, tensors


def test_errors_missing_extra_shape(tmp_path):
  config, out, tensors = _tiny_llama_dir(tmp_path)
  file = out / "model.safetensors"
  save_file({k: v for k, v in tensors.items() if "layers.1.mlp.up" not in k}, str(file))
  with pytest.raises(
    CheckpointError, match=r"1 missing tensor\(s\): model\.layers\.1\.mlp\.up_proj\.weight"
  ):
    hf_checkpoint.load_hf_checkpoint(out)
  save_file({**tensors, "model.layers.0.extra.weight": np.zeros(3, np.float32)}, str(file))
  with pytest.raises(
    CheckpointError, match=r"unexpected tensor\(s\): model\.layers\.0\.extra\.weight"
  ):
    hf_checkpoint.load_hf_checkpoint(out)
  save_file(tensors, str(file))
  wide = presets.get_preset("tiny-llama", hidden_dim=96)
  with pytest.raises(
    CheckpointError,
    match=r"model\.layers\.0\.mlp\.down_proj\.weight \(expected \(64, 96\), found \(64, 128\)\)",
  ):
    hf_checkpoint.load_hf_checkpoint(out, wide)
  # Without a shape listing (e.g. a custom reader) the check happens per tensor as it is read.
  with pytest.raises(
    CheckpointError, match=r"embed_tokens\.weight \(expected \(320, 64\), found \(3,\)\)"
  ):
    hf_checkpoint.params_from_hf(config, lambda key: np.zeros(3, np.float32))


def test_errors_config(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
  with pytest.raises(CheckpointError, match=r"model_type 'gpt2' unsupported; known: .*gemma"):
    hf_config.load_hf_config(tmp_path)
  llama = HF_CONFIGS["llama"]().to_dict()
  (tmp_path / "config.json").write_text(
    json.dumps({**llama, "rope_parameters": {"rope_type": "yarn", "factor": 2.0}})
  )
  with pytest.raises(CheckpointError, match="rope_type 'yarn' is not supported"):
    hf_config.load_hf_config(tmp_path)
  bad = presets.get_preset("tiny-llama", layer_types=("local", "global"), sliding_window=8)
  with pytest.raises(CheckpointError, match="llama in transformers has no sliding-window layers"):
    hf_config.hf_config_dict(bad)


def test_legacy_config_forms(tmp_path):
  """transformers-4 style keys: rope_theta/rope_scaling at top level, rope_local_base_freq."""
  legacy = dict(
    model_type="gemma3_text",
    **TINY,
    num_hidden_layers=6,
    sliding_window=8,
    rope_theta=1e6,
    rope_local_base_freq=1e4,
    rope_scaling={"rope_type": "linear", "factor": 8.0},
  )
  (tmp_path / "config.json").write_text(json.dumps(legacy))
  c = hf_config.load_hf_config(tmp_path)
  assert c.layer_types == ("local",) * 5 + ("global",)
  assert (c.rope_theta, c.rope_local_theta, c.rope_scaling_type, c.rope_scaling_factor) == (
    1e6,
    1e4,
    "linear",
    8.0,
  )
  assert not c.rope_scale_local and c.query_pre_attn_scalar == 256
  llama = dict(
    model_type="llama",
    **TINY,
    num_hidden_layers=2,
    rope_theta=5e5,
    rope_scaling={
      "rope_type": "llama3",
      "factor": 32.0,
      "low_freq_factor": 1.0,
      "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192,
    },
  )
  (tmp_path / "config.json").write_text(json.dumps(llama))
  c = hf_config.load_hf_config(tmp_path)
  assert (
    c.rope_theta,
    c.rope_scaling_type,
    c.rope_scaling_factor,
    c.rope_original_max_position,
  ) == (5e5, "llama3", 32.0, 8192)
  assert not c.tie_embeddings and c.sliding_window is None
