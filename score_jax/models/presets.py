"""Named architectures: the published model configs plus tiny test models of every family.

`get_preset(name, **overrides)` returns a validated ModelConfig. Numbers come from the models'
Hugging Face `config.json` files (source noted on each line) and transformers' config classes.
"""

import dataclasses
import difflib

from score_jax.models.config import ModelConfig, layer_types_pattern


def _gemma(**kw) -> ModelConfig:
  base = dict(
    family="gemma",
    activation="gelu_tanh",
    norm_eps=1e-6,
    norm_plus_one=True,
    scale_embeddings=True,
    tie_embeddings=True,
    rope_theta=10_000.0,
    max_seq_len=8192,
  )
  return ModelConfig(**{**base, **kw})


def _gemma2(**kw) -> ModelConfig:
  base = dict(
    family="gemma2",
    use_post_attn_norm=True,
    use_post_ffw_norm=True,
    attn_logit_softcap=50.0,
    final_logit_softcap=30.0,
    sliding_window=4096,
  )
  kw = {**base, **kw}
  kw.setdefault("layer_types", layer_types_pattern(kw["num_layers"], 2))
  return _gemma(**kw)


def _gemma3(**kw) -> ModelConfig:
  base = dict(
    family="gemma3",
    use_post_attn_norm=True,
    use_post_ffw_norm=True,
    qk_norm=True,
    rope_theta=1_000_000.0,
    rope_local_theta=10_000.0,
  )
  kw = {**base, **kw}
  kw.setdefault("layer_types", layer_types_pattern(kw["num_layers"], 6))
  return _gemma(**kw)


def _llama(**kw) -> ModelConfig:
  base = dict(family="llama", activation="silu", norm_eps=1e-5, tie_embeddings=True)
  return ModelConfig(**{**base, **kw})


def _llama3(**kw) -> ModelConfig:
  base = dict(
    vocab_size=128_256,
    rope_theta=500_000.0,
    rope_scaling_type="llama3",
    rope_scaling_factor=32.0,
    rope_llama3_low_freq_factor=1.0,
    rope_llama3_high_freq_factor=4.0,
    rope_original_max_position=8192,
    max_seq_len=131_072,
  )
  return _llama(**{**base, **kw})


def _qwen2(**kw) -> ModelConfig:
  base = dict(
    family="qwen2",
    qkv_bias=True,
    norm_eps=1e-6,
    rope_theta=1_000_000.0,
    vocab_size=151_936,
    max_seq_len=32_768,
  )
  return _llama(**{**base, **kw})


_TINY = dict(vocab_size=320, embed_dim=64, hidden_dim=128, num_heads=4, num_kv_heads=2, head_dim=16)

