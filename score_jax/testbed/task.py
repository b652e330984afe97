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
# The registered testbed tasks and the problem family (arith.FAMILIES) each one draws from.
FAMILY_OF = {
  NAME: "sum10",  # v1 (experiments/testbed.py)
  "testbed_v2": "sum10to12",  # v2 (experiments/testbed_v2.py)
  "testbed_v2_heldout": "sum9",  # v2's held-out variant: scored once, never used in design
}


def first_turn(example: records.Example, shots: Sequence[records.Example]) -> str:
  del shots  # zero-shot: the bare question, the form the base model was pretrained on
  return example.question


def _spec(name: str) -> tasks.TaskSpec:
  family = FAMILY_OF[name]
  return tasks.TaskSpec(
    name=name,
    kind="math",
    # generated: no data file
    load=lambda split, path, size: arith.load_split(split, size, family),
    first_turn=first_turn,
    correction=prompts.correction_instruction("math_short"),
    self_refine=prompts.self_refine_instruction("math_short"),
    final_answer=math_normalize.extract_answer,
    reward_item=builtin.math_reward_item,
  )


SPECS = {name: _spec(name) for name in FAMILY_OF}
SPEC = SPECS[NAME]
for _spec_of_name in SPECS.values():
  tasks.register(_spec_of_name, replace=True)  # replace: a re-import registers it again
