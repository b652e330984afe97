"""ModelConfig: the frozen dataclass that fully describes one decoder architecture.

Model code only ever sees this dataclass (never an ml_collections ConfigDict). Presets are
varied with `dataclasses.replace`, which re-runs `__post_init__`, so an invalid variation fails
at construction with a message naming the field.

Shape legend used across `score_jax/models/`: b batch, t time (new tokens), s cache slots,
v vocab, d model width, h query heads, n kv heads, g query heads per kv head, k head dim,
f mlp width, l layers.
"""

import dataclasses
import math

import jax.numpy as jnp

FAMILIES = ("gemma", "gemma2", "gemma3", "llama", "qwen2", "mistral")
ACTIVATIONS = ("gelu_tanh", "silu")
LAYER_TYPES = ("global", "local")
ROPE_SCALING_TYPES = ("none", "linear", "llama3")
REMAT_POLICIES = (
  "none",
  "full",
  "dots_saveable",
  "nothing_saveable",
  "everything_saveable",
  "dots_with_no_batch_dims_saveable",
)
DTYPES = ("float32", "bfloat16", "float16")
# The fields that size a decoder, in the shape legend's order: v d f l h n k.
SIZE_FIELDS = (
  "vocab_size",
  "embed_dim",
  "hidden_dim",
  "num_layers",
  "num_heads",
  "num_kv_heads",
  "head_dim",
)


# Architecture switches each family hard-codes in its reference implementation (transformers):
# ModelConfig field -> value. Presets start from them and HF export refuses configs that differ.
_GEMMA = dict(activation="gelu_tanh", norm_plus_one=True, scale_embeddings=True, qkv_bias=False)
_LLAMA = dict(activation="silu", norm_plus_one=False, scale_embeddings=False)
_POST_NORMS = dict(use_post_attn_norm=True, use_post_ffw_norm=True)  # Gemma 2 and 3
_PLAIN = dict(  # Gemma 1 and the Llama-like families: no extra norms, no logit soft-caps
  qk_norm=False,
  use_post_attn_norm=False,
  use_post_ffw_norm=False,
  attn_logit_softcap=None,
  final_logit_softcap=None,
)
FAMILY_SWITCHES = {
  "gemma": {**_GEMMA, **_PLAIN},
  "gemma2": {**_GEMMA, **_POST_NORMS, "qk_norm": False},
  "gemma3": {**_GEMMA, **_POST_NORMS, "qk_norm": True},
  "llama": {**_LLAMA, **_PLAIN, "qkv_bias": False},
  "qwen2": {**_LLAMA, **_PLAIN, "qkv_bias": True},
  "mistral": {**_LLAMA, **_PLAIN, "qkv_bias": False},
}


