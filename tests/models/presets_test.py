"""Tests for ModelConfig validation and the presets (published sizes, local/global patterns)."""

import dataclasses

import pytest

from score_jax.models import config as config_lib
from score_jax.models import decoder, presets

# Published parameter counts (model cards / safetensors metadata). gemma3-4b: text decoder only
# (the 4.3B of the release includes the SigLIP vision tower, which is not modelled here).
PUBLISHED = {
  "gemma-2b": 2.51e9,
  "gemma-7b": 8.54e9,
  "gemma2-2b": 2.61e9,
  "gemma2-9b": 9.24e9,
  "gemma3-1b": 1.00e9,
  "gemma3-4b": 3.88e9,
  "smollm2-135m": 135e6,
  "smollm2-135m-instruct": 135e6,
  "smollm2-360m": 362e6,
  "smollm2-1.7b": 1.71e9,
  "llama3.2-1b": 1.24e9,
  "llama3.2-3b": 3.21e9,
  "llama3.1-8b": 8.03e9,
  "qwen2.5-0.5b": 0.494e9,
  "qwen2.5-1.5b": 1.54e9,
  "qwen2.5-7b": 7.62e9,
  "mistral-7b": 7.25e9,
}


def test_every_real_preset_builds_abstractly_at_its_published_size():
  real = {n for n in presets.PRESETS if not n.startswith(("tiny-", "testbed-"))}
  assert real == set(PUBLISHED)
  # The laptop testbed's own base model (never published): the size its docs state.
  assert decoder.count_params(presets.get_preset("testbed-gemma")) == 279_104
  for name, want in PUBLISHED.items():
    got = decoder.count_params(presets.get_preset(name))
    assert abs(got - want) / want < 0.02, (name, got, want)


def test_architecture_switches_of_real_presets():
  g2 = presets.get_preset("gemma2-9b")
  assert g2.layer_types[:4] == ("local", "global", "local", "global")  # even layers local (HF)
  assert (g2.attn_logit_softcap, g2.final_logit_softcap, g2.sliding_window) == (50.0, 30.0, 4096)
  g3 = presets.get_preset("gemma3-1b")
  assert [i for i, t in enumerate(g3.layer_types) if t == "global"] == [5, 11, 17, 23]
  assert g3.qk_norm and g3.sliding_window == 512 and g3.rope_local_theta == 10_000.0
  g34 = presets.get_preset("gemma3-4b")
  assert (g34.rope_scaling_type, g34.rope_scaling_factor, g34.rope_scale_local) == (
    "linear",
    8.0,
    False,
  )
  assert g34.sliding_window == 1024 and g34.rope_theta == 1e6
  assert presets.get_preset("gemma-2b").num_kv_heads == 1
  assert presets.get_preset("gemma-7b").num_kv_heads == 16
  assert presets.get_preset("llama3.1-8b").rope_scaling_type == "llama3"
  assert presets.get_preset("qwen2.5-0.5b").tie_embeddings
  assert not presets.get_preset("qwen2.5-7b").tie_embeddings
  mistral = presets.get_preset("mistral-7b")
  assert mistral.sliding_window is None and set(mistral.layer_types) == {"global"}
  assert presets.PRESETS["smollm2-135m-instruct"] == presets.PRESETS["smollm2-135m"]


@pytest.mark.parametrize("name", [n for n in presets.PRESETS if n.startswith("tiny-")])
def test_tiny_presets_are_tiny_and_exercise_windows(name):
  cfg = presets.get_preset(name)
  assert 2 <= cfg.num_layers <= 4 and cfg.embed_dim == 64 and cfg.vocab_size == 320
  assert (cfg.num_heads, cfg.head_dim, cfg.hidden_dim) == (4, 16, 128)
  assert cfg.num_kv_heads == (1 if name == "tiny-gemma" else 2)
  if "local" in cfg.layer_types:
    assert cfg.sliding_window == 8


def test_unknown_preset_lists_names_and_suggests():
  with pytest.raises(ValueError, match=r"Did you mean \['gemma2-2b'") as err:
    presets.get_preset("gemma2-2")
  assert "smollm2-135m" in str(err.value) and "mistral-7b" in str(err.value)
  with pytest.raises(ValueError, match=r"unknown ModelConfig fields \['vocab'\]"):
    presets.get_preset("tiny-llama", vocab=3)


def test_overrides_rederive_the_layer_pattern():
  cfg = presets.get_preset("gemma3-1b", num_layers=7, dtype="bfloat16")
  assert cfg.layer_types == ("local",) * 5 + ("global", "local")
  assert cfg.dtype == "bfloat16" and presets.PRESETS["gemma3-1b"].dtype == "float32"
  assert presets.get_preset("tiny-llama", num_layers=3).layer_types == ("global",) * 3
  assert config_lib.layer_types_pattern(4, 2) == ("local", "global", "local", "global")


@pytest.mark.parametrize(
  "change,field",
  [
    ({"num_kv_heads": 3}, "num_kv_heads"),
    ({"family": "gpt2"}, "family"),
    ({"activation": "relu"}, "activation"),
    ({"embed_dim": 0}, "embed_dim"),
    ({"head_dim": 15}, "head_dim"),
    ({"layer_types": ("global",)}, "layer_types"),
    ({"layer_types": ("global", "sliding")}, "layer_types"),
    ({"sliding_window": None}, "sliding_window"),
    ({"rope_scaling_type": "yarn"}, "rope_scaling_type"),
    ({"remat_policy": "some"}, "remat_policy"),
    ({"dtype": "float64"}, "dtype"),
    ({"attn_logit_softcap": -1.0}, "attn_logit_softcap"),
    ({"norm_eps": 0.0}, "norm_eps"),
  ],
)
def test_config_validation_names_the_field(change, field):
  base = presets.get_preset("tiny-gemma2")  # has local layers, so a missing window is an error
  with pytest.raises(ValueError, match=rf"ModelConfig\.{field}:"):
    dataclasses.replace(base, **change)


def test_config_is_hashable_and_frozen():
  cfg = presets.get_preset("tiny-gemma3")
  assert hash(cfg) == hash(dataclasses.replace(cfg))
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.num_layers = 3
  assert cfg.attn_scale == 16.0**-0.5 and cfg.embed_scale == 8.0
