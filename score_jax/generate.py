"""`python -m score_jax.generate`: chat with a checkpoint through a plain KV-cache decoding loop.

  python -m score_jax.generate --preset=smollm2-135m-instruct \
      --checkpoint=~/.cache/score_jax/SmolLM2-135M-Instruct.Q4_1.gguf --prompt="What is 12+7?"

Owns checkpoint detection by path (.gguf file; HF safetensors file or directory; Gemma Flax/Orbax
directory), the choice of chat template, and a reference decoding loop: one jitted prefill of the
prompt, then one jitted single-token step per new token over the explicit cache, stopping at the
template's stop ids or EOS. It is the readable reference the fast batched sampler
(`score_jax.generation.sampling`) is checked against, not a throughput tool.
"""

import functools
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from absl import app, flags

from score_jax.data import chat
from score_jax.data import tokenizer as tokenizer_lib
from score_jax.models import decoder
from score_jax.models.config import ModelConfig
from score_jax.models.loading import default_template, load_model
from score_jax.parallel import platforms

PyTree = Any

_PRESET = flags.DEFINE_string(
  "preset", None, "Model preset (see models/presets.py); checked against the checkpoint."
)
_CHECKPOINT = flags.DEFINE_string(
  "checkpoint", None, ".gguf file, HF safetensors file/dir, or Gemma Flax/Orbax dir."
)
_TOKENIZER = flags.DEFINE_string(
  "tokenizer", None, "tokenizer.model / tokenizer.json (default: from the checkpoint)."
)
_CHAT_TEMPLATE = flags.DEFINE_string(
  "chat_template", None, "gemma | chatml | llama3 | none (default: by model family)."
)
_PROMPT = flags.DEFINE_string("prompt", None, "User message.")
_SYSTEM = flags.DEFINE_string("system", None, "System message (default: the template's own).")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 64, "Maximum number of generated tokens.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "Sampling temperature; 0 = greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens; 0 = all.")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass; 1 = off.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_DTYPE = flags.DEFINE_enum(
  "dtype", "float32", ["float32", "bfloat16", "float16"], "Compute and parameter dtype."
)


def prompt_ids(
  tok: tokenizer_lib.Tokenizer, template: str, prompt: str, system: str | None
) -> tuple[list[int], tuple[int, ...]]:
  """(prompt ids, stop ids) for one user message under `template` ('none' = raw text)."""
  if template == "none":
    if system is not None:
      raise ValueError("--system needs a chat template; --chat_template=none sends raw text")
    return tok.encode(prompt), tuple(tok.stop_ids)
  tmpl = chat.get_template(template)
  tmpl.check_tokenizer(tok)
  return tmpl.first_turn_ids(tok, prompt, system), tmpl.stop_ids(tok)


def sample_logits(
  logits_v: jax.Array, rng: jax.Array, temperature: float, top_k: int, top_p: float
) -> jax.Array:
  """One token id from float32 logits [v]; temperature 0 is greedy (argmax)."""
  if temperature == 0.0:
    return jnp.argmax(logits_v).astype(jnp.int32)
  logits_v = logits_v.astype(jnp.float32) / temperature
  if top_k > 0:
    kth = jax.lax.top_k(logits_v, top_k)[0][-1]
    logits_v = jnp.where(logits_v < kth, -jnp.inf, logits_v)
  if top_p < 1.0:
    sorted_v = jnp.sort(logits_v)[::-1]
    probs = jax.nn.softmax(sorted_v)
    # Keep the smallest prefix whose mass reaches top_p: a token stays if the mass before it < p.
    keep = (jnp.cumsum(probs) - probs) < top_p
    cutoff = jnp.min(jnp.where(keep, sorted_v, jnp.inf))
    logits_v = jnp.where(logits_v < cutoff, -jnp.inf, logits_v)
  return jax.random.categorical(rng, logits_v).astype(jnp.int32)


_CACHE_BUCKET = 128


@functools.lru_cache(maxsize=8)
def _decode_fns(config: ModelConfig, temperature: float, top_k: int, top_p: float):
  """Jitted (prefill, step), cached per config and sampling settings (jit caches per shape)."""
  sample = functools.partial(sample_logits, temperature=temperature, top_k=top_k, top_p=top_p)

  @jax.jit
  def prefill(params, tokens_bt, cache, rng):
    logits_btv, cache = decoder.forward(config, params, tokens_bt, cache=cache)
    return sample(logits_btv[0, -1], rng), cache

  @jax.jit
  def step(params, token, position, cache, rng):
    tokens_bt, positions_bt = token.reshape(1, 1), position.reshape(1, 1)
    mask_bt = jnp.ones((1, 1), bool)
    logits_btv, cache = decoder.forward(config, params, tokens_bt, positions_bt, mask_bt, cache)
    return sample(logits_btv[0, -1], rng), cache

  return prefill, step


