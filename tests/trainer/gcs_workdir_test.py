"""A `gs://` workdir against a fake GCS bucket (tests/fake_gcs.py): the real clients (gcsfs,
tensorboardX through score_jax's event-object writer, Orbax on tensorstore's GCS driver) talk HTTP
to it.

The fast test drives the metric writers and a checkpoint round trip in this process; the slow one
trains `score_math.py:tiny` with --workdir=gs://..., resumes it from the bucket, and checks that
the same run on a local path logs the same metrics.
"""

import json
import os
import subprocess
import sys
import time

import fsspec
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import storage
from score_jax.report import workdirs
from score_jax.trainer import checkpoint as checkpoint_lib
from score_jax.trainer import metric_writers
from tests import fake_gcs, helpers, numerics
from tests.trainer.metrics_test import _read_events

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = f"gs://{fake_gcs.BUCKET}/run"
FLAGS = (
  "--config=experiments/score_math.py:tiny",
  "--config.stage1.steps=1",
  "--config.stage2.steps=1",
  "--config.rollout.max_new_tokens=8",
  "--config.rollout.gen_buckets=(8,)",
  "--config.checkpoint.every_steps=1",
  "--config.log.episodes_every_steps=1",
  "--config.eval.num_examples=8",
  "--config.eval.batch_size=4",
)


@pytest.fixture
def bucket():
  with fake_gcs.serve() as env:
    yield env


def _download_events(prefix: str, directory) -> dict:
  """The TensorBoard scalars of the event objects under `prefix` (copied to `directory`)."""
  directory.mkdir()
  for name in storage.listdir(prefix):
    (directory / name).write_bytes(storage.read_bytes(os.path.join(prefix, name)))
  return _read_events(directory)


def test_writers_and_checkpoints_in_a_bucket(bucket, tmp_path):
  run = f"{RUN}-{tmp_path.name}"
  with metric_writers.MetricWriter(run, 0) as w:
    for step in (1, 2, 3):
      w.write(step, {"reward": step})
  with metric_writers.MetricWriter(run, 0, resume_step=2, tensorboard=False) as w:  # resume
    w.write(3, {"reward": 30})
  assert [r["scalars"]["reward"] for r in metric_writers.read_metrics(run)] == [1, 2, 30]
  events = _download_events(os.path.join(run, metric_writers.TENSORBOARD_DIR), tmp_path / "tb")
  assert events["reward"] == [(1, 1.0), (2, 2.0), (3, 3.0)]
  # Orbax gets the URL as given (os.path.abspath would make it 'gs:/bucket/...').
  tree = {"w": jnp.arange(8.0), "step": jnp.int32(3)}
  with checkpoint_lib.Checkpointer(os.path.join(run, "checkpoints"), async_save=False) as ck:
    assert str(ck.directory) == f"{run}/checkpoints"
    ck.save(3, tree, {"loop_step": 3}, force=True)
  with checkpoint_lib.Checkpointer(os.path.join(run, "checkpoints"), async_save=False) as ck:
    abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree
    )
    restored, meta = ck.restore(3, abstract)
  np.testing.assert_array_equal(restored["w"], tree["w"])
  assert meta["loop_step"] == 3
  assert storage.isfile(f"{run}/checkpoints/3/commit_success.txt")  # Orbax's GCS commit marker


def _main(workdir: str, *flags: str, cache_dir) -> subprocess.CompletedProcess:
  """`score_math.py:tiny` in a subprocess on 4 devices; the test's runs share a persistent
  compilation cache (the same programs: only the first run compiles them)."""
  env = dict(
    os.environ,
    XLA_FLAGS=numerics.subprocess_xla_flags(4),
    **helpers.compilation_cache_env(cache_dir),
  )
  start = time.time()
  cmd = [sys.executable, "-m", "score_jax.main", *FLAGS, *flags, f"--workdir={workdir}"]
  res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert res.returncode == 0, res.stderr[-3000:]
  print(f"{workdir} {' '.join(flags)}: {time.time() - start:.0f} s")
  return res


def _logged(records: list[dict]) -> list[dict]:
  """Each step's scalars but wall-clock ones, which differ between any two runs."""
  return [
    {k: v for k, v in r["scalars"].items() if not k.startswith("time/") and "_per_s" not in k}
    for r in records
  ]


@pytest.mark.slow
def test_train_in_a_bucket_resume_and_match_local(bucket, tmp_path):
  cache = tmp_path / "xla_cache"
  _main(RUN, cache_dir=cache)
  fs = fsspec.filesystem("gs")
  objects = {p.split("/", 2)[2] for p in fs.find(RUN)}  # 'bucket/run/x' -> 'x'
  for name in ("config.json", "metrics.jsonl", "episodes.jsonl", "eval/final.json",
               "tokenizer/spm.model", "checkpoints/2/commit_success.txt"):  # fmt: skip
    assert name in objects, sorted(objects)
  events = _download_events(f"{RUN}/tensorboard", tmp_path / "tb")
  assert [s for s, _ in events["step/loss"]] == [1, 2]
  first = metric_writers.read_metrics(RUN)
  final = json.loads(storage.read_text(f"{RUN}/eval/final.json"))
  runs, missing = workdirs.load_all([f"gs://{fake_gcs.BUCKET}"])  # the report finds the run
  assert [r.path for r in runs] == [RUN] and not missing
  # A longer schedule on the same workdir resumes from the bucket's step-2 checkpoint.
  res = _main(RUN, "--config.stage2.steps=2", cache_dir=cache)
  assert "resumed from step 2" in res.stdout
  resumed = metric_writers.read_metrics(RUN)
  assert [r["step"] for r in resumed] == [1, 2, 3] and resumed[:2] == first
  assert storage.isfile(f"{RUN}/checkpoints/3/commit_success.txt")
  # The same run on a local disk: the same numbers.
  local = tmp_path / "local"
  _main(str(local), cache_dir=cache)
  assert _logged(metric_writers.read_metrics(local)) == _logged(first)
  local_final = json.loads((local / "eval" / "final.json").read_text())
  assert local_final["metrics"] == final["metrics"]
