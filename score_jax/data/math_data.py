"""MATH (Hendrycks et al., 2021) in the split of Lightman et al. (2023), as SCoRe uses it.

Owns `load_math`: 'train' is the 12,000 problems outside MATH500 (gzipped in the package),
'test' is MATH500 (500). Rows carry `unique_id, problem, solution, answer, subject, level`
(files/README.md); the gold `answer` is never empty.
"""

from __future__ import annotations

import pathlib

from score_jax.data import records

SPLIT_FILES = {"train": "math_train12k.jsonl.gz", "test": "math500_test.jsonl"}
SPLIT_SIZES = {"train": 12_000, "test": 500}


def load_math(
  split: str = "train", path: str | pathlib.Path | None = None
) -> list[records.Example]:
  """Loads a MATH split.

  Args:
    split: 'train' (12k) or 'test' (MATH500).
    path: a JSON Lines file (optionally .gz) with the same keys, instead of the package copy.
      The package copy is checked against its sha256; a user's own copy is not.

  Returns:
    Examples in file order: id = `unique_id`, question = problem, answer = gold final answer,
    metadata = {subject, level (int 1-5, or None where MATH says "Level ?"), solution, split}.
  """
  if split not in SPLIT_FILES:
    raise ValueError(f"load_math: split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
  file, sha = records.resolve(path, SPLIT_FILES[split])
  examples, seen = [], {}
  for where, row in records.iter_jsonl(file, sha):
    example = records.Example(
      id=records.get_text(row, "unique_id", where),
      question=records.get_text(row, "problem", where),
      answer=records.get_text(row, "answer", where),
      metadata={
        "subject": records.get_text(row, "subject", where),
        "level": records.get(row, "level", (int, type(None)), where),
        "solution": records.get_text(row, "solution", where),
        "split": split,
      },
    )
    records.claim_id(seen, example.id, where)
    examples.append(example)
  if path is None and len(examples) != SPLIT_SIZES[split]:
    raise records.DataFormatError(
      f"{file}: {len(examples)} rows, expected {SPLIT_SIZES[split]} for MATH split {split!r}"
    )
  return examples
