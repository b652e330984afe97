"""The testbed's task, `testbed`: arith's sums, registered with the task registry on import.

The pretrained base already knows the answer form, so the first turn is the bare question; the
correction instruction is the paper's short (Figure 2) wording, which keeps CPU sequences short.
Attempts are rewarded by the project's math verifier in the reward pool, like MATH. Importing
this module (the testbed's pipeline and config do, and so does experiments/testbed.py) is what
makes `data.task = "testbed"` a known task.
"""

from __future__ import annotations

from collections.abc import Sequence

from score_jax import tasks
from score_jax.data import prompts, records
from score_jax.rewards import math_normalize
from score_jax.tasks import builtin
from score_jax.testbed import arith

NAME = "testbed"


def first_turn(example: records.Example, shots: Sequence[records.Example]) -> str:
  del shots  # zero-shot: the bare question, the form the base model was pretrained on
  return example.question


SPEC = tasks.TaskSpec(
  name=NAME,
  kind="math",
  load=lambda split, path, size: arith.load_split(split, size),  # generated: no data file
  first_turn=first_turn,
  correction=prompts.correction_instruction("math_short"),
  self_refine=prompts.self_refine_instruction("math_short"),
  final_answer=math_normalize.extract_answer,
  reward_item=builtin.math_reward_item,
)

tasks.register(SPEC, replace=True)  # replace: a re-import (importlib.reload) registers it again
