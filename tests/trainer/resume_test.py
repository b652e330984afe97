"""kill -9 at random moments, rerun the same command: the run resumes exactly.

The final params are bitwise identical to an uninterrupted run, no checkpoint is half-read, and
metrics.jsonl has every step exactly once.
"""

import importlib.util
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from score_jax.models import presets
from score_jax.parallel import mesh as mesh_lib
from score_jax.rl import optim
from score_jax.trainer import checkpoint as checkpoint_lib
from score_jax.trainer import metric_writers
from score_jax.trainer import setup as setup_lib
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 12  # 6 Stage I + 6 Stage II
FLAGS = (
  "--config=experiments/score_math.py:tiny",
  "--config.stage1.steps=6",
  "--config.stage2.steps=6",
  "--config.rollout.max_new_tokens=8",
  "--config.rollout.gen_buckets=(8,)",
  "--config.checkpoint.every_steps=1",
  "--config.checkpoint.async_save=True",
  "--config.eval.num_examples=8",
  "--config.log.episodes_every_steps=1",
)


def _cmd(workdir):
  return [sys.executable, "-m", "score_jax.main", *FLAGS, f"--workdir={workdir}"]


def _env(cache_dir):
  return helpers.one_device_cached_env(cache_dir)


def final_params(workdir, steps: int, experiment: str = "score_math"):
  """The params of `workdir`'s checkpoint `steps`, restored onto one device as NumPy."""
  spec = importlib.util.spec_from_file_location(
    experiment, os.path.join(REPO, "experiments", f"{experiment}.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("tiny")
  model_cfg = presets.get_preset(config.model.preset, vocab_size=config.model.vocab_size)
  mesh = mesh_lib.make_mesh((1, 1, 1))
  optimizer = optim.make_optimizer(setup_lib.optim_config(config))
  abstract = optim.abstract_train_state(model_cfg, optimizer, mesh)
  with checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints")) as ck:
    assert ck.latest_step() == steps
    state, meta = ck.restore(steps, abstract)
  assert meta["loop_step"] == steps
  return jax.tree.map(np.asarray, state.params)


def _last_logged_step(workdir) -> int:
  try:
    records = metric_writers.read_metrics(workdir)
  except (OSError, ValueError):  # not written yet, or a line caught mid-write
    return 0
  return records[-1]["step"] if records else 0


@pytest.mark.slow
def test_kill9_at_five_random_moments_resumes_bitwise(tmp_path):
  cache = tmp_path / "xla_cache"
  ref_dir, dut_dir = tmp_path / "uninterrupted", tmp_path / "killed"
  res = subprocess.run(
    _cmd(ref_dir), cwd=REPO, env=_env(cache), capture_output=True, text=True, timeout=900
  )
  assert res.returncode == 0, res.stderr[-3000:]
  # Same tokenizer for both runs (SentencePiece training is deterministic, but need not be).
  os.makedirs(dut_dir / "tokenizer")
  for name in os.listdir(ref_dir / "tokenizer"):
    (dut_dir / "tokenizer" / name).write_bytes((ref_dir / "tokenizer" / name).read_bytes())
  rng = random.Random(1234)
  # Kill 5 times: once the run has logged step 2, 4, 6, 8, 10, after a random 0-1.5 s more, i.e.
  # mid-sampling, mid-update, mid-save or (if the log is stale) during start-up.
  kills = 0
  for target in (2, 4, 6, 8, 10):
    proc = subprocess.Popen(
      _cmd(dut_dir), cwd=REPO, env=_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
      if _last_logged_step(dut_dir) >= target:
        break
      time.sleep(0.1)
    time.sleep(rng.uniform(0.0, 1.5))
    if proc.poll() is not None:
      break  # finished before the kill: nothing left to interrupt
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kills += 1
  res = subprocess.run(
    _cmd(dut_dir), cwd=REPO, env=_env(cache), capture_output=True, text=True, timeout=900
  )
  assert res.returncode == 0, res.stderr[-3000:]
  assert kills == 5, f"only {kills} kills landed before the run finished"
  steps = [r["step"] for r in metric_writers.read_metrics(dut_dir)]
  assert steps == list(range(1, STEPS + 1)), steps
  ref, dut = final_params(str(ref_dir), STEPS), final_params(str(dut_dir), STEPS)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ref), jax.tree.leaves(dut)):
    assert a.dtype == b.dtype and np.array_equal(a, b), jax.tree_util.keystr(path)
