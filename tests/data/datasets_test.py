"""Tests for the dataset loaders: counts, splits, checksums, malformed rows, reasoning-gym
scores."""

import gzip
import json
import pathlib
import shutil

import pytest

from score_jax.data import humaneval_data, math_data, mbpp_data, procedural, records

_MATH_ROW = {
  "unique_id": "test/algebra/1.json",
  "problem": "What is $1+1$?",
  "solution": "It is $\\boxed{2}$.",
  "answer": "2",
  "subject": "Algebra",
  "level": 1,
}
_MBPP_ROW = {
  "text": "Write a function to add one.",
  "code": "def add_one(x):\r\n  return x + 1",
  "task_id": 11,
  "test_setup_code": "",
  "test_list": ["assert add_one(1) == 2", "assert add_one(2) == 3"],
  "challenge_test_list": [],
}


def _write_jsonl(path: pathlib.Path, lines: list[str]) -> pathlib.Path:
  path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
  return path


def test_math_counts_and_fields():
  train, test = math_data.load_math("train"), math_data.load_math("test")
  assert (len(train), len(test)) == (12_000, 500)
  assert not {ex.id for ex in train} & {ex.id for ex in test}
  first = test[0]
  assert first.id == "test/precalculus/807.json"
  assert first.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
  assert first.metadata["subject"] == "Precalculus" and first.metadata["level"] == 2
  assert sorted({ex.metadata["level"] for ex in test}) == [1, 2, 3, 4, 5]
  # The two "Level ?" problems of the original MATH release stay unlevelled, not guessed.
  assert sum(ex.metadata["level"] is None for ex in train) == 2


def test_mbpp_split_sizes_and_ranges():
  sizes = {s: len(mbpp_data.load_mbpp(s)) for s in mbpp_data.SPLIT_RANGES}
  assert sizes == {"prompt": 10, "test": 500, "validation": 90, "train": 374}
  everything = mbpp_data.load_mbpp("all")
  assert [ex.metadata["task_id"] for ex in everything] == list(range(1, 975))
  sanitized = {s: len(mbpp_data.load_mbpp(s, sanitized=True)) for s in mbpp_data.SPLIT_RANGES}
  assert sanitized == {"prompt": 7, "test": 257, "validation": 43, "train": 120}
  assert all(len(ex.tests) == 3 and ex.entry_point for ex in everything)
  task_11 = mbpp_data.load_mbpp("test")[0]
  assert task_11.id == "mbpp/11" and task_11.entry_point == "remove_Occ"


def test_mbpp_shots_are_tasks_2_to_4():
  shots = mbpp_data.load_mbpp_shots()
  names = [ex.entry_point for ex in shots]
  assert names == ["similar_elements", "is_not_prime", "heap_queue_largest"]


def test_humaneval_from_package():
  problems = humaneval_data.load_humaneval()
  assert len(problems) == 164
  first = problems[0]
  assert first.id == "HumanEval/0" and first.entry_point == "has_close_elements"
  assert first.tests[0].rstrip().endswith("check(has_close_elements)")
  # The canonical solution must really pass the test program we build (a real interpreter).
  scope: dict = {}
  exec(first.question + first.answer + "\n" + first.tests[0], scope)  # noqa: S102


def test_gzipped_package_copy_is_checksummed(tmp_path, monkeypatch):
  corrupt = tmp_path / "files"
  shutil.copytree(records.FILES_DIR, corrupt)
  rows = gzip.decompress((corrupt / "math_train12k.jsonl.gz").read_bytes()).replace(b"7", b"8", 1)
  (corrupt / "math_train12k.jsonl.gz").write_bytes(gzip.compress(rows))
  monkeypatch.setattr(records, "FILES_DIR", corrupt)
  with pytest.raises(
    records.DataFormatError, match=r"math_train12k\.jsonl\.gz: sha256 .* expected 0a3c5e"
  ):
    math_data.load_math("train")


def test_user_copy_overrides_package(tmp_path):
  path = _write_jsonl(tmp_path / "mine.jsonl", [json.dumps(_MATH_ROW)])
  (only,) = math_data.load_math("test", path=path)
  assert only.answer == "2" and only.metadata["split"] == "test"
  gz = tmp_path / "mine.jsonl.gz"
  gz.write_bytes(gzip.compress(path.read_bytes()))
  assert math_data.load_math("train", path=gz)[0].id == "test/algebra/1.json"


@pytest.mark.parametrize(
  "line, message",
  [
    ('{"unique_id": "a", "problem": ', r":2: invalid JSON"),
    ("[1, 2]", r":2: expected a JSON object, got list"),
    (
      json.dumps({k: v for k, v in _MATH_ROW.items() if k != "answer"}),
      r":2: missing key 'answer'",
    ),
    (json.dumps({**_MATH_ROW, "answer": "  "}), r":2: key 'answer' is empty"),
    (json.dumps({**_MATH_ROW, "level": "3"}), r":2: key 'level' must be int or null, got str"),
    (json.dumps({**_MATH_ROW, "level": True}), r":2: key 'level' must be int or null, got bool"),
    (json.dumps(_MATH_ROW), r":2: duplicate id 'test/algebra/1.json' \(first seen at .*:1\)"),
  ],
)
def test_malformed_math_row_names_file_and_line(tmp_path, line, message):
  path = _write_jsonl(tmp_path / "bad.jsonl", [json.dumps(_MATH_ROW), line])
  with pytest.raises(records.DataFormatError, match=r"bad\.jsonl" + message):
    math_data.load_math("test", path=path)


