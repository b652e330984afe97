"""score_jax.storage on a local directory and on a fake GCS bucket (tests/fake_gcs.py): the same
calls, the same answers."""

import io
import os
import uuid

import numpy as np
import pytest

from score_jax import storage
from tests import fake_gcs


@pytest.fixture(scope="module")
def bucket_env():
  with fake_gcs.serve() as env:
    yield env


@pytest.fixture(params=["local", "gs"])
def root(request, tmp_path):
  if request.param == "local":
    return str(tmp_path / "run")
  request.getfixturevalue("bucket_env")
  return f"gs://{fake_gcs.BUCKET}/{uuid.uuid4().hex}/run"


def test_paths():
  assert storage.is_remote("gs://b/x") and not storage.is_remote("/tmp/x")
  assert storage.absolute("gs://b/run") == "gs://b/run"  # os.path.abspath would give 'gs:/b/run'
  assert storage.absolute("run") == os.path.join(os.getcwd(), "run")
  assert storage.realpath("gs://b/run/") == "gs://b/run"
  assert os.path.join("gs://b/run", "eval", "final.json") == "gs://b/run/eval/final.json"


def test_write_read_list(root):
  assert not storage.exists(root) and not storage.isdir(root)
  storage.makedirs(root)
  path = os.path.join(root, "eval", "final.json")
  storage.write_atomic(path, '{"step": 3}')  # parents made as needed
  storage.write_atomic(os.path.join(root, "config.json"), b"{}")
  assert storage.read_text(path) == '{"step": 3}'
  assert storage.isfile(path) and not storage.isdir(path)
  assert storage.isdir(os.path.join(root, "eval")) and not storage.isfile(
    os.path.join(root, "eval")
  )
  assert storage.listdir(root) == ["config.json", "eval"]  # no temp file left behind
  storage.write_atomic(path, "replaced")
  assert storage.read_bytes(path) == b"replaced"
  with storage.open_file(path) as f:
    assert f.read() == "replaced"
  storage.remove(path)
  assert not storage.exists(path)
  with pytest.raises(FileNotFoundError):
    storage.read_text(path)
  with pytest.raises(ValueError, match="Appender"):
    storage.open_file(path, "a")


def test_npz_round_trip(root):
  path = os.path.join(root, "collected", "round.npz")
  arrays = {"tokens": np.arange(6, dtype=np.int32).reshape(2, 3)}
  storage.write_atomic(path, storage.buffer_of(lambda f: np.savez(f, **arrays)))
  with np.load(io.BytesIO(storage.read_bytes(path))) as z:
    np.testing.assert_array_equal(z["tokens"], arrays["tokens"])


def test_appender(root):
  storage.makedirs(root)
  path = os.path.join(root, "metrics.jsonl")
  storage.write_atomic(path, "a\n")  # an earlier run's records are kept
  app = storage.Appender(path, flush_every_s=3600)
  app.append(b"b\n")
  if storage.is_remote(path):  # batched: nothing uploaded before a flush is due or asked for
    assert not app.flush_due() and storage.read_text(path) == "a\n"
    app.flush()
  assert storage.read_text(path) == "a\nb\n"
  app.append(b"c\n")
  app.close()
  assert storage.read_text(path) == "a\nb\nc\n"
