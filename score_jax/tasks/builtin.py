"""The built-in tasks: MATH, MBPP, HumanEval, `chat_arith` and the reasoning-gym
`procedural:<task>`.

Registered on import (`score_jax.tasks` imports this module). Prompts follow the paper: zero-shot
MATH asking for the "Final Answer: ..." line, 3-shot MBPP, zero-shot HumanEval, and the paper's
correction instruction of the task's kind. Reasoning-gym tasks reuse the MATH prompt (it asks for
the line whose answer we parse) and are checked on the host: reasoning-gym's own scorer takes
microseconds, far less than a round trip through the reward pool.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from score_jax.data import (
  chat_arith,
  humaneval_data,
  math_data,
  mbpp_data,
  procedural,
  prompts,
  records,
)
from score_jax.rewards import math_normalize
from score_jax.tasks import registry

# Generator seed of each split of a procedural task: train and test problems differ.
PROCEDURAL_SEEDS = {"train": 0, "test": 1}


def math_first_turn(example: records.Example, shots: Sequence[records.Example]) -> str:
  del shots  # zero-shot
  return prompts.math_first_turn(example)


def math_reward_item(example: records.Example, text: str) -> tuple[str, tuple]:
  """The pool's math verifier compares the attempt's final answer with the gold answer."""
  return "math", (text, example.answer)


def code_reward_item(example: records.Example, text: str) -> tuple[str, tuple]:
  """The pool's sandbox runs the attempt's program against the example's tests."""
  return "code", (prompts.extract_code(text), list(example.tests), example.setup_code)


def _humaneval_first_turn(example: records.Example, shots: Sequence[records.Example]) -> str:
  del shots  # zero-shot
  return prompts.humaneval_first_turn(example)


MATH = registry.TaskSpec(
  name="math",
  kind="math",
  load=lambda split, path, size: math_data.load_math(split, path=path),
  first_turn=math_first_turn,
  correction=prompts.correction_instruction("math"),
  final_answer=math_normalize.extract_answer,
  reward_item=math_reward_item,
)

MBPP = registry.TaskSpec(
  name="mbpp",
  kind="code",
  load=lambda split, path, size: mbpp_data.load_mbpp(split, path=path),
  first_turn=prompts.mbpp_first_turn,
  correction=prompts.correction_instruction("code"),
  final_answer=prompts.extract_code,
  reward_item=code_reward_item,
  load_shots=mbpp_data.load_mbpp_shots,
)

HUMANEVAL = registry.TaskSpec(
  name="humaneval",
  kind="code",
  load=lambda split, path, size: humaneval_data.load_humaneval(path),  # one split: the benchmark
  first_turn=_humaneval_first_turn,
  correction=prompts.correction_instruction("code"),
  final_answer=prompts.extract_code,
  reward_item=code_reward_item,
)

# Short arithmetic for small real chat models (SmolLM2-135M-Instruct): fixed train / validation /
# test splits of one finite space; `size` > 0 keeps a split's first `size` problems.
CHAT_ARITH = registry.TaskSpec(
  name="chat_arith",
  kind="math",
  load=lambda split, path, size: chat_arith.load_split(split, size),
  first_turn=lambda example, shots: example.question,
  correction=chat_arith.CORRECTION,
  self_refine=chat_arith.SELF_REFINE,
  final_answer=chat_arith.final_answer,
  host_check=chat_arith.is_correct,
)


def _load_procedural(task: str, split: str, size: int) -> list[records.Example]:
  seed = PROCEDURAL_SEEDS.get(split)
  if seed is None:
    raise ValueError(f"procedural task {task!r}: split must be 'train' or 'test', got {split!r}")
  return procedural.load_procedural(task, size, seed)


def _procedural_correct(task: str, example: records.Example, text: str) -> bool:
  return procedural.score(task, math_normalize.extract_answer(text), example) == 1.0


@functools.cache
def procedural_spec(task: str) -> registry.TaskSpec:
  """The spec of `procedural:<task>`, a reasoning-gym dataset (checked when it loads)."""
  return registry.TaskSpec(
    name=f"procedural:{task}",
    kind="math",
    load=lambda split, path, size: _load_procedural(task, split, size),
    first_turn=math_first_turn,
    correction=prompts.correction_instruction("math"),
    final_answer=math_normalize.extract_answer,
    host_check=functools.partial(_procedural_correct, task),
  )


for _spec in (MATH, MBPP, HUMANEVAL, CHAT_ARITH):
  registry.register(_spec)
registry.register_family("procedural", procedural_spec, variant="reasoning-gym task")
