"""Hugging Face config.json <-> ModelConfig, with transformers 5.24 semantics.

Reads Gemma, Gemma2, Gemma3 (text, and the text part of Gemma3ForConditionalGeneration), Llama
(incl. llama3 rope scaling), Qwen2 and Mistral configs: class defaults for absent fields,
layer_types and sliding windows as each HF family interprets them, rope settings in both the
transformers-5 `rope_parameters` form and the legacy `rope_theta`/`rope_scaling` form. Writes
the inverse for export, refusing configs that an HF class cannot express.
"""

import dataclasses
import json
import pathlib
from collections.abc import Mapping
from typing import Any

from score_jax.models.checkpoint_errors import CheckpointError
from score_jax.models.config import FAMILY_SWITCHES, ModelConfig

# transformers 5.24 config-class defaults for the fields a config.json may omit: first the fields
# every class has (in _SHARED_FIELDS order), then what each class adds or changes from its parent.
_SHARED_FIELDS = (
  "vocab_size",
  "hidden_size",
  "intermediate_size",
  "num_hidden_layers",
  "num_attention_heads",
  "num_key_value_heads",
  "head_dim",
  "max_position_embeddings",
  "rms_norm_eps",
  "tie_word_embeddings",
)
_GEMMA_DEFAULTS = dict(
  zip(_SHARED_FIELDS, (256000, 3072, 24576, 28, 16, 16, 256, 8192, 1e-6, True), strict=True)
)
_LLAMA_DEFAULTS = dict(
  zip(_SHARED_FIELDS, (32000, 4096, 11008, 32, 32, None, None, 2048, 1e-6, False), strict=True)
)
_GEMMA2_DEFAULTS = dict(
  _GEMMA_DEFAULTS,
  hidden_size=2304,
  intermediate_size=9216,
  num_hidden_layers=26,
  num_attention_heads=8,
  num_key_value_heads=4,
  query_pre_attn_scalar=256,
  sliding_window=4096,
  final_logit_softcapping=30.0,
  attn_logit_softcapping=50.0,
)
_HF_DEFAULTS = {
  "gemma": _GEMMA_DEFAULTS,
  "gemma2": _GEMMA2_DEFAULTS,
  "gemma3_text": dict(
    _GEMMA2_DEFAULTS,
    vocab_size=262208,
    max_position_embeddings=131072,
    final_logit_softcapping=None,
    attn_logit_softcapping=None,
  ),
  "llama": _LLAMA_DEFAULTS,
  "qwen2": dict(
    _LLAMA_DEFAULTS,
    vocab_size=151936,
    intermediate_size=22016,
    num_key_value_heads=32,
    max_position_embeddings=32768,
    use_sliding_window=False,
    sliding_window=4096,
    max_window_layers=28,
  ),
  "mistral": dict(
    _LLAMA_DEFAULTS,
    intermediate_size=14336,
    num_key_value_heads=8,
    max_position_embeddings=131072,
    sliding_window=4096,
  ),
}
_ARCH = {
  "gemma": ("GemmaForCausalLM", "gemma"),
  "gemma2": ("Gemma2ForCausalLM", "gemma2"),
  "gemma3": ("Gemma3ForCausalLM", "gemma3_text"),
  "llama": ("LlamaForCausalLM", "llama"),
  "qwen2": ("Qwen2ForCausalLM", "qwen2"),
  "mistral": ("MistralForCausalLM", "mistral"),
}
_FAMILY = {model_type: family for family, (_, model_type) in _ARCH.items()}


def _rope_fields(rp: Mapping[str, Any], max_pos: int, where: str) -> dict[str, Any]:
  """One HF rope-parameter dict -> ModelConfig rope fields (theta handled by the caller)."""
  kind = rp.get("rope_type", rp.get("type", "default"))
  if kind == "default":
    return dict(rope_scaling_type="none", rope_scaling_factor=1.0)
  if kind == "linear":
    return dict(rope_scaling_type="linear", rope_scaling_factor=float(rp["factor"]))
  if kind == "llama3":
    return dict(
      rope_scaling_type="llama3",
      rope_scaling_factor=float(rp["factor"]),
      rope_llama3_low_freq_factor=float(rp.get("low_freq_factor", 1.0)),
      rope_llama3_high_freq_factor=float(rp.get("high_freq_factor", 4.0)),
      rope_original_max_position=int(rp.get("original_max_position_embeddings", max_pos)),
    )
  raise CheckpointError(f"{where}: rope_type {kind!r} is not supported (default, linear, llama3)")


