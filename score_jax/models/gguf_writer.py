"""GGUF (llama.cpp) export of llama-architecture and Qwen2 models, for llama.cpp users and tests.

`write_gguf` writes the `{arch}.*` metadata `gguf_checkpoint.config_from_gguf` reads back, the
tokenizer as `tokenizer.ggml.*` metadata, and the HF-named weights under llama.cpp names with
llama.cpp's rotary row permutation of Q/K (the inverse of what the loader undoes).
"""

import json
import os
from collections.abc import Mapping

import gguf
import numpy as np
import tokenizers
from gguf import GGMLQuantizationType as QT

from score_jax.models.config import ModelConfig
from score_jax.models.gguf_checkpoint import (
  PERMUTED_QK,
  TOKEN_CONTROL,
  TOKEN_USER_DEFINED,
  GGUFError,
  gguf_name,
)


def _permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
  # llama.cpp's converter (convert_hf_to_gguf.py, LlamaModel.permute): HF's rotate-half rows of
  # each head become interleaved (even, odd) pairs, the layout ggml's RoPE rotates.
  rows = w.shape[0]
  return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _architecture_metadata(config: ModelConfig) -> list[tuple[str, int | float]]:
  """(key under `{arch}.`, value) of the sizes and numerics, in llama.cpp's writing order.

  Integers are written as uint32 and floats as float32, the types llama.cpp gives these keys.
  """
  sizes = [
    ("block_count", config.num_layers),
    ("context_length", config.max_seq_len),
    ("embedding_length", config.embed_dim),
    ("feed_forward_length", config.hidden_dim),
    ("attention.head_count", config.num_heads),
    ("attention.head_count_kv", config.num_kv_heads),
  ]
  if config.head_dim * config.num_heads != config.embed_dim:  # else readers derive it
    sizes += [
      ("attention.key_length", config.head_dim),
      ("attention.value_length", config.head_dim),
    ]
  return sizes + [
    ("rope.dimension_count", config.head_dim),
    ("rope.freq_base", float(config.rope_theta)),
    ("attention.layer_norm_rms_epsilon", float(config.norm_eps)),
    ("vocab_size", config.vocab_size),
  ]


def _tokenizer_metadata(tok: tokenizers.Tokenizer) -> tuple[list[str], list[int], list[str]]:
  """(tokens by id, llama.cpp token types, 'left right' merges) of a byte-level BPE tokenizer."""
  spec = json.loads(tok.to_str())
  if spec["model"]["type"] != "BPE":
    raise GGUFError(f"write_gguf: only BPE tokenizers can be written, got {spec['model']['type']}")
  size = tok.get_vocab_size(with_added_tokens=True)
  tokens: list[str | None] = [None] * size
  types = [1] * size  # NORMAL
  for piece, i in spec["model"]["vocab"].items():
    tokens[i] = piece
  for added in spec["added_tokens"]:
    tokens[added["id"]] = added["content"]
    types[added["id"]] = TOKEN_CONTROL if added["special"] else TOKEN_USER_DEFINED
  holes = [i for i, t in enumerate(tokens) if t is None]
  if holes:
    raise GGUFError(f"write_gguf: tokenizer ids are not contiguous (no token for id {holes[0]})")
  merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
  return tokens, types, merges


def write_gguf(
  path: str | os.PathLike,
  config: ModelConfig,
  hf_tensors: Mapping[str, np.ndarray],
  tokenizer: tokenizers.Tokenizer,
  *,
  bos_id: int | None,
  eos_id: int,
  pad_id: int | None = None,
  qtype: QT = QT.F32,
  qtypes: Mapping[str, QT] | None = None,
  pre: str = "default",
) -> None:
  """Writes a llama.cpp GGUF of a llama/Mistral/Qwen2 model (for llama.cpp users and tests).

  Args:
    path: output `.gguf` file.
    config: the architecture (written as `{arch}.*` metadata).
    hf_tensors: HF-named weights ('model.layers.0.self_attn.q_proj.weight', ...), HF layout.
    tokenizer: a byte-level BPE `tokenizers.Tokenizer`; added special tokens become CONTROL.
    bos_id, eos_id, pad_id: special token ids.
    qtype: type of 2-D weights (norms and biases stay F32, as llama.cpp writes them);
    qtypes: per-llama.cpp-name overrides, e.g. {'token_embd.weight': QT.Q8_0}.
    pre: `tokenizer.ggml.pre`, which selects the pre-tokenizer split regex when loading.
  """
  arch = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}.get(config.family)
  if arch is None or config.rope_scaling_type == "llama3":
    raise GGUFError(
      f"write_gguf: family {config.family!r} / rope {config.rope_scaling_type!r} not supported"
    )
  w = gguf.GGUFWriter(os.fspath(path), arch)
  for key, value in _architecture_metadata(config):
    add = w.add_float32 if isinstance(value, float) else w.add_uint32
    add(f"{arch}.{key}", value)
  if config.rope_scaling_type == "linear":
    w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    w.add_rope_scaling_factor(config.rope_scaling_factor)
  tokens, types, merges = _tokenizer_metadata(tokenizer)
  w.add_tokenizer_model("gpt2")
  w.add_tokenizer_pre(pre)
  w.add_token_list(tokens)
  w.add_token_types(types)
  w.add_token_merges(merges)
  for key, value in (("bos", bos_id), ("eos", eos_id), ("pad", pad_id)):
    if value is not None:
      getattr(w, f"add_{key}_token_id")(value)
  for hf_name, value in hf_tensors.items():
    name = gguf_name(hf_name)
    x = np.asarray(value, np.float32)
    if arch in PERMUTED_QK and name.endswith(("attn_q.weight", "attn_k.weight")):
      heads = config.num_heads if "attn_q" in name else config.num_kv_heads
      x = _permute_qk(x, heads)
    kind = (qtypes or {}).get(name, qtype) if x.ndim == 2 else QT.F32
    if kind == QT.F32:
      w.add_tensor(name, x)
    elif kind == QT.F16:
      w.add_tensor(name, x.astype(np.float16))
    else:
      try:
        w.add_tensor(name, gguf.quants.quantize(x, kind), raw_dtype=kind)
      except (ValueError, NotImplementedError) as e:
        raise GGUFError(f"write_gguf: cannot quantize {name} {x.shape} to {kind.name}: {e}") from e
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
