"""A model from a checkpoint path: the kind is detected by path, the tokenizer found beside it.

`load_model` reads a .gguf file, an HF safetensors file or directory, or a Gemma Flax/Orbax
directory into (ModelConfig, host params, Tokenizer), checking the checkpoint's architecture
against a preset when one is named. `default_template` picks the chat format a model family uses.
"""

import dataclasses
import os
from typing import Any

from score_jax.data import tokenizer as tokenizer_lib
from score_jax.models import fetch, presets
from score_jax.models.config import SIZE_FIELDS, ModelConfig

PyTree = Any

# Fields a checkpoint's own config must share with --preset (dtypes etc. are run choices).
_ARCH_FIELDS = ("family", *SIZE_FIELDS, "tie_embeddings", "qkv_bias")


def check_matches_preset(found: ModelConfig, preset: ModelConfig, source: str) -> None:
  """Raises ValueError naming the first architecture field where `found` differs from `preset`."""
  for field in _ARCH_FIELDS:
    if getattr(found, field) != getattr(preset, field):
      raise ValueError(
        f"{source} does not match the preset: {field} is {getattr(found, field)!r} in the "
        f"checkpoint, {getattr(preset, field)!r} in the preset"
      )


# Checkpoint names that resolve to a file fetched (and cached) on first use.
NAMED_CHECKPOINTS = {"smollm2-gguf": lambda: fetch.smollm2_gguf_path()}


def resolve_named(checkpoint: str) -> str:
  """The path a NAMED_CHECKPOINTS name stands for (fetched on first use); other paths as given."""
  return str(NAMED_CHECKPOINTS[checkpoint]()) if checkpoint in NAMED_CHECKPOINTS else checkpoint


def load_model(
  checkpoint: str,
  preset: str | None = None,
  tokenizer_path: str | None = None,
  dtype: str = "float32",
) -> tuple[ModelConfig, PyTree, tokenizer_lib.Tokenizer]:
  """Loads (config, params, tokenizer) from a checkpoint path, detecting its kind by path.

  A name of NAMED_CHECKPOINTS (e.g. "smollm2-gguf") stands for the file it fetches on first use.
  """
  path = os.path.expanduser(resolve_named(checkpoint))
  want = presets.get_preset(preset, dtype=dtype, param_dtype=dtype) if preset else None
  tok = None
  if path.endswith(".gguf"):
    from score_jax.models import gguf_checkpoint

    config, params, tok = gguf_checkpoint.load_gguf(
      path, preset=want, dtype=dtype, param_dtype=dtype
    )
  elif _is_hf(path):
    from score_jax.models import hf_checkpoint, hf_config

    directory = path if os.path.isdir(path) else os.path.dirname(path)
    has_config = os.path.exists(os.path.join(directory, "config.json"))
    if want is None and not has_config:
      raise ValueError(f"{path}: no config.json next to the weights; pass --preset")
    if has_config:
      found = dataclasses.replace(
        hf_config.load_hf_config(directory), dtype=dtype, param_dtype=dtype
      )
      if want is not None:
        check_matches_preset(found, want, f"{directory}/config.json")
      want = want or found
    config, params = hf_checkpoint.load_hf_checkpoint(path, config=want)
    tok = _tokenizer_in(directory)
  elif os.path.isdir(path):
    if want is None:
      raise ValueError(f"{path}: a Gemma Flax/Orbax checkpoint carries no config; pass --preset")
    from score_jax.models import gemma_flax_checkpoint

    # Gemma 1/2 releases pad the embedding past the tokenizer's vocabulary; those rows are unused.
    params = gemma_flax_checkpoint.load_gemma_flax(path, want, drop_extra_vocab=True)
    config = want
    tok = _tokenizer_in(path) or _tokenizer_in(os.path.dirname(os.path.normpath(path)))
  else:
    raise ValueError(
      f"--checkpoint={checkpoint}: not a .gguf file, a .safetensors file, or a checkpoint directory"
    )
  if tokenizer_path:
    tok = tokenizer_lib.load_tokenizer(os.path.expanduser(tokenizer_path))
  if tok is None:
    raise ValueError(f"{path}: no tokenizer found next to the checkpoint; pass --tokenizer")
  if tok.vocab_size > config.vocab_size:
    raise ValueError(
      f"tokenizer {tok.source} has {tok.vocab_size} tokens but the model only {config.vocab_size}"
    )
  return config, params, tok


def _is_hf(path: str) -> bool:
  if os.path.isfile(path):
    return path.endswith((".safetensors", ".safetensors.index.json"))
  return any(
    os.path.exists(os.path.join(path, f))
    for f in ("model.safetensors", "model.safetensors.index.json")
  )


def _tokenizer_in(directory: str) -> tokenizer_lib.Tokenizer | None:
  for name in ("tokenizer.json", "tokenizer.model"):
    if os.path.exists(os.path.join(directory, name)):
      return tokenizer_lib.load_tokenizer(os.path.join(directory, name))
  return None


def default_template(config: ModelConfig, tok: tokenizer_lib.Tokenizer) -> str:
  """Gemma families -> 'gemma'; otherwise the format whose markers the vocabulary holds."""
  if config.family.startswith("gemma"):
    return "gemma"
  if tok.has_piece("<|start_header_id|>"):
    return "llama3"
  if tok.has_piece("<|im_start|>"):
    return "chatml"
  raise ValueError(
    f"{tok.source}: cannot tell the chat format ({config.family} model without ChatML or Llama 3 "
    "markers); pass --chat_template (or --chat_template=none for raw text)"
  )
