"""Testbed pretraining: mixed batches, exact resume, HF export loadable by generate."""

import os
import shutil

import jax
import numpy as np
import pytest

from score_jax import generate
from score_jax import sharding as sharding_lib
from score_jax.data import chat, prompts
from score_jax.data import tokenizer as tokenizer_lib
from score_jax.models import presets
from score_jax.testbed import arith, corpus, pretrain


def test_batch_rows_cover_each_epoch_once_and_mix_transcript_kinds():
  # Two kinds of transcript, as in the corpus: short (copies, single attempts), long (redos).
  lengths = np.where(np.random.default_rng(0).random(256) < 0.5, 40, 150)
  seen = np.concatenate([pretrain.batch_rows(lengths, 16, 3, step) for step in range(16)])
  assert sorted(seen.tolist()) == list(range(256))
  again = pretrain.batch_rows(lengths, 16, 3, 5)
  assert np.array_equal(again, pretrain.batch_rows(lengths, 16, 3, 5))
  # Every batch mixes both kinds (length-sorted batches held one kind each and learned less).
  for step in range(16):
    long_share = (lengths[pretrain.batch_rows(lengths, 16, 3, step)] == 150).mean()
    assert 0.1 < long_share < 0.9, (step, long_share)
  assert not np.array_equal(
    pretrain.batch_rows(lengths, 16, 3, 16), pretrain.batch_rows(lengths, 16, 3, 0)
  )


def _streams(tmp_path):
  examples = arith.load_split("train", 96)
  template = chat.get_template("gemma")
  instruction = prompts.correction_instruction("math_short")
  spm = tokenizer_lib.train_sentencepiece(
    corpus.tokenizer_texts(examples, template, instruction), str(tmp_path / "spm"), 400,
    split_by_whitespace=False,
  )  # fmt: skip
  tok = tokenizer_lib.load_tokenizer(spm)
  ids = template.next_turn_ids(tok, instruction)
  return spm, corpus.encode_streams(examples, tok, template, ids, corpus.Mixture(), 0, 256)


@pytest.mark.slow
def test_killed_pretraining_resumes_to_identical_params_and_exports(tmp_path):
  spm, streams = _streams(tmp_path)
  cfg = presets.get_preset("tiny-gemma", vocab_size=400)
  mesh = sharding_lib.make_mesh((1, 2, 1), devices=jax.devices()[:2])
  pc = pretrain.PretrainConfig(steps=4, batch=8, lr=1e-2, warmup=1, save_every=2)
  full, history = pretrain.pretrain(cfg, streams, pc, mesh, str(tmp_path / "a"), log_every=1)
  assert [h["step"] for h in history] == [1, 2, 3, 4]
  assert history[-1]["nll"] < history[0]["nll"]
  # A run killed after its step-2 save: only that checkpoint is left; rerunning resumes from it.
  pretrain.pretrain(cfg, streams, pc, mesh, str(tmp_path / "b"), log_every=1)
  shutil.rmtree(tmp_path / "b" / "checkpoints" / "4")
  resumed, history_b = pretrain.pretrain(cfg, streams, pc, mesh, str(tmp_path / "b"), log_every=1)
  for x, y in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert history_b == history
  out = pretrain.export_base(cfg, full, spm, str(tmp_path / "base"))
  assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "tokenizer.model"]
  loaded_cfg, params, tok = generate.load_model(out)
  assert loaded_cfg.vocab_size == 400 and tok.vocab_size <= 400
  for x, y in zip(jax.tree.leaves(full), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