PRESETS: dict[str, ModelConfig] = {
  # google/gemma-2b config.json (MQA)
  "gemma-2b": _gemma(
    vocab_size=256_000,
    embed_dim=2048,
    hidden_dim=16_384,
    num_layers=18,
    num_heads=8,
    num_kv_heads=1,
    head_dim=256,
  ),
  # google/gemma-7b config.json (MHA)
  "gemma-7b": _gemma(
    vocab_size=256_000,
    embed_dim=3072,
    hidden_dim=24_576,
    num_layers=28,
    num_heads=16,
    num_kv_heads=16,
    head_dim=256,
  ),
  # google/gemma-2-2b config.json
  "gemma2-2b": _gemma2(
    vocab_size=256_000,
    embed_dim=2304,
    hidden_dim=9216,
    num_layers=26,
    num_heads=8,
    num_kv_heads=4,
    head_dim=256,
    query_pre_attn_scalar=256.0,
  ),
  # google/gemma-2-9b config.json
  "gemma2-9b": _gemma2(
    vocab_size=256_000,
    embed_dim=3584,
    hidden_dim=14_336,
    num_layers=42,
    num_heads=16,
    num_kv_heads=8,
    head_dim=256,
    query_pre_attn_scalar=256.0,
  ),
  # google/gemma-3-1b-pt config.json
  "gemma3-1b": _gemma3(
    vocab_size=262_144,
    embed_dim=1152,
    hidden_dim=6912,
    num_layers=26,
    num_heads=4,
    num_kv_heads=1,
    head_dim=256,
    query_pre_attn_scalar=256.0,
    sliding_window=512,
    max_seq_len=32_768,
  ),
  # google/gemma-3-4b-pt config.json, text_config (the SigLIP vision tower is not modelled)
  "gemma3-4b": _gemma3(
    vocab_size=262_208,
    embed_dim=2560,
    hidden_dim=10_240,
    num_layers=34,
    num_heads=8,
    num_kv_heads=4,
    head_dim=256,
    query_pre_attn_scalar=256.0,
    sliding_window=1024,
    rope_scaling_type="linear",
    rope_scaling_factor=8.0,
    max_seq_len=131_072,
  ),
  # HuggingFaceTB/SmolLM2-135M config.json
  "smollm2-135m": _llama(
    vocab_size=49_152,
    embed_dim=576,
    hidden_dim=1536,
    num_layers=30,
    num_heads=9,
    num_kv_heads=3,
    head_dim=64,
    rope_theta=100_000.0,
  ),
  # HuggingFaceTB/SmolLM2-360M config.json
  "smollm2-360m": _llama(
    vocab_size=49_152,
    embed_dim=960,
    hidden_dim=2560,
    num_layers=32,
    num_heads=15,
    num_kv_heads=5,
    head_dim=64,
    rope_theta=100_000.0,
  ),
  # HuggingFaceTB/SmolLM2-1.7B config.json
  "smollm2-1.7b": _llama(
    vocab_size=49_152,
    embed_dim=2048,
    hidden_dim=8192,
    num_layers=24,
    num_heads=32,
    num_kv_heads=32,
    head_dim=64,
    rope_theta=130_000.0,
  ),
  # meta-llama/Llama-3.2-1B config.json
  "llama3.2-1b": _llama3(
    embed_dim=2048,
    hidden_dim=8192,
    num_layers=16,
    num_heads=32,
    num_kv_heads=8,
    head_dim=64,
  ),
  # meta-llama/Llama-3.2-3B config.json
  "llama3.2-3b": _llama3(
    embed_dim=3072,
    hidden_dim=8192,
    num_layers=28,
    num_heads=24,
    num_kv_heads=8,
    head_dim=128,
  ),
  # meta-llama/Llama-3.1-8B config.json
  "llama3.1-8b": _llama3(
    embed_dim=4096,
    hidden_dim=14_336,
    num_layers=32,
    num_heads=32,
    num_kv_heads=8,
    head_dim=128,
    rope_scaling_factor=8.0,
    tie_embeddings=False,
  ),
  # Qwen/Qwen2.5-0.5B config.json
  "qwen2.5-0.5b": _qwen2(
    embed_dim=896,
    hidden_dim=4864,
    num_layers=24,
    num_heads=14,
    num_kv_heads=2,
    head_dim=64,
  ),
  # Qwen/Qwen2.5-1.5B config.json
  "qwen2.5-1.5b": _qwen2(
    embed_dim=1536,
    hidden_dim=8960,
    num_layers=28,
    num_heads=12,
    num_kv_heads=2,
    head_dim=128,
  ),
  # Qwen/Qwen2.5-7B config.json (untied head, larger padded vocab)
  "qwen2.5-7b": _qwen2(
    vocab_size=152_064,
    embed_dim=3584,
    hidden_dim=18_944,
    num_layers=28,
    num_heads=28,
    num_kv_heads=4,
    head_dim=128,
    tie_embeddings=False,
    max_seq_len=131_072,
  ),
  # mistralai/Mistral-7B-v0.3 config.json (sliding_window null)
  "mistral-7b": ModelConfig(
    family="mistral",
    vocab_size=32_768,
    embed_dim=4096,
    hidden_dim=14_336,
    num_layers=32,
    num_heads=32,
    num_kv_heads=8,
    head_dim=128,
    activation="silu",
    norm_eps=1e-5,
    tie_embeddings=False,
    rope_theta=1_000_000.0,
    max_seq_len=32_768,
  ),
  # The laptop testbed's base model (score_jax.testbed): Gemma 1 layout, 0.28M parameters.
  # Layers unrolled: on a 2-core CPU XLA's layer loop makes a pretraining step 1.3x slower
  # (`python -m score_jax.benchmarks packing`); 4 layers compile quickly either way.
  "testbed-gemma": _gemma(
    vocab_size=640,
    embed_dim=64,
    hidden_dim=256,
    num_layers=4,
    num_heads=4,
    num_kv_heads=1,
    head_dim=16,
    max_seq_len=512,
    scan_layers=False,
  ),  # fmt: skip
  # Test models: each family's switches at toy size; window 8 so tests run past it.
  "tiny-gemma": _gemma(**{**_TINY, "num_kv_heads": 1}, num_layers=2, max_seq_len=256),
  "tiny-gemma2": _gemma2(
    **_TINY, num_layers=2, query_pre_attn_scalar=16.0, sliding_window=8, max_seq_len=256
  ),
  "tiny-gemma3": _gemma3(
    **_TINY,
    num_layers=4,
    layer_types=layer_types_pattern(4, 3),
    query_pre_attn_scalar=16.0,
    sliding_window=8,
    rope_scaling_type="linear",
    rope_scaling_factor=8.0,
    max_seq_len=256,
  ),
  "tiny-llama": _llama(
    **_TINY,
    num_layers=2,
    rope_theta=500_000.0,
    rope_scaling_type="llama3",
    rope_scaling_factor=8.0,
    rope_original_max_position=64,
    max_seq_len=256,
  ),
  "tiny-qwen2": _qwen2(**_TINY, num_layers=2, max_seq_len=256),
  "tiny-mistral": ModelConfig(
    family="mistral",
    **_TINY,
    num_layers=2,
    activation="silu",
    norm_eps=1e-5,
    tie_embeddings=False,
    rope_theta=1_000_000.0,
    max_seq_len=256,
  ),
}
# SmolLM2-135M-Instruct is the 135M base architecture after SFT/DPO (same config.json).
PRESETS["smollm2-135m-instruct"] = PRESETS["smollm2-135m"]


def get_preset(name: str, **overrides) -> ModelConfig:
  """Returns preset `name` with `overrides` applied (validated via dataclasses.replace).

  Overriding `num_layers` without `layer_types` re-derives the local/global pattern with the
  preset's period, so `get_preset('gemma3-1b', num_layers=2)` works.
  """
  if name not in PRESETS:
    close = difflib.get_close_matches(name, PRESETS, n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise ValueError(f"Unknown model preset {name!r}.{hint} Known presets: {sorted(PRESETS)}")
  base = PRESETS[name]
  unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)})
  if unknown:
    raise ValueError(f"get_preset({name!r}): unknown ModelConfig fields {unknown}")
  if "num_layers" in overrides and "layer_types" not in overrides:
    types = base.layer_types
    period = types.index("global") + 1 if "global" in types else None
    n = overrides["num_layers"]
    overrides["layer_types"] = (
      layer_types_pattern(n, period) if period and "local" in types else (types[0],) * n
    )
  return dataclasses.replace(base, **overrides)
