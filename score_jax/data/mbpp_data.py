"""MBPP (Austin et al., 2021): the full 974 problems and the hand-verified 'sanitized' 427.

Owns `load_mbpp` and the standard task-id splits (as released with MBPP): 1-10 few-shot
prompts, 11-510 test, 511-600 validation, 601-974 train. SCoRe trains on MBPP train and reports
MBPP-R on test with the canonical 3-shot prompt built from tasks 2, 3 and 4 (`load_mbpp_shots`).
"""

from __future__ import annotations

import json
import pathlib
import re

from score_jax.data import records

SPLIT_RANGES = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
FEW_SHOT_TASK_IDS = (2, 3, 4)
FULL_FILE = "mbpp.jsonl"
SANITIZED_FILE = "sanitized-mbpp.json"

_DEF_RE = re.compile(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)


def split_of(task_id: int) -> str:
  """The standard split a task id belongs to."""
  for split, (lo, hi) in SPLIT_RANGES.items():
    if lo <= task_id <= hi:
      return split
  raise ValueError(f"MBPP task_id {task_id} is outside 1..974")


def _entry_point(code: str, tests: list[str]) -> str:
  """The function the tests call: the first one the reference code defines that a test names."""
  for name in _DEF_RE.findall(code):
    if any(re.search(rf"\b{name}\s*\(", t) for t in tests):
      return name
  return ""


def example_from_row(row: dict, where: str, sanitized: bool) -> records.Example:
  """Validates one MBPP row (full or sanitized keys) and builds its Example; `where` locates it."""
  task_id = records.get(row, "task_id", int, where)
  try:
    split = split_of(task_id)
  except ValueError as e:
    raise records.DataFormatError(f"{where}: {e}") from None
  code = records.get_text(row, "code", where)
  tests = records.get_str_list(row, "test_list", where, allow_empty=False)
  if sanitized:
    text = records.get_text(row, "prompt", where)
    setup = "\n".join(records.get_str_list(row, "test_imports", where, allow_empty=True))
    extra = {"source_file": records.get_text(row, "source_file", where, allow_empty=True)}
  else:
    text = records.get_text(row, "text", where)
    setup = records.get_text(row, "test_setup_code", where, allow_empty=True)
    challenge = records.get_str_list(row, "challenge_test_list", where, allow_empty=True)
    extra = {"challenge_test_list": tuple(challenge)}
  return records.Example(
    id=f"mbpp/{task_id}",
    question=text,
    answer=code,
    tests=tuple(tests),
    setup_code=setup,
    entry_point=_entry_point(code, tests),
    metadata={"task_id": task_id, "split": split, "sanitized": sanitized, **extra},
  )


def _rows(file: pathlib.Path, sha: str | None, sanitized: bool):
  """Yields (location, row); the sanitized file is one JSON array, located by element index."""
  if not sanitized:
    yield from records.iter_jsonl(file, sha)
    return
  text = records.read_text(file, sha)
  try:
    rows = json.loads(text)
  except json.JSONDecodeError as e:
    raise records.DataFormatError(f"{file}:{e.lineno}: invalid JSON ({e.msg})") from e
  if not isinstance(rows, list):
    raise records.DataFormatError(f"{file}: expected a JSON array of problems")
  for i, row in enumerate(rows):
    where = f"{file}: element {i}"
    if not isinstance(row, dict):
      raise records.DataFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    yield where, row


def load_mbpp(
  split: str = "test", sanitized: bool = False, path: str | pathlib.Path | None = None
) -> list[records.Example]:
  """Loads one MBPP split, ordered by task id.

  Args:
    split: 'prompt' (1-10), 'test' (11-510), 'validation' (511-600), 'train' (601-974) or 'all'.
    sanitized: load the hand-verified subset (427 problems, `test_imports` as setup code).
    path: a user's own copy in the same format, instead of the checked package copy.

  Returns:
    Examples: id 'mbpp/<task_id>', question = task text, answer = reference code (raw, with the
    original CRLF line ends), tests = the 3 asserts, setup_code, entry_point, metadata
    {task_id, split, sanitized, challenge_test_list | source_file}.
  """
  if split != "all" and split not in SPLIT_RANGES:
    raise ValueError(
      f"load_mbpp: split must be 'all' or one of {list(SPLIT_RANGES)}, got {split!r}"
    )
  file, sha = records.resolve(path, SANITIZED_FILE if sanitized else FULL_FILE)
  examples, seen = [], {}
  for where, row in _rows(file, sha, sanitized):
    example = example_from_row(row, where, sanitized)
    records.claim_id(seen, example.id, where)
    if split in ("all", example.metadata["split"]):
      examples.append(example)
  return sorted(examples, key=lambda ex: ex.metadata["task_id"])


def load_mbpp_shots(path: str | pathlib.Path | None = None) -> list[records.Example]:
  """The canonical 3-shot examples: tasks 2, 3, 4 of the full file (Austin et al., 2021)."""
  by_id = {ex.metadata["task_id"]: ex for ex in load_mbpp("prompt", path=path)}
  missing = [i for i in FEW_SHOT_TASK_IDS if i not in by_id]
  if missing:
    raise ValueError(f"MBPP file {path or FULL_FILE} lacks the few-shot task ids {missing}")
  return [by_id[i] for i in FEW_SHOT_TASK_IDS]
