"""A trained policy as a Hugging Face checkpoint directory that transformers' Auto classes load.

  WORKDIR/export/<run>/  model.safetensors, config.json (with bos / eos / pad ids),
                         tokenizer.json, tokenizer_config.json (special tokens and the start
                         checkpoint's chat template), score_jax_export.json (run, step, label)

The directory appears only when complete (written beside it, then renamed), so a killed export
is redone on the next run. `hf_check` verifies that transformers answers as our evaluation did.
"""

from __future__ import annotations

import json
import os
import shutil

import jax

from score_jax.data import tokenizer as tokenizer_lib
from score_jax.models import hf_checkpoint, loading
from score_jax.rl import optim
from score_jax.trainer import checkpoint as checkpoint_lib
from score_jax.trainer import eval_context
from score_jax.trainer import setup as setup_lib


def save_tokenizer(
  tok: tokenizer_lib.Tokenizer, directory: str, chat_template: str | None = None
) -> None:
  """tokenizer.json and tokenizer_config.json (special tokens, optional chat template): what
  transformers' AutoTokenizer and our `load_tokenizer` read back."""
  if not isinstance(tok, tokenizer_lib.HFTokenizer):
    raise TypeError(f"export needs a tokenizer.json tokenizer, got {type(tok).__name__}")
  os.makedirs(directory, exist_ok=True)
  tok.save_json(os.path.join(directory, "tokenizer.json"))
  piece = lambda i: None if i is None else tok.id_to_piece(i)
  config = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": piece(tok.bos_id),
    "eos_token": piece(tok.eos_id),
    "pad_token": piece(tok.pad_id),
    "clean_up_tokenization_spaces": False,
  }
  if chat_template:
    config["chat_template"] = chat_template
  with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
    json.dump(config, f, indent=2)


def _chat_template_of(checkpoint: str) -> str | None:
  """The Jinja chat template a GGUF or HF checkpoint carries (None when it has none)."""
  path = os.path.expanduser(str(loading.resolve_named(checkpoint)))
  if path.endswith(".gguf"):
    import gguf

    field = gguf.GGUFReader(path).fields.get("tokenizer.chat_template")
    return field.contents() if field is not None else None
  config = os.path.join(
    path if os.path.isdir(path) else os.path.dirname(path), "tokenizer_config.json"
  )
  if os.path.exists(config):
    with open(config) as f:
      return json.load(f).get("chat_template")
  return None


def export_policy(rl_cfg, rundir: str, out_dir: str) -> str:
  """Writes the run's selected policy (eval.checkpoint, 'best' by default) as a HF checkpoint
  directory that transformers' Auto classes load; returns the directory."""
  step, label = eval_context.resolve_checkpoint(rl_cfg, rundir)
  mesh, _ = setup_lib.make_meshes(rl_cfg)
  model_cfg, params, tok = setup_lib.load_base(rl_cfg, rundir, mesh)
  if label != eval_context.BASE:
    optimizer = optim.make_optimizer(setup_lib.optim_config(rl_cfg))
    abstract = optim.abstract_train_state(model_cfg, optimizer, mesh)
    with checkpoint_lib.Checkpointer(os.path.join(rundir, "checkpoints"), async_save=False) as ck:
      params = ck.restore(step, abstract)[0].params
  tmp = out_dir + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  ids = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}
  hf_checkpoint.export_hf(model_cfg, params, tmp, extra_config=ids)
  if jax.process_index() == 0:
    save_tokenizer(tok, tmp, chat_template=_chat_template_of(rl_cfg.model.checkpoint))
    with open(os.path.join(tmp, "score_jax_export.json"), "w") as f:
      json.dump({"run": rundir, "step": step, "checkpoint": label}, f, indent=1)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)  # the phase is done exactly when this directory exists
  return out_dir
