"""A preemption notice (SIGTERM) that lands while a checkpoint is being written, then a relaunch.

What a preempted TPU VM or a requeued SLURM job does (launch/README.md): every process of the
run gets SIGTERM (the whole process group here, reward workers included, as systemd and SLURM
signal them), the run saves and exits 0; the same command on the same workdir then resumes from
the newest complete checkpoint and ends with params bitwise identical to an uninterrupted run.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from score_jax.trainer import metric_writers
from tests import helpers
from tests.trainer.resume_test import final_params

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 6  # 3 Stage I + 3 Stage II
FLAGS = (
  "--config=experiments/score_math.py:tiny",
  "--config.rollout.max_new_tokens=8",
  "--config.rollout.gen_buckets=(8,)",
  "--config.checkpoint.every_steps=1",
  "--config.checkpoint.keep=10",
)
TMP = ".orbax-checkpoint-tmp"  # orbax writes a step here and renames it once complete


def _cmd(workdir, async_save: bool):
  flags = [*FLAGS, f"--config.checkpoint.async_save={async_save}", f"--workdir={workdir}"]
  return [sys.executable, "-m", "score_jax.main", *flags]


def _env(cache_dir):
  return helpers.one_device_cached_env(cache_dir)


def _run(workdir, cache, async_save):
  res = subprocess.run(_cmd(workdir, async_save), cwd=REPO, env=_env(cache),
                       capture_output=True, text=True, timeout=900)  # fmt: skip
  assert res.returncode == 0, res.stderr[-3000:]
  return res


def _steps(workdir) -> list[int]:
  return [r["step"] for r in metric_writers.read_metrics(workdir)]


def _saving(ckpt_dir) -> str | None:
  """The step dir orbax is writing now (not the first: a complete one should exist already)."""
  try:
    names = os.listdir(ckpt_dir)
  except FileNotFoundError:
    return None
  return next((n for n in names if TMP in n and int(n.split(".")[0]) >= 2), None)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  root = tmp_path_factory.mktemp("preemption")
  cache, workdir = root / "xla_cache", root / "uninterrupted"
  _run(workdir, cache, async_save=True)
  return workdir, cache


@pytest.mark.slow
@pytest.mark.parametrize("async_save", [True, False])
def test_sigterm_during_a_save_then_relaunch_resumes_bitwise(tmp_path, uninterrupted, async_save):
  ref_dir, cache = uninterrupted
  workdir = tmp_path / "preempted"
  # Same tokenizer for both runs (SentencePiece training is deterministic, but need not be).
  shutil.copytree(ref_dir / "tokenizer", workdir / "tokenizer")
  ckpt_dir = workdir / "checkpoints"
  proc = subprocess.Popen(_cmd(workdir, async_save), cwd=REPO, env=_env(cache),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)  # fmt: skip
  deadline = time.monotonic() + 600
  while not (saving := _saving(ckpt_dir)):
    assert proc.poll() is None, f"the run ended before a second save: {proc.stderr.read()[-3000:]}"
    assert time.monotonic() < deadline
    time.sleep(0.001)
  os.killpg(proc.pid, signal.SIGTERM)
  # The save was still being written after the signal was sent: it landed mid-save.
  landed_mid_save = saving in os.listdir(ckpt_dir)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  assert landed_mid_save, f"{saving} finished before SIGTERM was sent; rerun"
  assert "will save a checkpoint and stop" in err
  # The interrupted save completed; nothing half-written is left, every logged step is saved.
  left = sorted(os.listdir(ckpt_dir))
  assert not [n for n in left if not n.isdigit()], left
  saved = sorted(int(n) for n in left)
  stopped = _steps(workdir)
  assert stopped == list(range(1, saved[-1] + 1)) and saved[-1] < STEPS, (stopped, saved)
  assert saved[-1] >= int(saving.split(".")[0])  # at or after the step being written
  print(f"async_save={async_save}: SIGTERM while writing {saving}; stopped with steps {saved}")
  # Relaunch: resumes from the newest complete checkpoint, redoes nothing, ends where the
  # uninterrupted run ended.
  res = _run(workdir, cache, async_save)
  assert f"resumed from step {saved[-1]}" in res.stdout + res.stderr
  assert _steps(workdir) == list(range(1, STEPS + 1))
  ref, got = final_params(str(ref_dir), STEPS), final_params(str(workdir), STEPS)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ref), jax.tree.leaves(got)):
    assert a.dtype == b.dtype and np.array_equal(a, b), jax.tree_util.keystr(path)
