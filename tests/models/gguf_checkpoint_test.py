"""GGUF import: tiny llama-architecture files written with gguf.GGUFWriter, loaded back.

References are independent of the loader: the HF-safetensors load of the same dequantized
weights (no Q/K permutation involved), and transformers' own GGUF loader (model and tokenizer).
"""

import dataclasses
import pathlib

import jax
import numpy as np
import pytest
import tokenizers
import torch
import transformers
from gguf import GGMLQuantizationType as QT
from gguf import quants
from safetensors.numpy import save_file

from score_jax.data import tokenizer as tokenizer_lib
from score_jax.models import decoder, gguf_checkpoint, gguf_writer, hf_checkpoint, hf_config
from score_jax.models import sharding as model_sharding
from score_jax.models.checkpoint_errors import CheckpointError
from score_jax.parallel import mesh as mesh_lib
from tests import numerics

pytestmark = pytest.mark.numerics

TEXTS = [
  f"Question {i}: what is {i} + {2 * i}? The answer is {3 * i}. Let's check it's right."
  for i in range(200)
] + ["Unicode: café, naïve, 漢字, emoji 🙂 and tabs\tand\nnewlines."] * 5
# One mixed file exercising every quantization family the loader supports on the hot path.
MIXED = {
  "token_embd.weight": QT.Q8_0,
  "output.weight": QT.Q4_0,
  "attn_q.weight": QT.Q4_0,
  "attn_k.weight": QT.Q4_1,
  "attn_v.weight": QT.Q5_0,
  "attn_output.weight": QT.Q5_1,
  "ffn_gate.weight": QT.Q8_0,
  "ffn_up.weight": QT.F16,
  "ffn_down.weight": QT.BF16,
}


@dataclasses.dataclass
class Tiny:
  """A tiny random HF llama, its tokenizer, and the GGUF writer's inputs."""

  model: transformers.PreTrainedModel
  tokenizer: tokenizers.Tokenizer
  tensors: dict[str, np.ndarray]
  config: object  # our ModelConfig, from the HF config


def make_tiny(tmp: pathlib.Path, tie: bool = True, seed: int = 0) -> Tiny:
  """Tiny llama (2 layers, d 64, GQA 4/2) with a trained byte-level BPE vocabulary."""
  tok_dir = tokenizer_lib.train_bpe_tokenizer_json(TEXTS, tmp / f"tok{seed}", vocab_size=300)
  tok = tokenizers.Tokenizer.from_file(str(pathlib.Path(tok_dir) / "tokenizer.json"))
  llama_config = transformers.LlamaConfig(
    vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
    rope_theta=10_000.0, rms_norm_eps=1e-5, tie_word_embeddings=tie,
  )  # fmt: skip
  torch.manual_seed(seed)
  model = transformers.LlamaForCausalLM(llama_config).eval()
  with torch.no_grad():  # norms are 1 at init; randomise so a norm mix-up shows
    for name, p in model.named_parameters():
      if "norm" in name:
        p.uniform_(0.5, 1.5)
  tensors = {k: v.numpy().copy() for k, v in model.state_dict().items()}
  if tie:
    tensors.pop("lm_head.weight", None)
  model_dir = tmp / f"hf{seed}"
  model.save_pretrained(model_dir)
  config = hf_config.load_hf_config(model_dir)
  return Tiny(model, tok, tensors, config)


def qtype_of(name: str, qtypes, default):
  """qtypes are keyed by full llama.cpp name or by per-layer suffix ('attn_q.weight')."""
  return qtypes.get(name, qtypes.get(name.split(".", 2)[-1], default))


def write(tiny: Tiny, path: pathlib.Path, qtypes=None, pre="smollm", tensors=None) -> pathlib.Path:
  per_name = {}
  for hf_name in tensors or tiny.tensors:
    name = gguf_checkpoint.gguf_name(hf_name)
    kind = qtype_of(name, qtypes or {}, None)
    if kind is not None:
      per_name[name] = kind
  gguf_writer.write_gguf(
    path, tiny.config, tensors or tiny.tensors, tiny.tokenizer, bos_id=1, eos_id=2, pad_id=2,
    qtypes=per_name, pre=pre,
  )  # fmt: skip
  return path


def dequantized(tiny: Tiny, qtypes) -> dict[str, np.ndarray]:
  """The tensors as a llama.cpp reader sees them, in HF layout (quantization is per row)."""
  out = {}
  for hf_name, x in tiny.tensors.items():
    name = gguf_checkpoint.gguf_name(hf_name)
    kind = qtype_of(name, qtypes, QT.F32)
    if x.ndim == 2 and kind != QT.F32:
      x = x.astype(np.float16) if kind == QT.F16 else quants.quantize(x, kind)
      x = quants.dequantize(x, kind)
    out[hf_name] = np.asarray(x, np.float32)
  return out


def batch(vocab: int):
  rng = np.random.default_rng(1)
  lengths, t = (12, 7), 12
  tokens = rng.integers(3, vocab, (len(lengths), t)).astype(np.int32)
  mask = np.arange(t)[None] >= (t - np.asarray(lengths))[:, None]
  return np.where(mask, tokens, 0), mask


def hf_logits(model, tokens, mask):
  positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
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
  bound = numerics.logit_bound(config, mask.shape[1], np.abs(ref[mask]).max())
  return numerics.assert_close(ours, ref, bound, where=mask, what=what)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
  return tmp_path_factory.mktemp("gguf")


@pytest.fixture(scope="module")
def tiny(tmp):
  return make_tiny(tmp)


