"""Named architectures: the published model configs plus tiny test models of every family.

`get_preset(name, **overrides)` returns a validated ModelConfig. Numbers come from the models'
Hugging Face `config.json` files (source noted beside each) and transformers' config classes.
"""

import dataclasses
import difflib

from score_jax.models.config import (
  FAMILY_SWITCHES,
  SIZE_FIELDS,
  ModelConfig,
  layer_types_pattern,
)


def _config(family: str, **fields) -> ModelConfig:
  """`family`'s hard-coded switches, then `fields` (the rest keep ModelConfig's defaults)."""
  return ModelConfig(family=family, **FAMILY_SWITCHES[family] | fields)


def _sizes(v: int, d: int, f: int, layers: int, h: int, n: int, k: int) -> dict[str, int]:
  """The size fields, in the order and letters of the shape legend in models/config.py."""
  fields = (v, d, f, layers, h, n, k)
  return dict(zip(SIZE_FIELDS, fields, strict=True))


def _gemma(**kw) -> ModelConfig:
  return _config("gemma", **kw)


def _gemma2(**kw) -> ModelConfig:
  base = dict(
    query_pre_attn_scalar=256.0,
    attn_logit_softcap=50.0,
    final_logit_softcap=30.0,
    sliding_window=4096,
  )
  kw = base | kw
  kw.setdefault("layer_types", layer_types_pattern(kw["num_layers"], 2))
  return _config("gemma2", **kw)


def _gemma3(**kw) -> ModelConfig:
  base = dict(query_pre_attn_scalar=256.0, rope_theta=1_000_000.0, rope_local_theta=10_000.0)
  kw = base | kw
  kw.setdefault("layer_types", layer_types_pattern(kw["num_layers"], 6))
  return _config("gemma3", **kw)


def _llama(**kw) -> ModelConfig:
  return _config("llama", **{"norm_eps": 1e-5, **kw})


def _llama3(**kw) -> ModelConfig:
  base = dict(
    rope_theta=500_000.0,
    rope_scaling_type="llama3",
    rope_scaling_factor=32.0,
    rope_original_max_position=8192,
    max_seq_len=131_072,
  )  # the low/high frequency factors keep ModelConfig's defaults, Llama 3's 1 and 4
  return _llama(**base | kw)


def _qwen2(**kw) -> ModelConfig:
  base = dict(rope_theta=1_000_000.0, max_seq_len=32_768)
  return _config("qwen2", **base | kw)


def _mistral(**kw) -> ModelConfig:
  base = dict(norm_eps=1e-5, tie_embeddings=False, rope_theta=1_000_000.0)
  return _config("mistral", **base | kw)


# Test models: each family's switches at toy size; window 8 so tests run past it.
_TINY = _sizes(320, 64, 128, 2, 4, 2, 16) | dict(max_seq_len=256)
_TINY_WINDOWED = _TINY | dict(query_pre_attn_scalar=16.0, sliding_window=8)

# Sizes are `_sizes(v, d, f, layers, h, n, k)`, all from each model's Hugging Face config.json.
PRESETS: dict[str, ModelConfig] = {
  "gemma-2b": _gemma(**_sizes(256_000, 2048, 16_384, 18, 8, 1, 256)),  # google/gemma-2b (MQA)
  "gemma-7b": _gemma(**_sizes(256_000, 3072, 24_576, 28, 16, 16, 256)),  # google/gemma-7b (MHA)
  "gemma2-2b": _gemma2(**_sizes(256_000, 2304, 9216, 26, 8, 4, 256)),  # google/gemma-2-2b
  "gemma2-9b": _gemma2(**_sizes(256_000, 3584, 14_336, 42, 16, 8, 256)),  # google/gemma-2-9b
  # google/gemma-3-1b-pt
  "gemma3-1b": _gemma3(
    **_sizes(262_144, 1152, 6912, 26, 4, 1, 256), sliding_window=512, max_seq_len=32_768
  ),
  # google/gemma-3-4b-pt, text_config (the SigLIP vision tower is not modelled)
  "gemma3-4b": _gemma3(
    **_sizes(262_208, 2560, 10_240, 34, 8, 4, 256),
    sliding_window=1024,
    rope_scaling_type="linear",
    rope_scaling_factor=8.0,
    max_seq_len=131_072,
  ),
  # HuggingFaceTB/SmolLM2-135M, -360M and -1.7B
  "smollm2-135m": _llama(**_sizes(49_152, 576, 1536, 30, 9, 3, 64), rope_theta=100_000.0),
  "smollm2-360m": _llama(**_sizes(49_152, 960, 2560, 32, 15, 5, 64), rope_theta=100_000.0),
  "smollm2-1.7b": _llama(**_sizes(49_152, 2048, 8192, 24, 32, 32, 64), rope_theta=130_000.0),
  # meta-llama/Llama-3.2-1B, Llama-3.2-3B and Llama-3.1-8B
  "llama3.2-1b": _llama3(**_sizes(128_256, 2048, 8192, 16, 32, 8, 64)),
  "llama3.2-3b": _llama3(**_sizes(128_256, 3072, 8192, 28, 24, 8, 128)),
  "llama3.1-8b": _llama3(
    **_sizes(128_256, 4096, 14_336, 32, 32, 8, 128), rope_scaling_factor=8.0, tie_embeddings=False
  ),
  # Qwen/Qwen2.5-0.5B, -1.5B and -7B (7B: untied head, larger padded vocab)
  "qwen2.5-0.5b": _qwen2(**_sizes(151_936, 896, 4864, 24, 14, 2, 64)),
  "qwen2.5-1.5b": _qwen2(**_sizes(151_936, 1536, 8960, 28, 12, 2, 128)),
  "qwen2.5-7b": _qwen2(
    **_sizes(152_064, 3584, 18_944, 28, 28, 4, 128), tie_embeddings=False, max_seq_len=131_072
  ),
  # mistralai/Mistral-7B-v0.3 (sliding_window null)
  "mistral-7b": _mistral(**_sizes(32_768, 4096, 14_336, 32, 32, 8, 128), max_seq_len=32_768),
  # The laptop testbed's base model (score_jax.testbed): Gemma 1 layout, 0.28M parameters.
  # Layers unrolled: on a 2-core CPU XLA's layer loop makes a pretraining step 1.3x slower
  # (`python -m score_jax.benchmarks packing`); 4 layers compile quickly either way.
  "testbed-gemma": _gemma(**_sizes(640, 64, 256, 4, 4, 1, 16), max_seq_len=512, scan_layers=False),
  "tiny-gemma": _gemma(**_TINY | dict(num_kv_heads=1)),
  "tiny-gemma2": _gemma2(**_TINY_WINDOWED),
  "tiny-gemma3": _gemma3(
    **_TINY_WINDOWED | dict(num_layers=4, layer_types=layer_types_pattern(4, 3)),
    rope_scaling_type="linear",
    rope_scaling_factor=8.0,
  ),
  "tiny-llama": _llama3(**_TINY, rope_scaling_factor=8.0, rope_original_max_position=64),
  "tiny-qwen2": _qwen2(**_TINY),
  "tiny-mistral": _mistral(**_TINY),
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
