"""Tasks and episodes for the train loop and evaluation: prompts, sampling, rewards, batches.

Owns everything between a config's `data` section and a step's batch, with no loss math:
- `Task`: a dataset (MATH, MBPP, HumanEval or a reasoning-gym task) with its first-turn prompt,
  the paper's correction instruction, and how an attempt becomes a reward item;
- `sample_episodes`: K attempts on one continuing KV cache (`score_jax.generation.sampling`), with per-row
  RNG ids taken from the row's GLOBAL index, so a run on two processes draws exactly the samples
  one process draws;
- `score_attempts`: every attempt through the reward pool (procedural tasks on the host);
- stream compaction (holes dropped) / padding / concatenation and the per-process slice ->
  global array placement.

Shape letters: b episodes, s stream slots, a attempts.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging

from score_jax.data import humaneval_data, math_data, mbpp_data, procedural, prompts, records
from score_jax.rewards import math_reward
from score_jax.rewards.outcome import Outcome
from score_jax.testbed import arith

PyTree = Any


@dataclasses.dataclass
class Task:
  """One task: its examples and how prompts, instructions and reward items are made."""

  name: str  # math | mbpp | humaneval | testbed | procedural:<reasoning-gym task>
  examples: list[records.Example]
  shots: list[records.Example] = dataclasses.field(default_factory=list)  # MBPP 3-shot

  @property
  def kind(self) -> str:
    """'math' (final-answer checks: MATH and procedural tasks) or 'code' (tests)."""
    return "code" if self.name in ("mbpp", "humaneval") else "math"

  def first_turn(self, example: records.Example) -> str:
    """The paper's first-turn user message (zero-shot MATH, 3-shot MBPP, zero-shot HumanEval)."""
    if self.name == "mbpp":
      return prompts.mbpp_first_turn(example, self.shots)
    if self.name == "humaneval":
      return prompts.humaneval_first_turn(example)
    if self.name == "testbed":  # the pretrained base knows the answer form: the bare question
      return example.question
    # Procedural tasks reuse the MATH prompt: it asks for the "Final Answer: ..." line we parse.
    return prompts.math_first_turn(example)

  def correction(self) -> str:
    """The paper's self-correction instruction, verbatim (testbed: the Figure 2 short form)."""
    if self.name == "testbed":  # shorter sequences on a CPU; still the paper's own wording
      return prompts.correction_instruction("math_short")
    return prompts.correction_instruction(self.kind)

  def final_answer(self, text: str) -> str | None:
    """The attempt's final answer (math) or program (code), for the answer-change rate."""
    if self.kind == "code":
      return prompts.extract_code(text)
    return math_reward.extract_answer(text)


def load_task(name: str, split: str, path: str = "", procedural_size: int = 2000) -> Task:
  """Loads a task's examples. Procedural tasks generate `procedural_size` problems per split.

  Train and eval splits of a procedural task are drawn with different generator seeds (0 and 1).
  """
  path = path or None
  if name == "math":
    return Task(name, math_data.load_math(split, path=path))
  if name == "mbpp":
    return Task(name, mbpp_data.load_mbpp(split, path=path), mbpp_data.load_mbpp_shots())
  if name == "humaneval":
    return Task(name, humaneval_data.load_humaneval(path))
  if name == "testbed":  # the laptop testbed's sums (score_jax.testbed.arith)
    return Task(name, arith.load_split(split, procedural_size))
  task = name.removeprefix("procedural:")
  seed = {"train": 0, "test": 1}.get(split)
  if seed is None:
    raise ValueError(f"procedural task {task!r}: split must be 'train' or 'test', got {split!r}")
  return Task(name, procedural.load_procedural(task, procedural_size, seed))


def encode_prompts(task: Task, tokenizer, template, system: str | None, max_len: int):
  """(examples, prompt ids) of the examples whose chat prompt fits `max_len` tokens (logged)."""
  kept, ids = [], []
  for ex in task.examples:
    p = template.first_turn_ids(tokenizer, task.first_turn(ex), system)
    if len(p) <= max_len:
      kept.append(ex)
      ids.append(p)
  if len(kept) < len(task.examples):
    logging.warning(
      "%s: dropped %d of %d prompts longer than rollout.max_prompt_len=%d tokens",
      task.name,
      len(task.examples) - len(kept),
      len(task.examples),
      max_len,
    )
  if not kept:
    raise ValueError(f"{task.name}: no prompt fits rollout.max_prompt_len={max_len} tokens")
  return kept, ids


def reward_item(task: Task, example: records.Example, text: str) -> tuple[str, tuple]:
  """The reward pool item of one attempt."""
  if task.kind == "code":
    return "code", (prompts.extract_code(text), list(example.tests), example.setup_code)
  return "math", (text, example.answer)


def score_attempts(pool, task: Task, examples_b: Sequence[records.Example], texts_ba):
  """Rewards [b, a] float32, outcomes [b, a] int8 and outcome counts of every attempt.

  MATH and code attempts go through the reward pool (process pool, per-item deadlines);
  reasoning-gym attempts are scored on the host (microseconds each). A checker that raises is
  an ERROR outcome, counted and logged, never a silent 0.
  """
  b, a = len(texts_ba), len(texts_ba[0])
  if task.name.startswith("procedural:"):
    name = task.name.removeprefix("procedural:")
    outcomes = np.empty((b, a), np.int8)
    for i, (ex, row) in enumerate(zip(examples_b, texts_ba)):
      for j, text in enumerate(row):
        try:
          ok = procedural.score(name, math_reward.extract_answer(text), ex) == 1.0
          outcomes[i, j] = Outcome.CORRECT if ok else Outcome.WRONG
        except Exception as e:  # counted as ERROR below, with the reason in the log
          logging.warning("procedural reward of %s attempt %d: ERROR %s", ex.id, j + 1, e)
          outcomes[i, j] = Outcome.ERROR
  else:
    items = [reward_item(task, ex, t) for ex, row in zip(examples_b, texts_ba) for t in row]
    outcomes = pool.score(items).outcomes.reshape(b, a)
  rewards = (outcomes == Outcome.CORRECT).astype(np.float32)
  counts = {o.name.lower(): int(np.sum(outcomes == o)) for o in Outcome}
  return rewards, outcomes, counts
