"""The phase schedule of a run: which algorithm trains at each loop step.

`config.rl.method` names a method (rl.algorithms.METHODS): its phases, each an algorithm with
the config sections whose `steps` it gets. SCoRe runs Stage I then Stage II (or, with
`schedule.kind = 'interleaved'`, `num_rounds` rounds of both, as in the paper's v1); a one-phase
baseline gets the sum of the stage budgets, the same number of updates as SCoRe.
"""

from typing import NamedTuple

from score_jax.rl import algorithms


def phases(config) -> list[tuple[str, int]]:
  """The schedule as (algorithm name, steps) phases, in order; empty phases are left out."""
  method = algorithms.method(config.rl.method)
  one = [(name, sum(config[s].steps for s in sections)) for name, sections in method.phases]
  rounds = config.schedule.num_rounds if config.schedule.kind == "interleaved" else 1
  if len(one) == 1:  # a baseline's one phase: interleaving does not apply
    rounds = 1
  return [p for p in one * rounds if p[1] > 0]


class Segment(NamedTuple):
  """Where a loop step falls: its phase's index in the schedule, algorithm, step and length."""

  index: int
  name: str
  step: int  # 0-based step within the phase
  length: int  # the phase's steps


def segment_at(config, loop_step: int) -> tuple[Segment, bool]:
  """(the Segment of the update numbered `loop_step` (0-based), whether it is the last phase)."""
  start, ps = 0, phases(config)
  for i, (name, n) in enumerate(ps):
    if loop_step < start + n:
      return Segment(i, name, loop_step - start, n), i == len(ps) - 1
    start += n
  raise ValueError(f"step {loop_step} is past the schedule's {start} steps")


def phase_at(config, loop_step: int) -> tuple[str, int]:
  """(algorithm, step within that phase) of the update numbered `loop_step` (0-based)."""
  seg, _ = segment_at(config, loop_step)
  return seg.name, seg.step


def total_steps(config) -> int:
  return sum(n for _, n in phases(config))
