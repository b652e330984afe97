"""MATH and MBPP as tensorflow-datasets builders, for TPU jobs that read from a GCS data_dir.

Owns `ScoreMath` ('score_math') and `ScoreMbpp` ('score_mbpp', configs 'full' and 'sanitized'),
`prepare` and `load_tfds`. Importing this module registers both builders. They generate from
the package copies (checksummed by the loaders), in ArrayRecord format, with shuffling disabled so
record i is the loader's example i. Prepare once, copy to GCS, then on every host:

  tfds.data_source("score_mbpp/full", split="train", data_dir="gs://bucket/tfds")

TensorFlow is not needed: with tensorflow-datasets 4.9.10, `download_and_prepare(
file_format='array_record')` and `tfds.data_source` run with numpy, array_record and etils only
(checked in tests/data/tfds_test.py, which asserts that tensorflow was never imported).
"""

from __future__ import annotations

import importlib.util
import pathlib
from collections.abc import Iterator
from typing import Any

import numpy as np

try:
  import tensorflow_datasets as tfds
except ImportError as e:  # pragma: no cover - depends on the installed extras
  raise ImportError(
    "score_jax.data.tfds_builders needs tensorflow-datasets: pip install 'score_jax[tfds]'"
  ) from e

if importlib.util.find_spec("importlib_resources") is None:  # pragma: no cover
  # TFDS 4.9.10 imports it when preparing a builder defined in a package, but declares it only
  # for Python < 3.9 (tensorflow/datasets#11212): fail here with the fix, not deep inside TFDS.
  raise ImportError(
    "score_jax.data.tfds_builders needs importlib-resources (a missing TFDS dependency): "
    "pip install importlib-resources==7.1.0"
  )

from score_jax.data import math_data, mbpp_data, records

FILE_FORMAT = "array_record"
_NO_LEVEL = -1  # MATH's two "Level ?" problems; TFDS integer features cannot be null.


def _dataset_info(
  builder: tfds.core.DatasetBuilder, features: dict[str, Any], homepage: str
) -> tfds.core.DatasetInfo:
  """Both builders' info: shuffling disabled, so record i is the loader's example i."""
  return tfds.core.DatasetInfo(
    builder=builder,
    description=__doc__,
    features=tfds.features.FeaturesDict(features),
    disable_shuffling=True,
    homepage=homepage,
  )


class ScoreMath(tfds.core.GeneratorBasedBuilder):
  """MATH, Lightman et al. split: train 12,000 / test 500 (MATH500)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "score_jax package copy of MATH (Lightman split)."}

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text()
    features = {
      "unique_id": text,
      "problem": text,
      "solution": text,
      "answer": text,
      "subject": text,
      "level": np.int32,
    }
    return _dataset_info(self, features, homepage="https://github.com/hendrycks/math")

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
    del dl_manager  # The data ships with score_jax.
    return {split: self._generate_examples(split) for split in math_data.SPLIT_FILES}

  def _generate_examples(self, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for ex in math_data.load_math(split):
      level = ex.metadata["level"]
      yield (
        ex.id,
        {
          "unique_id": ex.id,
          "problem": ex.question,
          "solution": ex.metadata["solution"],
          "answer": ex.answer,
          "subject": ex.metadata["subject"],
          "level": _NO_LEVEL if level is None else level,
        },
      )


class ScoreMbpp(tfds.core.GeneratorBasedBuilder):
  """MBPP with the standard task-id splits prompt / test / validation / train."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "score_jax package copy of MBPP (full and sanitized)."}
  BUILDER_CONFIGS = [
    tfds.core.BuilderConfig(name="full", description="All 974 problems."),
    tfds.core.BuilderConfig(name="sanitized", description="The 427 hand-verified problems."),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text()
    features = {
      "task_id": np.int32,
      "text": text,
      "code": text,
      "test_setup_code": text,
      "test_list": tfds.features.Sequence(text),
      "challenge_test_list": tfds.features.Sequence(text),
      "source_file": text,  # sanitized config only
    }
    homepage = "https://github.com/google-research/google-research/tree/master/mbpp"
    return _dataset_info(self, features, homepage)

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
    del dl_manager
    return {split: self._generate_examples(split) for split in mbpp_data.SPLIT_RANGES}

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for ex in mbpp_data.load_mbpp(split, sanitized=self.builder_config.name == "sanitized"):
      yield (
        ex.metadata["task_id"],
        {
          "task_id": ex.metadata["task_id"],
          "text": ex.question,
          "code": ex.answer,
          "test_setup_code": ex.setup_code,
          "test_list": list(ex.tests),
          "challenge_test_list": list(ex.metadata.get("challenge_test_list", ())),
          "source_file": ex.metadata.get("source_file", ""),
        },
      )


def prepare(name: str, data_dir: str | pathlib.Path) -> tfds.core.DatasetBuilder:
  """Prepares 'score_math' or 'score_mbpp/<config>' in ArrayRecord format under data_dir."""
  builder = tfds.builder(name, data_dir=str(data_dir), file_format=FILE_FORMAT)
  builder.download_and_prepare()
  return builder


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_tfds(name: str, split: str, data_dir: str | pathlib.Path) -> list[records.Example]:
  """Reads a prepared split back through `tfds.data_source` as `Example`s (same as our loaders).

  Args:
    name: 'score_math', 'score_mbpp/full' or 'score_mbpp/sanitized'.
    split: a split of that dataset.
    data_dir: where `prepare` wrote it (a local path or gs:// URL).
  """
  if name not in ("score_math", "score_mbpp/full", "score_mbpp/sanitized"):
    raise ValueError(f"load_tfds: unknown dataset {name!r}; use score_math or score_mbpp/<config>")
  source = tfds.data_source(name, split=split, data_dir=str(data_dir))
  rows = [source[i] for i in range(len(source))]
  if name == "score_math":
    return [
      records.Example(
        id=_text(r["unique_id"]),
        question=_text(r["problem"]),
        answer=_text(r["answer"]),
        metadata={
          "subject": _text(r["subject"]),
          "level": None if int(r["level"]) == _NO_LEVEL else int(r["level"]),
          "solution": _text(r["solution"]),
          "split": split,
        },
      )
      for r in rows
    ]
  # Rebuilt through the loader's own row parser so both paths give identical Examples.
  sanitized = name.endswith("/sanitized")
  examples = []
  for i, r in enumerate(rows):
    row = {
      "task_id": int(r["task_id"]),
      "code": _text(r["code"]),
      "test_list": [_text(t) for t in r["test_list"]],
    }
    if sanitized:
      row |= {
        "prompt": _text(r["text"]),
        "source_file": _text(r["source_file"]),
        "test_imports": [s for s in _text(r["test_setup_code"]).split("\n") if s],
      }
    else:
      row |= {
        "text": _text(r["text"]),
        "test_setup_code": _text(r["test_setup_code"]),
        "challenge_test_list": [_text(t) for t in r["challenge_test_list"]],
      }
    examples.append(mbpp_data.example_from_row(row, f"{name}[{split}][{i}]", sanitized))
  return examples
