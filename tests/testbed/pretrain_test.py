"""Testbed pretraining: mixed batches, exact resume, HF export loadable by generate."""

import os
import shutil

import jax
import numpy as np
import pytest

from score_jax import generate
from score_jax.data import chat, prompts
from score_jax.data import tokenizer as tokenizer_lib
from score_jax.models import decoder, presets
from score_jax.models import sharding as model_sharding
from score_jax.parallel import mesh as mesh_lib
from score_jax.rl import losses, optim, steps
from score_jax.rl.experience import Experience
from score_jax.rl.scoring import stream_scores
from score_jax.testbed import arith, corpus, pretrain
from tests import numerics


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


def test_pack_rows_keeps_every_transcript_whole_with_its_own_positions(tmp_path):
  _, streams = _streams(tmp_path)
  rows = np.arange(5, 37)
  packed = pretrain.pack_rows(streams, rows, row_multiple=4)
  n, width = packed["tokens"].shape
  assert n % 4 == 0 and width == streams["tokens"].shape[1]
  assert n < len(rows)  # short transcripts share rows
  found = []
  for r in range(n):
    for segment in np.unique(packed["segments"][r][packed["valid"][r]]):
      span = np.flatnonzero(packed["segments"][r] == segment)
      assert np.array_equal(span, np.arange(span[0], span[-1] + 1))  # contiguous
      assert np.array_equal(packed["positions"][r, span], np.arange(len(span)))
      found.append((tuple(packed["tokens"][r, span]), tuple(packed["loss_mask"][r, span])))
  want = []
  for i in rows:
    length = int(streams["valid"][i].sum())
    want.append((tuple(streams["tokens"][i, :length]), tuple(streams["loss_mask"][i, :length])))
  assert sorted(found) == sorted(want)
  assert not packed["valid"][packed["segments"] == 0].any()
  left_padded = {k: v[:, ::-1] for k, v in streams.items()}
  with pytest.raises(ValueError, match="right-padded"):
    pretrain.pack_rows(left_padded, rows)


@pytest.mark.numerics
def test_packed_sft_step_matches_one_transcript_per_row(tmp_path):
  """Segments confine attention and scoring: same loss and update as the unpacked batch."""
  _, streams = _streams(tmp_path)
  cfg = presets.get_preset("tiny-gemma", vocab_size=400)
  mesh = mesh_lib.make_mesh((1, 2, 1), devices=jax.devices()[:2])
  oc = optim.OptimConfig(learning_rate=1e-2, warmup_steps=0)
  optimizer = optim.make_optimizer(oc)
  loss_cfg = steps.LossConfig(samples_per_prompt=1, baseline="none")
  sft = steps.Steps(cfg, loss_cfg, optimizer, mesh, schedule=optim.make_schedule(oc)).update("sft")
  rows = np.arange(16)
  plain = {k: v[rows] for k, v in streams.items()}
  packed = pretrain.pack_rows(streams, rows, row_multiple=2)
  assert packed["tokens"].size < plain["tokens"].size
  out = []
  for batch in (plain, packed):
    norm = np.float32(losses.aggregation_normalizers(batch["loss_mask"], "token_mean"))
    params = model_sharding.init_params_sharded(cfg, jax.random.key(0), mesh)
    state = optim.init_train_state(cfg, optimizer, mesh, jax.random.key(0), params)
    before = jax.device_get(state)
    out.append(jax.device_get(sft(state, Experience(**batch, normalizer=norm))))
  (state_a, m_a), (state_b, m_b) = out
  assert m_a["tokens"] == m_b["tokens"]  # a count: exact
  width, tokens = plain["tokens"].shape[1], int(m_a["tokens"])
  scale = max(_logit_scale(cfg, before.params, plain), _logit_scale(cfg, before.params, packed))
  logp_err = numerics.logprob_bound(numerics.logit_bound(cfg, width, scale), scale, cfg.vocab_size)
  # A mean of per-token NLLs, each within logp_err, plus the token sum's rounding.
  nll = float(m_a["nll_token_mean"])
  bound = logp_err + numerics.gamma(tokens) * nll
  numerics.assert_close(float(m_b["nll_token_mean"]), nll, bound, what="packed nll")
  # Attention leaking across segments would move gradients far past grad_rel (see
  # numerics.assert_adam_step_close for how Adam's first step amplifies near-zero gradients).
  grad_rel = numerics.relative_bound(numerics.gradient_levels(cfg, width, tokens))
  numerics.assert_adam_step_close(
    state_b, before, state_a, lr=oc.learning_rate, grad_rel=grad_rel, cfg=oc, what="packed step"
  )
  # Every target token gets the same log-prob in both layouts (sorting keeps the bound).
  params = model_sharding.init_params_sharded(cfg, jax.random.key(1), mesh)
  logp_plain = np.asarray(stream_scores(cfg, params, Experience(**plain), 1.0)[0])
  logp_packed = np.asarray(stream_scores(cfg, params, Experience(**packed), 1.0)[0])
  scale = max(_logit_scale(cfg, params, plain), _logit_scale(cfg, params, packed))
  logp_err = numerics.logprob_bound(numerics.logit_bound(cfg, width, scale), scale, cfg.vocab_size)
  numerics.assert_close(
    np.sort(logp_packed[packed["loss_mask"]]), np.sort(logp_plain[plain["loss_mask"]]), logp_err,
    what="packed vs plain log-probs",
  )  # fmt: skip


def _logit_scale(cfg, params, batch) -> float:
  """Largest |logit| on the batch's real tokens (the magnitude the logit bound scales with)."""
  seg = batch.get("segments")
  logits, _ = jax.jit(decoder.forward, static_argnums=0)(
    cfg, params, batch["tokens"], batch["positions"], batch["valid"], None, seg
  )
  return float(np.abs(np.asarray(logits)[batch["valid"]]).max())


@pytest.mark.slow
def test_killed_pretraining_resumes_to_identical_params_and_exports(tmp_path):
  spm, streams = _streams(tmp_path)
  cfg = presets.get_preset("tiny-gemma", vocab_size=400)
  mesh = mesh_lib.make_mesh((1, 2, 1), devices=jax.devices()[:2])
  pc = pretrain.PretrainConfig(steps=4, batch=8, lr=1e-2, warmup=1, save_every=2)
  full, history = pretrain.pretrain(cfg, streams, pc, mesh, str(tmp_path / "a"), log_every=1)
  assert [h["step"] for h in history] == [1, 2, 3, 4]
  assert history[-1]["nll"] < history[0]["nll"]
  # A run killed after its step-2 save: only that checkpoint is left; rerunning resumes from it.
  pretrain.pretrain(cfg, streams, pc, mesh, str(tmp_path / "b"), log_every=1)
  shutil.rmtree(tmp_path / "b" / "checkpoints" / "4")
  resumed, history_b = pretrain.pretrain(cfg, streams, pc, mesh, str(tmp_path / "b"), log_every=1)
  # Exact: the resumed run replays the same compiled steps on the same restored state.
  for x, y in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert history_b == history
  out = pretrain.export_base(cfg, full, spm, str(tmp_path / "base"))
  assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "tokenizer.model"]
  loaded_cfg, params, tok = generate.load_model(out)
  assert loaded_cfg.vocab_size == 400 and tok.vocab_size <= 400
  for x, y in zip(jax.tree.leaves(full), jax.tree.leaves(params)):  # float32 round trip: exact
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