def _rope_config(raw: Mapping[str, Any], model_type: str, max_pos: int, where: str) -> dict:
  """Reads rope settings in both the transformers-5 (`rope_parameters`) and legacy forms."""
  if model_type != "gemma3_text":
    # transformers 5: a legacy rope_scaling dict, when present, replaces rope_parameters.
    rp = dict(raw.get("rope_scaling") or raw.get("rope_parameters") or {})
    theta = float(rp.get("rope_theta", raw.get("rope_theta", 10_000.0)))
    return dict(
      rope_theta=theta,
      rope_local_theta=None,
      rope_scale_local=True,
      **_rope_fields(rp, max_pos, where),
    )
  rp = raw.get("rope_parameters")
  if rp is not None and not ({"full_attention", "sliding_attention"} & set(rp)):
    raise CheckpointError(
      f"{where}: gemma3 rope_parameters must be nested by layer type, got {sorted(rp)}"
    )
  rp = {k: dict(v or {}) for k, v in (rp or {}).items()}
  full, local = rp.get("full_attention") or {}, rp.get("sliding_attention") or {}
  full.update(raw.get("rope_scaling") or {})
  full.setdefault("rope_theta", raw.get("rope_theta", 1_000_000.0))
  local.setdefault("rope_theta", raw.get("rope_local_base_freq", 10_000.0))
  g, l_ = _rope_fields(full, max_pos, where), _rope_fields(local, max_pos, where)
  if l_["rope_scaling_type"] != "none" and l_ != g:
    raise CheckpointError(f"{where}: local rope scaling {l_} differs from global {g}; unsupported")
  return dict(
    rope_theta=float(full["rope_theta"]),
    rope_local_theta=float(local["rope_theta"]),
    rope_scale_local=l_["rope_scaling_type"] != "none",
    **g,
  )


def _activation(c: Mapping[str, Any], family: str, where: str) -> str:
  """The ModelConfig activation of HF config fields `c` (family defaults applied)."""
  act = (
    c.get("hidden_activation")
    or c.get("hidden_act")
    or ("gelu_pytorch_tanh" if family.startswith("gemma") else "silu")
  )
  acts = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh", "silu": "silu"}
  if family == "gemma" and act == "gelu":  # transformers maps Gemma's legacy 'gelu' to tanh
    act = "gelu_pytorch_tanh"
  if act not in acts:
    raise CheckpointError(f"{where}: activation {act!r} unsupported; known: {sorted(acts)}")
  return acts[act]


def _layer_types(
  c: Mapping[str, Any], family: str, where: str
) -> tuple[tuple[str, ...], int | None]:
  """(ModelConfig layer_types, sliding window) as each HF family interprets fields `c`."""
  n = c["num_hidden_layers"]
  window = c.get("sliding_window")
  if family in ("gemma2", "gemma3"):
    period = 2 if family == "gemma2" else c.get("sliding_window_pattern", 6)
    hf_types = c.get("layer_types") or [
      "full_attention" if (i + 1) % period == 0 else "sliding_attention" for i in range(n)
    ]
  elif family == "qwen2":
    window = window if c.get("use_sliding_window") else None
    hf_types = c.get("layer_types") or [
      "sliding_attention"
      if window is not None and i >= c["max_window_layers"]
      else "full_attention"
      for i in range(n)
    ]
  elif family == "mistral":  # Mistral slides every layer whenever sliding_window is set
    hf_types = ["sliding_attention" if window is not None else "full_attention"] * n
  else:
    hf_types = ["full_attention"] * n
  bad = sorted({t for t in hf_types} - {"full_attention", "sliding_attention"})
  if bad or len(hf_types) != n:
    raise CheckpointError(
      f"{where}: layer_types must be {n} of full/sliding_attention, got {hf_types}"
    )
  layer_types = tuple(
    "local" if t == "sliding_attention" and window else "global" for t in hf_types
  )
  return layer_types, window


