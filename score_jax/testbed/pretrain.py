"""Pretraining the testbed's base model: next-token SFT on corpus transcripts, resumable.

`pretrain(...)` trains a `testbed-gemma` decoder from random init with the project's sharded SFT
step (the `sft` algorithm on packed rows, AdamW, cosine decay), checkpoints with Orbax every
`save_every` steps (a killed run resumes from the last one, data order included: batch i is always
rows perm[i*b:(i+1)*b] of the seed's permutation, packed several to a row by `pack_rows`), and
exports the result as a Hugging Face checkpoint directory (model.safetensors + config.json + the
tokenizer): the base model every later phase loads through the same `model.checkpoint` path a
Gemma checkpoint would take.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import jax
import numpy as np
from absl import logging

from score_jax.models import hf_checkpoint
from score_jax.models import sharding as model_sharding
from score_jax.models.config import ModelConfig
from score_jax.parallel import mesh as mesh_lib
from score_jax.rl import losses, optim, steps
from score_jax.rl.experience import Experience
from score_jax.trainer import checkpoint as checkpoint_lib
from score_jax.trainer import metric_writers

ROW_QUANTUM = 4  # packed batches have a multiple of this many rows: few shapes, few compiles


def batch_rows(lengths: np.ndarray, batch: int, seed: int, step: int) -> np.ndarray:
  """Row indices of batch `step`: a pure function of (seed, step), so resume replays exactly.

  Each epoch is a fresh permutation and batch i is its i-th slice: every batch is a random mix
  of transcript kinds. (Batches sorted by length, to save padding, held mostly one kind each,
  written redos in one batch and copies in the next, and learned far less per step: at 600
  steps the base model's forced redo was right 41.6% of the time instead of 74.2%;
  BUILD_NOTES.md, the testbed section.)
  """
  per_epoch = len(lengths) // batch
  epoch, i = divmod(step, per_epoch)
  perm = np.random.default_rng([seed, epoch]).permutation(len(lengths))
  return perm[i * batch : (i + 1) * batch]


def pack_rows(
  streams: dict[str, np.ndarray], rows: np.ndarray, row_multiple: int = ROW_QUANTUM
) -> dict[str, np.ndarray]:
  """The transcripts `rows` packed several to a row of the streams' width, with `segments`.

  First-fit decreasing: longest transcript first, each into the first row it fits. Every
  transcript keeps its own positions (0, 1, ...) and a segment id (1, 2, ... within its row; 0
  on padding) that confines its attention to itself, so the packed batch has the same loss and
  gradient as one transcript per row (tests/testbed/pretrain_test.py) in fewer slots: the
  testbed's copy transcripts (74 tokens) pair up in 160 slots. The row count is rounded up to
  `row_multiple` with empty rows.
  """
  width = streams["tokens"].shape[1]
  valid = streams["valid"][rows]
  lengths = valid.sum(axis=1)
  if not np.array_equal(valid, np.arange(width) < lengths[:, None]):
    raise ValueError("pack_rows: streams must be right-padded (real slots first, then padding)")
  free: list[int] = []  # free slots left in each packed row
  count: list[int] = []  # transcripts in each packed row
  placed = []  # (source row, packed row, first slot, length, segment id)
  for i in np.argsort(-lengths, kind="stable"):
    r = next((r for r, f in enumerate(free) if f >= lengths[i]), len(free))
    if r == len(free):
      free.append(width)
      count.append(0)
    count[r] += 1
    placed.append((rows[i], r, width - free[r], lengths[i], count[r]))
    free[r] -= lengths[i]
  n = -(-len(free) // row_multiple) * row_multiple
  out = {k: np.zeros((n, width), v.dtype) for k, v in streams.items()}
  out["segments"] = np.zeros((n, width), np.int32)
  for src, r, start, length, segment in placed:
    span = slice(start, start + length)
    for k, v in streams.items():
      out[k][r, span] = v[src, :length]
    out["positions"][r, span] = np.arange(length)
    out["segments"][r, span] = segment
  return out


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
  steps: int = 1500
  batch: int = 64
  lr: float = 3e-3
  warmup: int = 50
  seed: int = 0
  save_every: int = 250


def _schedule_config(pc: PretrainConfig) -> optim.OptimConfig:
  return optim.OptimConfig(
    learning_rate=pc.lr,
    warmup_steps=pc.warmup,
    decay="cosine",
    total_steps=pc.steps,
    end_lr_ratio=0.05,
    b2=0.98,
    weight_decay=0.01,
    max_grad_norm=1.0,
  )


def pretrain(
  model_cfg: ModelConfig,
  streams: dict[str, np.ndarray],
  pc: PretrainConfig,
  mesh,
  workdir: str,
  *,
  log_every: int = 50,
) -> tuple[dict, list[dict]]:
  """(final params, logged metrics) of SFT on `streams` ([n, t] arrays from
  corpus.encode_streams)."""
  n = streams["tokens"].shape[0]
  if n < pc.batch:
    raise ValueError(f"pretrain: {n} transcripts < one batch of {pc.batch}")
  oc = _schedule_config(pc)
  optimizer, schedule = optim.make_optimizer(oc), optim.make_schedule(oc)
  loss_cfg = steps.LossConfig(samples_per_prompt=1, baseline="none")
  sft = steps.Steps(model_cfg, loss_cfg, optimizer, mesh, schedule=schedule).update("sft")
  abstract = optim.abstract_train_state(model_cfg, optimizer, mesh)
  ckpt = checkpoint_lib.Checkpointer(
    os.path.join(workdir, "checkpoints"),
    keep=1,
    keep_best=0,
    save_interval_steps=pc.save_every,
    async_save=False,
  )
  restored = ckpt.restore_latest(abstract)
  if restored is None:
    params = model_sharding.init_params_sharded(model_cfg, jax.random.key(pc.seed), mesh)
    state = optim.init_train_state(model_cfg, optimizer, mesh, jax.random.key(pc.seed), params)
    start, history = 0, []
  else:
    state, meta = restored
    start, history = int(meta["step"]), list(meta["history"])
    logging.info("pretraining resumed from step %d", start)
  lengths = streams["valid"].sum(axis=1)
  shards = mesh_lib.batch_shards(mesh)
  progress = metric_writers.Progress(
    pc.steps, "pretrain", enabled=jax.process_index() == 0, start_step=start
  )
  try:
    for step in range(start, pc.steps):
      rows = batch_rows(lengths, pc.batch, pc.seed, step)
      packed = pack_rows(streams, rows, np.lcm(ROW_QUANTUM, shards))
      norm = np.float32(losses.aggregation_normalizers(packed["loss_mask"], "token_mean"))
      state, m = sft(state, Experience(**packed, normalizer=norm))
      done = step + 1
      if done % log_every == 0 or done == pc.steps:
        m = {k: float(v) for k, v in jax.device_get(m).items()}
        history.append({"step": done, "nll": m["nll_token_mean"], "lr": m.get("lr", 0.0)})
        progress.update(done, nll=m["nll_token_mean"])
      if done % pc.save_every == 0 or done == pc.steps:
        ckpt.save(done, state, {"step": done, "history": history}, force=True)
    ckpt.wait()
  finally:
    ckpt.close()
    progress.close()
  return state.params, history


def export_base(model_cfg: ModelConfig, params, tokenizer_model: str, out_dir: str) -> str:
  """Writes the base model as a HF checkpoint dir with its SentencePiece; returns the dir."""
  tmp = out_dir + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  hf_checkpoint.export_hf(model_cfg, params, tmp)
  shutil.copy(tokenizer_model, os.path.join(tmp, "tokenizer.model"))
  shutil.rmtree(out_dir, ignore_errors=True)
  os.replace(tmp, out_dir)  # the phase is done exactly when this directory exists
  return out_dir
