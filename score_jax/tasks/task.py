"""A loaded task: a registered spec with its examples, and the prompts the sampler starts from.

Owns `Task` (what the train loop and evaluation hold: examples plus the spec's prompts,
instruction and answer extraction), `load_task` (a registered name -> its examples of a split)
and `encode_prompts` (the chat-template prompt ids that fit the prompt budget).
"""

from __future__ import annotations

import dataclasses

from absl import logging

from score_jax.data import prompts, records
from score_jax.tasks import registry


@dataclasses.dataclass
class Task:
  """One task's examples (a mutable list: callers may trim it) and how its turns are written."""

  spec: registry.TaskSpec
  examples: list[records.Example]
  shots: list[records.Example] = dataclasses.field(default_factory=list)  # few-shot (MBPP: 3)

  @property
  def name(self) -> str:
    return self.spec.name

  @property
  def kind(self) -> str:
    """'math' (final-answer checks: MATH and procedural tasks) or 'code' (tests)."""
    return self.spec.kind

  def first_turn(self, example: records.Example) -> str:
    """The first user message of an example."""
    return self.spec.first_turn(example, self.shots)

  def correction(self) -> str:
    """The self-correction instruction appended after an attempt."""
    return self.spec.correction

  def instruction(self, which: str = "correction") -> str:
    """The second-turn prompt: 'correction' (SCoRe's) or 'self_refine' (critique, then revise)."""
    if which == "correction":
      return self.spec.correction
    if which == "self_refine":
      return self.spec.self_refine or prompts.self_refine_instruction(self.kind)
    raise ValueError(f"instruction: expected 'correction' or 'self_refine', got {which!r}")

  def final_answer(self, text: str) -> str | None:
    """The attempt's final answer (math) or program (code), for the answer-change rate."""
    return self.spec.final_answer(text)


def load_task(name: str, split: str, path: str = "", procedural_size: int = 2000) -> Task:
  """Loads a registered task's examples of `split`.

  `path` is a user's own copy of the data file ("" = the package copy); generated tasks (the
  procedural family, the testbed) make `procedural_size` problems per split, train and test
  drawn from different generator seeds.
  """
  spec = registry.get_spec(name)
  examples = spec.load(split, path or None, procedural_size)
  shots = spec.load_shots() if spec.load_shots else []
  return Task(spec, examples, shots)


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
