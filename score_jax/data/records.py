"""The `Example` record every dataset loader returns, and checked reading of the data files.

Owns: `Example`, `DataFormatError`, the package copy of the benchmark files (`files/`) with the
sha256 of each file's uncompressed content, and the JSON Lines reader that names the file and
line of a malformed row. The per-dataset loaders (`math_data`, `mbpp_data`, `humaneval_data`,
`procedural`) build on these.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

FILES_DIR = pathlib.Path(__file__).resolve().parent / "files"

# sha256 of the UNCOMPRESSED bytes (listed in files/README.md), so a gzipped copy is verified
# against the same digest as the plain file it came from.
CHECKSUMS: dict[str, str] = {
  "math_train12k.jsonl.gz": "0a3c5ef95e675a3b26936faf1cad1f797d0b202e3c9457fab6603301c9e687fb",
  "math500_test.jsonl": "ccdf8777d8c1c6ad16dd1f5ff9e5f39282a5c9353399e7945f2aadb53916f2fe",
  "mbpp.jsonl": "ccf64ceae9c5403bf50a044cb6d505bfd2a2963ee58338ba268fd65beab92a9f",
  "sanitized-mbpp.json": "ca95deaa9a01ef0a6f439f88bcf0dd3db3563d22f22aad6cae04ebb9a8d8c8e9",
}


class DataFormatError(ValueError):
  """A data file is malformed; the message names the file and line (or element) at fault."""


@dataclasses.dataclass(frozen=True)
class Example:
  """One problem, whatever the task.

  Attributes:
    id: stable unique id (`test/algebra/1.json`, `mbpp/11`, `HumanEval/0`, `chain_sum/0/3`).
    question: the problem text shown to the model (MATH problem, MBPP task text, HumanEval
      signature + docstring, reasoning-gym question).
    answer: gold answer for math / procedural tasks; the reference program for code tasks.
    tests: code tasks: the programs (assert lines) that must all pass; empty otherwise.
    setup_code: code tasks: code to run before the tests (MBPP `test_setup_code`).
    entry_point: code tasks: name of the function under test ("" when unknown).
    metadata: everything else (subject, level, split, task ids, the raw reasoning-gym entry).
  """

  id: str
  question: str
  answer: str
  tests: tuple[str, ...] = ()
  setup_code: str = ""
  entry_point: str = ""
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)


def resolve(path: str | pathlib.Path | None, default_name: str) -> tuple[pathlib.Path, str | None]:
  """Returns (file, expected sha256): the package copy (checked) unless the user passes a path."""
  if path is None:
    return FILES_DIR / default_name, CHECKSUMS[default_name]
  # A user's own copy may legitimately differ from ours, so it is not checksummed.
  return pathlib.Path(path), None


def read_text(path: pathlib.Path, expected_sha256: str | None = None) -> str:
  """Reads a (possibly .gz) UTF-8 file, verifying the uncompressed content's sha256 if given."""
  if not path.is_file():
    raise FileNotFoundError(f"{path}: data file not found")
  raw = path.read_bytes()
  if path.suffix == ".gz":
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
      raise DataFormatError(f"{path}: not a valid gzip file ({e})") from e
  if expected_sha256 is not None:
    digest = hashlib.sha256(raw).hexdigest()
    if digest != expected_sha256:
      raise DataFormatError(
        f"{path}: sha256 of the content is {digest}, expected {expected_sha256}; the packaged "
        "copy is corrupt or was edited (reinstall score_jax or pass your own path)"
      )
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    line = raw[: e.start].count(b"\n") + 1
    raise DataFormatError(f"{path}:{line}: not valid UTF-8 ({e.reason})") from e


def iter_jsonl(
  path: pathlib.Path, expected_sha256: str | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
  """Yields (location "file:line", row) for each line of a JSON Lines file.

  Every line must hold one JSON object; only a final newline may end the file (a blank line in
  the middle is an error, since it usually means a truncated or hand-edited file).
  """
  lines = read_text(path, expected_sha256).split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  for number, line in enumerate(lines, start=1):
    where = f"{path}:{number}"
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataFormatError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from e
    if not isinstance(row, dict):
      raise DataFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    yield where, row


def get(row: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
  """Returns row[key], checking presence and type; `where` names the file and line in errors."""
  if key not in row:
    raise DataFormatError(f"{where}: missing key '{key}' (keys present: {sorted(row)})")
  value = row[key]
  kinds = kind if isinstance(kind, tuple) else (kind,)
  # bool is a subclass of int, but `true` is never a valid level or task id.
  if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
    names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
    raise DataFormatError(f"{where}: key '{key}' must be {names}, got {type(value).__name__}")
  return value


def get_text(row: Mapping[str, Any], key: str, where: str, allow_empty: bool = False) -> str:
  """Returns the string row[key]; empty (or whitespace-only) is an error unless allowed."""
  value = get(row, key, str, where)
  if not allow_empty and not value.strip():
    raise DataFormatError(f"{where}: key '{key}' is empty")
  return value


def get_str_list(row: Mapping[str, Any], key: str, where: str, allow_empty: bool) -> list[str]:
  """Returns the list of strings row[key] (e.g. MBPP asserts)."""
  value = get(row, key, list, where)
  for i, item in enumerate(value):
    if not isinstance(item, str):
      raise DataFormatError(f"{where}: {key}[{i}] must be str, got {type(item).__name__}")
  if not allow_empty and not value:
    raise DataFormatError(f"{where}: key '{key}' is an empty list")
  return value


def claim_id(seen: dict[str, str], example_id: str, where: str) -> None:
  """Records an id, raising if an earlier row had it (duplicates would bias training and eval)."""
  if example_id in seen:
    raise DataFormatError(
      f"{where}: duplicate id '{example_id}' (first seen at {seen[example_id]})"
    )
  seen[example_id] = where
