"""GGUF (llama.cpp) import: config from metadata, dequantized weights, and the tokenizer.

`load_gguf(path)` reads a `.gguf` file of a llama-architecture (Llama, SmolLM2, Mistral) or
Qwen2 model and returns `(ModelConfig, params, tokenizer)`. Weights go through the same HF name
mapping and validation as safetensors checkpoints (`hf_checkpoint.params_from_hf`): this module
only translates llama.cpp tensor names to HF names, dequantizes with the `gguf` package and undoes
llama.cpp's rotary row permutation of Q/K. The tokenizer is rebuilt from the vocabulary, merges
and token types stored in the metadata exactly as transformers' GGUF loader builds it, so prompt
ids equal transformers' for the same file.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import gguf
import numpy as np
import tokenizers
from gguf import GGMLQuantizationType as QT

from score_jax.data import tokenizer as tokenizer_lib
from score_jax.models import hf_checkpoint
from score_jax.models.checkpoint_errors import CheckpointError
from score_jax.models.config import ModelConfig

PyTree = Any

# Types whose numpy dequantization in the `gguf` package we load (the K-quants included); others
# (IQ*, TQ*, MXFP4, ...) fail by name rather than risk an untested path.
SUPPORTED_TYPES = frozenset(
  {QT.F32, QT.F16, QT.BF16, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0}
  | {QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K}
)
_ARCH_FAMILY = {"llama": "llama", "qwen2": "qwen2"}
# Architectures whose converter permutes Q/K rows for llama.cpp's interleaved RoPE.
PERMUTED_QK = frozenset({"llama"})

# HF per-layer weight suffix -> llama.cpp suffix.
_LAYER_NAMES = {
  "input_layernorm.weight": "attn_norm.weight",
  "self_attn.q_proj.weight": "attn_q.weight",
  "self_attn.k_proj.weight": "attn_k.weight",
  "self_attn.v_proj.weight": "attn_v.weight",
  "self_attn.o_proj.weight": "attn_output.weight",
  "self_attn.q_proj.bias": "attn_q.bias",
  "self_attn.k_proj.bias": "attn_k.bias",
  "self_attn.v_proj.bias": "attn_v.bias",
  "post_attention_layernorm.weight": "ffn_norm.weight",
  "mlp.gate_proj.weight": "ffn_gate.weight",
  "mlp.up_proj.weight": "ffn_up.weight",
  "mlp.down_proj.weight": "ffn_down.weight",
}
_GLOBAL_NAMES = {
  "embed_tokens.weight": "token_embd.weight",
  "norm.weight": "output_norm.weight",
  "lm_head.weight": "output.weight",
}
_LAYER_RE = re.compile(r"^layers\.(\d+)\.(.+)$")

# Pre-tokenizer split regexes transformers uses per `tokenizer.ggml.pre`; any other value (e.g.
# SmolLM2's 'smollm', GPT-2's 'default') keeps GPT-2's byte-level regex, as transformers does.
_LLAMA3_SPLIT = (
  r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
  r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PRE_SPLITS = {
  **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "smaug-bpe", "dbrx"), _LLAMA3_SPLIT),
  **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), _QWEN2_SPLIT),
}
TOKEN_CONTROL, TOKEN_USER_DEFINED = 3, 4  # llama.cpp token types


class GGUFError(CheckpointError):
  """A GGUF file is unsupported, incomplete or does not match the requested preset."""


def _source(reader: gguf.GGUFReader) -> str:
  return str(reader.data.filename)  # the reader memory-maps its file; np.memmap keeps the name


def _field(reader: gguf.GGUFReader, key: str, default: Any = None, required: bool = False):
  field = reader.fields.get(key)
  if field is None:
    if required:
      raise GGUFError(f"{_source(reader)}: metadata key {key!r} is missing")
    return default
  return field.contents()


def config_from_gguf(reader: gguf.GGUFReader, preset: ModelConfig | None = None) -> ModelConfig:
  """ModelConfig from `{arch}.*` metadata; with `preset`, checks every field it determines."""
  path = _source(reader)
  arch = _field(reader, "general.architecture", required=True)
  if arch not in _ARCH_FAMILY:
    raise GGUFError(
      f"{path}: general.architecture={arch!r} is not supported; known: {sorted(_ARCH_FAMILY)}"
    )

  def meta(key, default=None):
    return _field(reader, f"{arch}.{key}", default, required=default is None)

  names = {t.name for t in reader.tensors}
  embed_dim, num_heads = int(meta("embedding_length")), int(meta("attention.head_count"))
  head_dim = int(meta("attention.key_length", embed_dim // num_heads))
  rot_dim = int(meta("rope.dimension_count", head_dim))
  if rot_dim != head_dim:
    raise GGUFError(f"{path}: partial RoPE ({arch}.rope.dimension_count={rot_dim} < {head_dim})")
  vocab_size = _field(reader, f"{arch}.vocab_size")
  if vocab_size is None:  # older files: the vocabulary's length, as transformers does
    vocab_size = len(_field(reader, "tokenizer.ggml.tokens", required=True))
  found = dict(
    vocab_size=int(vocab_size),
    embed_dim=embed_dim,
    hidden_dim=int(meta("feed_forward_length")),
    num_layers=int(meta("block_count")),
    num_heads=num_heads,
    num_kv_heads=int(meta("attention.head_count_kv", num_heads)),
    head_dim=head_dim,
    norm_eps=float(meta("attention.layer_norm_rms_epsilon")),
    rope_theta=float(meta("rope.freq_base", 10_000.0)),
    tie_embeddings="output.weight" not in names,
    qkv_bias="blk.0.attn_q.bias" in names,
  )
  scaling = meta("rope.scaling.type", "none")
  if scaling == "linear":
    found.update(rope_scaling_type="linear", rope_scaling_factor=float(meta("rope.scaling.factor")))
  elif scaling != "none":
    raise GGUFError(f"{path}: {arch}.rope.scaling.type={scaling!r} is not supported")
  elif "rope_freqs.weight" not in names:
    found["rope_scaling_type"] = "none"
  if preset is None:
    if "rope_freqs.weight" in names:  # llama3 scaling stores only the resulting divisors.
      raise GGUFError(
        f"{path}: tensor 'rope_freqs.weight' (Llama 3 RoPE scaling) needs --preset to name the "
        "scaling parameters"
      )
    family = _ARCH_FAMILY[arch]
    return ModelConfig(
      family=family,
      activation="silu",
      rope_scale_local=True,  # no local layers; as load_hf_config sets it for non-Gemma models
      max_seq_len=int(meta("context_length", 8192)),
      **found,
    )
  for key, value in found.items():
    want = getattr(preset, key)
    same = np.isclose(value, want, rtol=1e-6) if isinstance(value, float) else value == want
    if not same:
      raise GGUFError(
        f"{path} does not match the preset: {key} is {value!r} in the file, {want!r} in the preset"
      )
  if preset.family not in ((arch,) if arch == "qwen2" else ("llama", "mistral")):
    raise GGUFError(
      f"{path}: general.architecture={arch!r} does not fit preset family {preset.family!r}"
    )
  if "rope_freqs.weight" in names:
    _check_rope_freqs(reader, preset)
  return preset


def _check_rope_freqs(reader: gguf.GGUFReader, preset: ModelConfig) -> None:
  from score_jax.models import layers  # the decoder's own inv_freq, so the check is exact

  tensor = next(t for t in reader.tensors if t.name == "rope_freqs.weight")
  factors = _dequantize(reader, tensor).astype(np.float64)
  base = 1.0 / preset.rope_theta ** (np.arange(0, preset.head_dim, 2) / preset.head_dim)
  ours = np.asarray(layers.rope_inv_freq(preset, "global"), np.float64)
  if factors.shape != ours.shape or not np.allclose(base / factors, ours, rtol=1e-4):
    raise GGUFError(
      f"{_source(reader)}: 'rope_freqs.weight' disagrees with the preset's RoPE scaling"
    )


def _dequantize(reader: gguf.GGUFReader, tensor) -> np.ndarray:
  qtype = QT(tensor.tensor_type)
  if qtype not in SUPPORTED_TYPES:
    known = ", ".join(sorted(t.name for t in SUPPORTED_TYPES))
    raise GGUFError(
      f"{_source(reader)}: tensor {tensor.name!r} has quantization type {qtype.name}, which is not "
      f"supported (supported: {known})"
    )
  return np.asarray(gguf.quants.dequantize(tensor.data, qtype), np.float32)


def gguf_name(hf_name: str) -> str:
  """llama.cpp name of an HF tensor name (with or without the 'model.' prefix)."""
  name = hf_name.removeprefix("model.")
  if name in _GLOBAL_NAMES:
    return _GLOBAL_NAMES[name]
  m = _LAYER_RE.match(name)
  if m and m.group(2) in _LAYER_NAMES:
    return f"blk.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}"
  raise GGUFError(f"no llama.cpp equivalent for HF tensor {hf_name!r}")


def _unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
  # llama.cpp's converter reorders each head's rows from HF's rotate-half layout to interleaved
  # pairs (`gguf_writer._permute_qk`). This is its exact inverse.
  rows = w.shape[0]
  return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class GGUFTensors:
  """`get_tensor(hf_name)` over a GGUF file: name translation, dequantization, Q/K un-permute."""

  def __init__(self, reader: gguf.GGUFReader, config: ModelConfig):
    self._reader, self._config = reader, config
    self._arch = _field(reader, "general.architecture", required=True)
    self._tensors = {t.name: t for t in reader.tensors}

  def hf_shapes(self) -> dict[str, tuple[int, ...]]:
    """HF name -> HF shape of every weight in the file (rope_freqs is metadata, not a weight)."""
    layer = {v: k for k, v in _LAYER_NAMES.items()}
    inverse = {v: "model." + k for k, v in _GLOBAL_NAMES.items()}
    inverse["output.weight"] = "lm_head.weight"
    out = {}
    for name, tensor in self._tensors.items():
      m = re.match(r"^blk\.(\d+)\.(.+)$", name)
      if m and m.group(2) in layer:
        hf_name = f"model.layers.{m.group(1)}.{layer[m.group(2)]}"
      elif name in inverse:
        hf_name = inverse[name]
      elif name == "rope_freqs.weight":
        continue
      else:
        raise GGUFError(f"{_source(self._reader)}: unexpected tensor {name!r}")
      # GGUF lists dims innermost first (ggml's ne); HF/numpy order is the reverse.
      out[hf_name] = tuple(int(x) for x in reversed(tensor.shape))
    return out

  def __call__(self, hf_name: str) -> np.ndarray:
    name = gguf_name(hf_name)
    if name not in self._tensors:
      raise GGUFError(f"{_source(self._reader)}: tensor {name!r} (HF {hf_name!r}) is missing")
    w = _dequantize(self._reader, self._tensors[name])
    if self._arch in PERMUTED_QK and name.endswith(("attn_q.weight", "attn_k.weight")):
      heads = self._config.num_heads if "attn_q" in name else self._config.num_kv_heads
      w = _unpermute_qk(w, heads)
    return w


def _byte_level_vocab(tokens: list[str]) -> dict[str, int]:
  # llama.cpp stores most tokens in GPT-2's byte alphabet but some (added ones) as raw UTF-8;
  # transformers respells the latter into the alphabet, and so do we.
  spelling = _bytes_to_unicode()
  alphabet = set(spelling.values())
  return {
    t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
    for i, t in enumerate(tokens)
  }


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's reversible byte -> printable character table."""
  bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
  cs = list(bs)
  extra = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + extra)
      extra += 1
  return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def tokenizer_from_gguf(reader: gguf.GGUFReader) -> tokenizer_lib.HFTokenizer:
  """The byte-level BPE tokenizer (tokenizer.ggml.model 'gpt2') described by the metadata."""
  path = _source(reader)
  kind = _field(reader, "tokenizer.ggml.model", required=True)
  if kind != "gpt2":
    raise GGUFError(
      f"{path}: tokenizer.ggml.model={kind!r} is not supported (only byte-level BPE 'gpt2'); "
      "pass --tokenizer with the model's tokenizer.json / tokenizer.model instead"
    )
  tokens = list(_field(reader, "tokenizer.ggml.tokens", required=True))
  types = list(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
  merges = [tuple(m.split(" ")) for m in _field(reader, "tokenizer.ggml.merges", required=True)]
  bad = [i for i, m in enumerate(merges) if len(m) != 2]
  if bad:
    raise GGUFError(f"{path}: tokenizer.ggml.merges[{bad[0]}] is not 'left right'")
  vocab = _byte_level_vocab(tokens)
  tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
  split = _PRE_SPLITS.get(_field(reader, "tokenizer.ggml.pre", "default"))
  byte_level = tokenizers.pre_tokenizers.ByteLevel
  if split is None:
    tok.pre_tokenizer = byte_level(add_prefix_space=False, trim_offsets=True, use_regex=True)
  else:
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Sequence(
      [
        tokenizers.pre_tokenizers.Split(tokenizers.Regex(split), behavior="isolated"),
        byte_level(add_prefix_space=False, use_regex=False),
      ]
    )
  tok.decoder = tokenizers.decoders.ByteLevel()
  # Control tokens (e.g. <|im_end|>) are matched whole as special tokens; one spelled outside the
  # byte alphabet is a llama.cpp mislabel that transformers skips, and so do we.
  alphabet = set(_bytes_to_unicode().values())
  tok.add_special_tokens(
    [
      tokenizers.AddedToken(t, normalized=False, special=True)
      for t, ty in zip(tokens, types, strict=True)
      if ty == TOKEN_CONTROL and set(t) <= alphabet
    ]
  )
  user = [t for t, ty in zip(tokens, types, strict=True) if ty == TOKEN_USER_DEFINED and t in vocab]
  if user:
    tok.add_tokens([tokenizers.AddedToken(t, normalized=False, special=False) for t in user])

  def special(key):
    token_id = _field(reader, f"tokenizer.ggml.{key}")
    return None if token_id is None else int(token_id)

  eos = special("eos_token_id")
  if eos is None:
    raise GGUFError(f"{path}: metadata key 'tokenizer.ggml.eos_token_id' is missing")
  return tokenizer_lib.HFTokenizer(
    tok,
    bos_token=special("bos_token_id"),
    eos_token=eos,
    pad_token=special("padding_token_id"),
    source=path,
  )


def load_gguf(
  path: str | os.PathLike,
  mesh=None,
  *,
  preset: ModelConfig | None = None,
  dtype: str | None = None,
  param_dtype: str | None = None,
) -> tuple[ModelConfig, PyTree, tokenizer_lib.HFTokenizer]:
  """Loads a GGUF file into (config, params, tokenizer).

  Args:
    path: the `.gguf` file.
    mesh: optional mesh; params are then born sharded (see `hf_checkpoint.params_from_hf`).
    preset: the config the file must match; a differing field raises naming both values.
    dtype: compute dtype override; param_dtype: storage dtype override (default float32).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise GGUFError(f"{path}: no such GGUF file")
  try:
    reader = gguf.GGUFReader(path)
  except (ValueError, OSError) as e:
    raise GGUFError(f"{path}: not a readable GGUF file ({e})") from e
  config = config_from_gguf(reader, preset)
  overrides = {k: v for k, v in (("dtype", dtype), ("param_dtype", param_dtype)) if v}
  if overrides:
    config = dataclasses.replace(config, **overrides)
  get_tensor = GGUFTensors(reader, config)
  params = hf_checkpoint.params_from_hf(
    config, get_tensor, mesh, hf_shapes=get_tensor.hf_shapes(), prefix="model.", source=path
  )
  return config, params, tokenizer_from_gguf(reader)