@pytest.mark.parametrize("kind,tie", [("f32", True), ("mixed", False)])
def test_matches_dequantized_safetensors_and_transformers(tmp, kind, tie):
  tiny = make_tiny(tmp, tie=tie, seed=int(not tie))
  qtypes = MIXED if kind == "mixed" else {}
  path = write(tiny, tmp / f"{kind}.gguf", qtypes)
  config, params, _ = gguf_checkpoint.load_gguf(path)
  assert config.tie_embeddings == tie and ("lm_head" in params) == (not tie)
  assert np.float32(config.norm_eps) == np.float32(tiny.config.norm_eps)  # stored as float32
  assert dataclasses.replace(config, norm_eps=tiny.config.norm_eps) == tiny.config

  st_dir = tmp / f"{kind}_dequantized"
  st_dir.mkdir()
  save_file(dequantized(tiny, qtypes), str(st_dir / "model.safetensors"))
  _, ref_params = hf_checkpoint.load_hf_checkpoint(st_dir, config=config)
  for (key, ours), ref in zip(
    jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(ref_params), strict=True
  ):
    # Exact: both dequantize the same blocks with the same NumPy code.
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref), err_msg=str(key))

  # transformers' GGUF loader un-permutes Q/K on its own: same logits means our files and
  # our reading agree with llama.cpp's layout, not just with each other.
  tokens, mask = batch(config.vocab_size)
  ours, _ = decoder.forward(config, params, tokens, mask_bt=mask)
  theirs = transformers.AutoModelForCausalLM.from_pretrained(
    tmp, gguf_file=path.name, dtype=torch.float32
  ).eval()
  theirs_logits = hf_logits(theirs, tokens, mask)
  err = assert_logits_close(config, ours, theirs_logits, mask, f"{kind} vs transformers GGUF")
  print(f"{kind}: max logit error vs transformers GGUF load {err:.2e}")
  if kind == "f32":  # and the unquantized file equals the original HF model
    ref = hf_logits(tiny.model, tokens, mask)
    assert_logits_close(config, ours, ref, mask, "f32 GGUF vs the HF model")


@pytest.mark.parametrize("pre", ["smollm", "llama-bpe", "qwen2"])
def test_tokenizer_matches_transformers(tmp, tiny, pre):
  path = write(tiny, tmp / f"tok_{pre}.gguf", pre=pre)
  tok = gguf_checkpoint.tokenizer_from_gguf(gguf_checkpoint.gguf.GGUFReader(path))
  ref = transformers.AutoTokenizer.from_pretrained(tmp, gguf_file=path.name)
  texts = [
    *TEXTS[:3],
    "  leading spaces,\ttabs\n\n\nand   runs of spaces 12345678 ",
    "Unicode: café 漢字 🙂 ∑x² — «quotes»",
    "<|im_start|>user\nWhat's 12+7?<|im_end|>\n<|im_start|>assistant\n",
    "I'd say they're right; we'll see, you've DONE IT'S",
  ]
  for text in texts:
    ids = tok.encode(text)
    assert ids == ref.encode(text, add_special_tokens=False), text
    assert tok.decode(ids) == text
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 2)
  assert tok.stop_ids == (2,)


def test_preset_check(tmp, tiny):
  path = write(tiny, tmp / "preset.gguf")
  same = dataclasses.replace(tiny.config, max_seq_len=999)
  assert gguf_checkpoint.load_gguf(path, preset=same)[0] == same
  wrong = dataclasses.replace(tiny.config, num_kv_heads=4)
  with pytest.raises(
    gguf_checkpoint.GGUFError, match=r"num_kv_heads is 2 in the file, 4 in the preset"
  ):
    gguf_checkpoint.load_gguf(path, preset=wrong)


def test_unsupported_quant_type_names_tensor_and_type(tmp, tiny):
  path = write(tiny, tmp / "mxfp4.gguf", {"blk.1.attn_v.weight": QT.MXFP4})
  with pytest.raises(gguf_checkpoint.GGUFError, match=r"'blk\.1\.attn_v\.weight'.*MXFP4"):
    gguf_checkpoint.load_gguf(path)


def test_missing_tensor_is_named(tmp, tiny):
  tensors = {k: v for k, v in tiny.tensors.items() if k != "model.layers.1.mlp.up_proj.weight"}
  path = write(tiny, tmp / "missing.gguf", tensors=tensors)
  with pytest.raises(CheckpointError, match=r"missing tensor.*model\.layers\.1\.mlp\.up_proj"):
    gguf_checkpoint.load_gguf(path)


def test_non_gguf_and_unknown_architecture(tmp):
  bad = tmp / "bad.gguf"
  bad.write_bytes(b"not a gguf file at all" * 10)
  with pytest.raises(gguf_checkpoint.GGUFError, match="not a readable GGUF"):
    gguf_checkpoint.load_gguf(bad)
  w = gguf_checkpoint.gguf.GGUFWriter(str(tmp / "gpt2.gguf"), "gpt2")
  w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  with pytest.raises(gguf_checkpoint.GGUFError, match="general.architecture='gpt2'"):
    gguf_checkpoint.load_gguf(tmp / "gpt2.gguf")


def test_sharded_load(tmp, tiny):
  path = write(tiny, tmp / "sharded.gguf", {"attn_q.weight": QT.Q8_0})
  _, ref, _ = gguf_checkpoint.load_gguf(path)
  mesh = mesh_lib.make_mesh((1, 2, 4))
  _, params, _ = gguf_checkpoint.load_gguf(path, mesh=mesh)
  shardings = model_sharding.param_shardings(tiny.config, mesh)
  for a, b, s in zip(
    jax.tree.leaves(params), jax.tree.leaves(ref), jax.tree.leaves(shardings), strict=True
  ):
    assert a.sharding == s
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the same bytes, placed