def layer_types_pattern(num_layers: int, period: int) -> tuple[str, ...]:
  """Local/global pattern where every `period`-th layer is global (HF Gemma 2/3 convention).

  Layer i is global iff (i + 1) % period == 0, so period 2 gives local, global, local, ...
  (Gemma 2) and period 6 gives 5 local then 1 global (Gemma 3). period 1 = all global.
  """
  if num_layers <= 0 or period <= 0:
    raise ValueError(f"layer_types_pattern needs positive sizes, got {num_layers=} {period=}")
  return tuple("global" if (i + 1) % period == 0 else "local" for i in range(num_layers))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture and numerics of one decoder; see module docstring for the shape legend."""

  family: str  # one of FAMILIES (selects nothing by itself: every switch below is explicit)
  vocab_size: int  # v
  embed_dim: int  # d
  hidden_dim: int  # f, MLP width
  num_layers: int  # l
  num_heads: int  # h
  num_kv_heads: int  # n (1 = MQA, h = MHA, otherwise GQA)
  head_dim: int  # k
  activation: str = "silu"  # gelu_tanh (Gemma GeGLU) | silu (Llama SwiGLU)
  norm_eps: float = 1e-6
  norm_plus_one: bool = False  # Gemma RMSNorm x*(1+w), w init 0; Llama x*w, w init 1
  scale_embeddings: bool = False  # Gemma: embeddings * sqrt(d) (rounded to the compute dtype)
  tie_embeddings: bool = True  # logits use the input embedding; no lm_head parameter
  qkv_bias: bool = False  # Qwen2
  qk_norm: bool = False  # Gemma 3: RMSNorm over k on queries and keys, before RoPE
  use_post_attn_norm: bool = False  # Gemma 2/3
  use_post_ffw_norm: bool = False  # Gemma 2/3
  query_pre_attn_scalar: float | None = None  # attention scale = this**-0.5; None = head_dim
  attn_logit_softcap: float | None = None  # Gemma 2: 50
  final_logit_softcap: float | None = None  # Gemma 2: 30
  sliding_window: int | None = None  # window W of local layers (a query sees W keys incl. itself)
  layer_types: tuple[str, ...] = ()  # 'global'|'local' per layer; () = all global
  rope_theta: float = 10_000.0  # RoPE base of global layers
  rope_local_theta: float | None = None  # RoPE base of local layers; None = rope_theta
  rope_scaling_type: str = "none"  # none | linear | llama3
  rope_scaling_factor: float = 1.0
  rope_llama3_low_freq_factor: float = 1.0
  rope_llama3_high_freq_factor: float = 4.0
  rope_original_max_position: int = 8192  # llama3 scaling only
  rope_scale_local: bool = False  # apply rope scaling to local layers too (Gemma 3: no)
  max_seq_len: int = 8192
  dtype: str = "float32"  # compute dtype
  param_dtype: str = "float32"  # storage dtype of the parameters
  remat_policy: str = "none"  # one of REMAT_POLICIES
  scan_layers: bool = True  # False = Python loop over the same stacked parameter tree

  def __post_init__(self):
    if not self.layer_types:
      object.__setattr__(self, "layer_types", ("global",) * self.num_layers)
    else:
      object.__setattr__(self, "layer_types", tuple(self.layer_types))
    self._validate()

  def _validate(self):
    def need(ok: bool, field: str, msg: str):
      if not ok:
        raise ValueError(f"ModelConfig.{field}: {msg} (got {getattr(self, field)!r})")

    for name, allowed in (
      ("family", FAMILIES),
      ("activation", ACTIVATIONS),
      ("rope_scaling_type", ROPE_SCALING_TYPES),
      ("remat_policy", REMAT_POLICIES),
      ("dtype", DTYPES),
      ("param_dtype", DTYPES),
    ):
      need(getattr(self, name) in allowed, name, f"must be one of {allowed}")
    for name in (*SIZE_FIELDS, "max_seq_len", "rope_original_max_position"):
      value = getattr(self, name)
      need(isinstance(value, int) and value > 0, name, "must be a positive int")
    need(self.head_dim % 2 == 0, "head_dim", "must be even for RoPE")
    need(
      self.num_heads % self.num_kv_heads == 0,
      "num_kv_heads",
      f"must divide num_heads={self.num_heads}",
    )
    need(self.norm_eps > 0, "norm_eps", "must be > 0")
    need(self.rope_theta > 0, "rope_theta", "must be > 0")
    need(
      self.rope_local_theta is None or self.rope_local_theta > 0, "rope_local_theta", "must be > 0"
    )
    need(self.rope_scaling_factor > 0, "rope_scaling_factor", "must be > 0")
    if self.rope_scaling_type == "llama3":
      need(
        self.rope_llama3_high_freq_factor > self.rope_llama3_low_freq_factor,
        "rope_llama3_high_freq_factor",
        f"must exceed rope_llama3_low_freq_factor={self.rope_llama3_low_freq_factor}",
      )
    for name in ("query_pre_attn_scalar", "attn_logit_softcap", "final_logit_softcap"):
      value = getattr(self, name)
      need(value is None or value > 0, name, "must be None or > 0")
    need(
      len(self.layer_types) == self.num_layers,
      "layer_types",
      f"must have num_layers={self.num_layers} entries",
    )
    bad = [t for t in self.layer_types if t not in LAYER_TYPES]
    need(not bad, "layer_types", f"entries must be in {LAYER_TYPES}, found {bad}")
    if "local" in self.layer_types:
      need(
        isinstance(self.sliding_window, int) and self.sliding_window > 0,
        "sliding_window",
        "must be a positive int when layer_types has 'local' layers",
      )
    else:
      need(self.sliding_window is None or self.sliding_window > 0, "sliding_window", "must be > 0")

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def params_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  @property
  def attn_scale(self) -> float:
    """Multiplier on q.k logits: query_pre_attn_scalar**-0.5 (default head_dim**-0.5)."""
    scalar = self.head_dim if self.query_pre_attn_scalar is None else self.query_pre_attn_scalar
    return scalar**-0.5

  @property
  def embed_scale(self) -> float:
    return math.sqrt(self.embed_dim) if self.scale_embeddings else 1.0
