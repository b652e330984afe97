"""TFDS builders: prepare MATH and MBPP in a tmp data_dir, read back, compare with our loaders.

Runs without TensorFlow (tensorflow-datasets 4.9.10 writes and reads ArrayRecord with numpy only).
Skipped, with the reason, where the optional 'tfds' extra is not installed.
"""

import importlib.util
import sys

import pytest

for _module, _why in [
  ("tensorflow_datasets", "the optional extra: pip install 'score_jax[tfds]'"),
  ("array_record", "tfds.data_source reads ArrayRecord files"),
  # TFDS 4.9.10 imports it unconditionally but only declares it for Python < 3.9
  # (tensorflow/datasets#11212).
  ("importlib_resources", "TFDS 4.9.10 needs it to prepare a builder defined in a package"),
]:
  if importlib.util.find_spec(_module) is None:
    pytest.skip(f"{_module} is not installed: {_why}", allow_module_level=True)

from score_jax.data import math_data, mbpp_data, tfds_builders  # noqa: E402


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tfds")
  for name in ("score_mbpp/full", "score_mbpp/sanitized", "score_math"):
    tfds_builders.prepare(name, path)
  return path


@pytest.mark.parametrize("sanitized", [False, True])
def test_mbpp_round_trip(data_dir, sanitized):
  name = "score_mbpp/sanitized" if sanitized else "score_mbpp/full"
  for split in mbpp_data.SPLIT_RANGES:
    assert tfds_builders.load_tfds(name, split, data_dir) == mbpp_data.load_mbpp(split, sanitized)


def test_math_round_trip(data_dir):
  import tensorflow_datasets as tfds

  assert tfds_builders.load_tfds("score_math", "test", data_dir) == math_data.load_math("test")
  train = math_data.load_math("train")
  source = tfds.data_source("score_math", split="train", data_dir=str(data_dir))
  assert len(source) == 12_000
  # Record i is example i (shuffling disabled); spot-check, including an unlevelled problem.
  unlevelled = next(i for i, ex in enumerate(train) if ex.metadata["level"] is None)
  for i in (0, 1, 5_000, unlevelled, 11_999):
    row = source[i]
    assert row["unique_id"].decode() == train[i].id
    assert row["problem"].decode() == train[i].question
    assert row["answer"].decode() == train[i].answer
  assert source[unlevelled]["level"] == -1


@pytest.mark.slow
def test_math_train_full_round_trip(data_dir):
  assert tfds_builders.load_tfds("score_math", "train", data_dir) == math_data.load_math("train")


def test_no_tensorflow_needed(data_dir):
  del data_dir  # prepared and read above
  assert "tensorflow" not in sys.modules


def test_unknown_dataset(data_dir):
  with pytest.raises(ValueError, match=r"unknown dataset 'score_gsm8k'"):
    tfds_builders.load_tfds("score_gsm8k", "train", data_dir)