def load_hf_config(path: str | pathlib.Path, **overrides) -> ModelConfig:
  """Reads an HF `config.json` (file or its directory) into a ModelConfig.

  Follows transformers 5.24 semantics (class defaults for absent fields, layer_types,
  sliding windows, rope_parameters/rope_scaling). overrides (e.g. dtype='bfloat16') are
  applied last. Unknown model types and unsupported features raise CheckpointError.
  """
  p = pathlib.Path(path)
  p = p / "config.json" if p.is_dir() else p
  try:
    raw = json.loads(p.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{p}: cannot read config.json ({e})") from e
  where = str(p)
  tie = None
  if raw.get("model_type") == "gemma3":  # Gemma3ForConditionalGeneration: its text part
    tie = raw.get("tie_word_embeddings", True)
    raw = dict(raw.get("text_config") or {}, model_type="gemma3_text")
  mt = raw.get("model_type")
  if mt not in _HF_DEFAULTS:
    raise CheckpointError(
      f"{where}: model_type {mt!r} unsupported; known: {sorted(_HF_DEFAULTS) + ['gemma3']}"
    )
  c = {
    **_HF_DEFAULTS[mt],
    **{
      k: v
      for k, v in raw.items()
      if v is not None
      or k in ("sliding_window", "final_logit_softcapping", "attn_logit_softcapping")
    },
  }
  family = _FAMILY[mt]
  if c.get("use_bidirectional_attention"):
    raise CheckpointError(f"{where}: use_bidirectional_attention=true (encoder use) is unsupported")
  if family in ("llama", "mistral") and (c.get("attention_bias") or c.get("mlp_bias")):
    raise CheckpointError(f"{where}: attention_bias/mlp_bias are unsupported for {mt}")
  heads = c["num_attention_heads"]
  head_dim = c.get("head_dim") or c["hidden_size"] // heads
  act = _activation(c, family, where)
  n = c["num_hidden_layers"]
  layer_types, window = _layer_types(c, family, where)
  max_pos = int(c["max_position_embeddings"])
  kw = dict(FAMILY_SWITCHES[family])  # then what the config says, including its activation
  kw.update(
    family=family,
    vocab_size=c["vocab_size"],
    embed_dim=c["hidden_size"],
    hidden_dim=c["intermediate_size"],
    num_layers=n,
    num_heads=heads,
    num_kv_heads=c.get("num_key_value_heads") or heads,
    head_dim=head_dim,
    activation=act,
    norm_eps=float(c["rms_norm_eps"]),
    tie_embeddings=bool(c["tie_word_embeddings"] if tie is None else tie),
    query_pre_attn_scalar=float(c["query_pre_attn_scalar"])
    if family in ("gemma2", "gemma3")
    else None,
    sliding_window=int(window) if "local" in layer_types else None,
    layer_types=layer_types,
    max_seq_len=max_pos,
    **_rope_config(c, mt, max_pos, where),
  )
  if family in ("gemma2", "gemma3"):
    kw.update(
      attn_logit_softcap=c.get("attn_logit_softcapping"),
      final_logit_softcap=c.get("final_logit_softcapping"),
    )
  try:
    return dataclasses.replace(ModelConfig(**kw), **overrides)
  except ValueError as e:
    raise CheckpointError(f"{where}: {e}") from e


def _int_scalar(x: float) -> int:
  if x != int(x):  # transformers' config classes type this field as int
    raise CheckpointError(f"query_pre_attn_scalar={x} is not an integer; transformers needs one")
  return int(x)


def _check_expressible(config: ModelConfig) -> None:
  """Raises CheckpointError naming the field when no transformers class can express `config`."""
  c, fam = config, config.family
  wrong = {k: getattr(c, k) for k, v in FAMILY_SWITCHES[fam].items() if getattr(c, k) != v}
  if wrong:
    raise CheckpointError(
      f"{fam} in transformers hard-codes {FAMILY_SWITCHES[fam]}; config has {wrong}"
    )
  local = "local" in c.layer_types
  if fam in ("gemma", "llama") and local:
    raise CheckpointError(
      f"{fam} in transformers has no sliding-window layers; layer_types={c.layer_types}"
    )
  if fam == "mistral" and len(set(c.layer_types)) > 1:
    raise CheckpointError(f"mistral slides all layers or none; layer_types={c.layer_types}")
  if fam not in ("gemma2", "gemma3") and c.query_pre_attn_scalar not in (None, c.head_dim):
    raise CheckpointError(
      f"{fam} scales attention by head_dim**-0.5; query_pre_attn_scalar={c.query_pre_attn_scalar}"
    )
  if fam != "gemma3" and local and _rope(c, True) != _rope(c, False):
    raise CheckpointError(f"{fam} in transformers uses one RoPE for all layers; local differs")


def _rope(c: ModelConfig, local_layer: bool) -> dict[str, Any]:
  """The HF rope-parameter dict of global (or local) layers."""
  theta = c.rope_local_theta if local_layer and c.rope_local_theta else c.rope_theta
  kind = c.rope_scaling_type if (not local_layer or c.rope_scale_local) else "none"
  out = {"rope_type": "default" if kind == "none" else kind, "rope_theta": theta}
  if kind != "none":
    out["factor"] = c.rope_scaling_factor
  if kind == "llama3":
    out.update(
      low_freq_factor=c.rope_llama3_low_freq_factor,
      high_freq_factor=c.rope_llama3_high_freq_factor,
      original_max_position_embeddings=c.rope_original_max_position,
    )
  return out


def hf_config_dict(config: ModelConfig) -> dict[str, Any]:
  """config.json contents for `config` in transformers-5 form; raises if HF cannot express it."""
  _check_expressible(config)
  c, fam = config, config.family
  local = "local" in c.layer_types
  arch, model_type = _ARCH[fam]
  out = dict(
    architectures=[arch],
    model_type=model_type,
    vocab_size=c.vocab_size,
    hidden_size=c.embed_dim,
    intermediate_size=c.hidden_dim,
    num_hidden_layers=c.num_layers,
    num_attention_heads=c.num_heads,
    num_key_value_heads=c.num_kv_heads,
    head_dim=c.head_dim,
    rms_norm_eps=c.norm_eps,
    max_position_embeddings=c.max_seq_len,
    tie_word_embeddings=c.tie_embeddings,
    dtype=c.param_dtype,
    rope_theta=c.rope_theta,  # legacy readers (transformers 4.x)
  )
  act = "gelu_pytorch_tanh" if c.activation == "gelu_tanh" else "silu"
  out["hidden_activation" if fam in ("gemma2", "gemma3") else "hidden_act"] = act
  hf_types = ["sliding_attention" if t == "local" else "full_attention" for t in c.layer_types]
  if fam == "gemma3":
    out["rope_parameters"] = {
      "full_attention": _rope(c, False),
      "sliding_attention": _rope(c, True),
    }
    out["rope_local_base_freq"] = c.rope_local_theta or c.rope_theta
  else:
    out["rope_parameters"] = _rope(c, False)
  if fam in ("gemma2", "gemma3"):
    out.update(
      query_pre_attn_scalar=_int_scalar(c.query_pre_attn_scalar or c.head_dim),
      attn_logit_softcapping=c.attn_logit_softcap,
      final_logit_softcapping=c.final_logit_softcap,
      layer_types=hf_types,
      sliding_window=c.sliding_window or c.max_seq_len,
    )
  elif fam == "qwen2":
    out.update(
      use_sliding_window=local,
      sliding_window=c.sliding_window if local else None,
      layer_types=hf_types,
      max_window_layers=c.num_layers,
    )
  elif fam == "mistral":
    out["sliding_window"] = c.sliding_window if local else None
  if fam in ("llama", "mistral", "gemma"):
    out.update(attention_bias=False)
  return out