def generate_ids(
  config: ModelConfig,
  params: PyTree,
  prompt: Sequence[int],
  max_new_tokens: int,
  stop_ids: Sequence[int],
  *,
  temperature: float = 0.0,
  top_k: int = 0,
  top_p: float = 1.0,
  seed: int = 0,
) -> list[int]:
  """Generated ids for one prompt, ending with the stop id when one was produced."""
  if not prompt:
    raise ValueError("empty prompt: nothing to condition on")
  if max_new_tokens <= 0:
    raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
  if temperature < 0 or not 0 < top_p <= 1 or not 0 <= top_k <= config.vocab_size:
    raise ValueError(f"bad sampling settings {temperature=} {top_k=} {top_p=}")
  total = len(prompt) + max_new_tokens
  if total > config.max_seq_len:
    raise ValueError(
      f"prompt ({len(prompt)}) + max_new_tokens ({max_new_tokens}) exceeds the model's "
      f"max_seq_len {config.max_seq_len}"
    )
  prefill, step = _decode_fns(config, float(temperature), int(top_k), float(top_p))
  rng = jax.random.key(seed)
  # Cache length rounded up to a bucket so the step function compiles once per bucket.
  cache = decoder.init_cache(
    config, 1, min(-(-total // _CACHE_BUCKET) * _CACHE_BUCKET, config.max_seq_len)
  )
  token, cache = prefill(
    params, jnp.asarray([prompt], jnp.int32), cache, jax.random.fold_in(rng, 0)
  )
  out, stops = [], set(int(i) for i in stop_ids)
  for i in range(max_new_tokens):
    out.append(int(token))
    if out[-1] in stops or i + 1 == max_new_tokens:
      break
    position = jnp.asarray(len(prompt) + i, jnp.int32)
    token, cache = step(params, token, position, cache, jax.random.fold_in(rng, i + 1))
  return out


def complete(
  config: ModelConfig,
  params: PyTree,
  tok: tokenizer_lib.Tokenizer,
  template: str,
  prompt: str,
  system: str | None,
  max_new_tokens: int,
  **sampling,
) -> tuple[list[int], bool, str]:
  """(generated ids, whether a stop id ended them, the text without the stop id) of one user
  message; `sampling` is generate_ids' temperature / top_k / top_p / seed."""
  ids, stop_ids = prompt_ids(tok, template, prompt, system)
  out = generate_ids(config, params, ids, max_new_tokens, stop_ids, **sampling)
  stopped = bool(out) and out[-1] in stop_ids
  return out, stopped, tok.decode(out[:-1] if stopped else out)


def run(config, workdir: str) -> list[dict]:
  """The main job 'generate': completes `config.generate.prompts`, prints them and writes
  `workdir/generations.jsonl` (one record per prompt)."""
  checkpoint = config.model.checkpoint
  if not checkpoint:
    raise ValueError("config.model.checkpoint is empty: the generate job needs trained weights.")
  model_cfg, params, tok = load_model(
    checkpoint, config.model.preset, config.model.tokenizer or None, config.model.dtype
  )
  template = config.model.chat_template or default_template(model_cfg, tok)
  g = config.generate
  records = []
  for i, prompt in enumerate(g.prompts):
    sampling = dict(temperature=g.temperature, top_k=g.top_k, top_p=g.top_p, seed=config.seed + i)
    out, stopped, text = complete(
      model_cfg, params, tok, template, prompt, g.system or None, g.max_new_tokens, **sampling
    )
    print(f"### {prompt}\n{text}\n", flush=True)
    records.append({"prompt": prompt, "completion": text, "token_ids": out, "stopped": stopped})
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "generations.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  return records


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _CHECKPOINT.value or _PROMPT.value is None:
    raise app.UsageError("--checkpoint and --prompt are required")
  platforms.skip_absent_tpu()
  try:
    config, params, tok = load_model(
      _CHECKPOINT.value, _PRESET.value, _TOKENIZER.value, _DTYPE.value
    )
    template = _CHAT_TEMPLATE.value or default_template(config, tok)
    sampling = dict(
      temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value, seed=_SEED.value
    )
    _, _, text = complete(
      config,
      params,
      tok,
      template,
      _PROMPT.value,
      _SYSTEM.value,
      _MAX_NEW_TOKENS.value,
      **sampling,
    )
  except (ValueError, OSError) as e:  # one clear line instead of a traceback; exit status 1
    sys.exit(f"generate: error: {e}")
  print(text)


if __name__ == "__main__":
  app.run(main)