@pytest.mark.parametrize(
  "change, message",
  [
    ({"task_id": "11"}, r":1: key 'task_id' must be int, got str"),
    ({"task_id": 975}, r":1: MBPP task_id 975 is outside 1..974"),
    ({"test_list": []}, r":1: key 'test_list' is an empty list"),
    ({"test_list": ["assert True", 3]}, r":1: test_list\[1\] must be str, got int"),
    ({"code": ""}, r":1: key 'code' is empty"),
  ],
)
def test_malformed_mbpp_row_names_file_and_line(tmp_path, change, message):
  path = _write_jsonl(tmp_path / "bad.jsonl", [json.dumps({**_MBPP_ROW, **change})])
  with pytest.raises(records.DataFormatError, match=r"bad\.jsonl" + message):
    mbpp_data.load_mbpp("test", path=path)


def test_malformed_files(tmp_path):
  blank = _write_jsonl(tmp_path / "blank.jsonl", [json.dumps(_MATH_ROW), "", json.dumps(_MATH_ROW)])
  with pytest.raises(records.DataFormatError, match=r"blank\.jsonl:2: invalid JSON"):
    math_data.load_math("test", path=blank)
  sanitized = tmp_path / "sanitized.json"
  sanitized.write_text(json.dumps([{"task_id": 11, "prompt": "x"}]))
  with pytest.raises(
    records.DataFormatError, match=r"sanitized\.json: element 0: missing key 'code'"
  ):
    mbpp_data.load_mbpp("test", sanitized=True, path=sanitized)
  bad_gz = tmp_path / "x.jsonl.gz"
  bad_gz.write_bytes(b"not gzip")
  with pytest.raises(records.DataFormatError, match=r"x\.jsonl\.gz: not a valid gzip file"):
    math_data.load_math("test", path=bad_gz)
  latin = tmp_path / "latin.jsonl"
  latin.write_bytes(json.dumps(_MATH_ROW).encode() + b"\n" + b'{"a": "\xe9"}\n')
  with pytest.raises(records.DataFormatError, match=r"latin\.jsonl:2: not valid UTF-8"):
    math_data.load_math("test", path=latin)
  with pytest.raises(FileNotFoundError, match=r"nope\.jsonl: data file not found"):
    math_data.load_math("test", path=tmp_path / "nope.jsonl")
  with pytest.raises(ValueError, match=r"split must be one of \['test', 'train'\], got 'dev'"):
    math_data.load_math("dev")


@pytest.mark.parametrize(
  "task, wrong",
  [
    ("basic_arithmetic", lambda gold: gold + "0"),
    ("chain_sum", lambda gold: str(int(gold) + 1)),
    ("simple_equations", lambda gold: f"x = {gold}"),  # base scorer: partial credit -> 0
    ("polynomial_equations", lambda gold: gold.split(",")[0]),  # a missing root: partial -> 0
  ],
)
def test_procedural_scores_are_binary(task, wrong):
  examples = procedural.load_procedural(task, n=6, seed=3)
  assert examples == procedural.load_procedural(task, n=6, seed=3)  # deterministic in seed
  assert examples != procedural.load_procedural(task, n=6, seed=4)
  for ex in examples:
    assert procedural.score(task, ex.answer, ex) == 1.0
    assert procedural.score(task, f"  {ex.answer}\n", ex.metadata["entry"]) == 1.0
    assert procedural.score(task, None, ex) == 0.0
    if "," in ex.answer or task != "polynomial_equations":
      assert procedural.score(task, wrong(ex.answer), ex) == 0.0


def test_partial_credit_becomes_zero():
  from reasoning_gym.factory import get_score_answer_fn

  (ex,) = procedural.load_procedural("simple_equations", n=1, seed=0)
  raw = get_score_answer_fn("simple_equations")(f"x = {ex.answer}", ex.metadata["entry"])
  assert 0.0 < raw < 1.0  # reasoning-gym's own partial credit ...
  assert procedural.score("simple_equations", f"x = {ex.answer}", ex) == 0.0  # ... made binary


def test_procedural_bad_input():
  with pytest.raises(ValueError, match=r"unknown reasoning-gym task 'chainsum'"):
    procedural.load_procedural("chainsum", n=2, seed=0)
  (ex,) = procedural.load_procedural("chain_sum", n=1, seed=0)
  with pytest.raises(ValueError, match=r"entry comes from task 'chain_sum', but task 'products'"):
    procedural.score("products", ex.answer, ex)
  with pytest.raises(ValueError, match=r"is not a reasoning-gym entry"):
    procedural.score("chain_sum", "1", {"question": "q"})
