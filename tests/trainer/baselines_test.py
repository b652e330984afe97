"""The baselines and ablations end to end on a tiny model: STaR and Pair-SFT collect and train,
checkpoint selection ranks the final phase only, every method gets the same update budget."""

import dataclasses
import glob
import json
import os

import jax
import numpy as np
import pytest

from score_jax import configs, tasks
from score_jax.rewards import factory
from score_jax.rl import algorithms
from score_jax.trainer import checkpoint as checkpoint_lib
from score_jax.trainer import collect, loop, metric_writers, schedule
from tests.trainer import resume_test
from tests.trainer.train_test import _fast_config

COIN = "coin_math"


@pytest.fixture(scope="module", autouse=True)
def _coin_task():
  """MATH prompts with a reward a random model earns about half the time (odd-length answers),
  so the baselines keep some of their own samples; a real host-side check, not a mock."""
  spec = dataclasses.replace(
    tasks.get_spec("math"),
    name=COIN,
    reward_item=None,
    host_check=lambda ex, text: len(text) % 2 == 1,
  )
  tasks.register(spec)
  yield
  tasks.unregister(COIN)


def _config(method, **overrides):
  c = _fast_config(**{"rl.method": method, "data.task": COIN, "data.eval_task": COIN})
  c.eval.suite = ()  # the evaluation suite has its own tests
  for path, value in overrides.items():
    section, field = path.split(".")
    c[section][field] = value
  configs.validate(c, num_devices=8)
  return c


def _rows(workdir, phase, r):
  with np.load(os.path.join(workdir, "collected", f"phase{phase}_round{r}.p0.npz")) as z:
    rows = {k: z[k] for k in z.files}
  with open(os.path.join(workdir, "collected", f"phase{phase}_round{r}.p0.json")) as f:
    return rows, json.load(f)


@pytest.mark.parametrize("method", ["star", "star_plus"])
def test_star_collects_from_the_current_model_each_round_and_trains_on_corrections(
  tmp_path, method
):
  c = _config(method, **{"sft.star_iterations": 2})
  loop.run(c, str(tmp_path))
  recs = metric_writers.read_metrics(str(tmp_path))
  assert [r["stage"] for r in recs] == [method, method]  # SCoRe's budget: 1 + 1 updates
  for r in (0, 1):  # one data set per round, each sampled from the model of that round
    rows, stats = _rows(str(tmp_path), 0, r)
    g = c.train.global_batch
    assert stats["episodes"] == g  # one update's worth of samples per update
    want = stats["i2c"] + (stats["acc_t2"] - stats["i2c"] if method == "star_plus" else 0.0)
    assert stats["kept_global"] == round(want * g) == len(rows["tokens"])
    # Only the second attempt is a target.
    assert not (rows["loss_mask"] & (rows["turn"] != 2)).any()
    assert (rows["loss_mask"].sum(1) > 0).all()
  assert recs[-1]["scalars"]["collect/kept_global"] == stats["kept_global"]
  assert all(r["scalars"]["step/tokens"] > 0 for r in recs)


@pytest.mark.parametrize("method", ["pair_sft", "pair_sft_plus"])
def test_pair_sft_collects_once_from_the_base_model(tmp_path, method):
  c = _config(method)
  loop.run(c, str(tmp_path))
  assert [os.path.basename(p) for p in glob.glob(str(tmp_path / "collected" / "*.npz"))] == [
    "phase0_round0.p0.npz"
  ]
  rows, stats = _rows(str(tmp_path), 0, 0)
  assert stats["episodes"] == 2 * c.train.global_batch  # the whole budget's samples, once
  first_wrong = 1 - stats["acc_t1"]
  assert len(rows["tokens"]) > 0 and stats["kept_global"] == len(rows["tokens"])
  if method == "pair_sft":  # at most one pair per incorrect first attempt
    assert len(rows["tokens"]) <= round(first_wrong * stats["episodes"])
  else:  # every first attempt of a problem with a correct response
    assert len(rows["tokens"]) > round(first_wrong * stats["episodes"]) // 2
  assert not (rows["loss_mask"] & (rows["turn"] != 2)).any()


def test_star_resume_reuses_the_collected_round_and_ends_bitwise_equal(tmp_path):
  c = _config("star", **{"sft.star_iterations": 1, "stage1.steps": 2, "stage2.steps": 1})
  straight = tmp_path / "straight"
  loop.run(c, str(straight))
  resumed = tmp_path / "resumed"
  c1 = _config("star", **{"sft.star_iterations": 1, "stage1.steps": 2, "stage2.steps": 1})
  c1.checkpoint.every_steps = 1
  trainer = loop.Trainer(c1, str(resumed), None)
  trainer.total = 1  # stop after the first update, as a kill would
  with factory.reward_pool(c1, None) as pool:
    trainer.pool = pool
    trainer.train()
  mtime = os.path.getmtime(resumed / "collected" / "phase0_round0.p0.npz")
  loop.run(c1, str(resumed))
  assert os.path.getmtime(resumed / "collected" / "phase0_round0.p0.npz") == mtime
  a, b = resume_test.final_params(str(straight), 3), resume_test.final_params(str(resumed), 3)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_best_checkpoint_ranks_only_the_final_phase(tmp_path):
  c = _config("score", **{"stage1.steps": 2, "stage2.steps": 1})
  c.checkpoint.keep = 5
  loop.run(c, str(tmp_path))
  ckpt = checkpoint_lib.Checkpointer(str(tmp_path / "checkpoints"), async_save=False)
  try:
    assert ckpt.all_steps() == [1, 2, 3]
    assert [ckpt.metrics(s) is not None for s in (1, 2, 3)] == [False, False, True]
    assert ckpt.best_step() == 3
  finally:
    ckpt.close()


def test_every_trained_method_gets_the_same_update_budget():
  c = _config("score", **{"stage1.steps": 3, "stage2.steps": 5})
  for name, m in algorithms.METHODS.items():
    c.rl.method = name
    want = 0 if not m.phases else 8
    assert schedule.total_steps(c) == want, name
  c.rl.method = "star"
  assert collect.rounds(c, algorithms.get("star"), 8) == [(0, 3), (3, 2), (5, 3)]
  assert collect.rounds(c, algorithms.get("pair_sft"), 8) == [(0, 8)]
