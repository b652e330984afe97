"""The phase schedule of a run: which algorithm trains at each loop step.

`config.rl.method` names a method (rl.algorithms.METHODS): its phases, each an algorithm with
the config sections whose `steps` it gets. SCoRe runs Stage I then Stage II (or, with
`schedule.kind = 'interleaved'`, `num_rounds` rounds of both, as in the paper's v1); a one-phase
baseline gets the sum of the stage budgets, the same number of updates as SCoRe.
"""

from score_jax.rl import algorithms


def phases(config) -> list[tuple[str, int]]:
  """The schedule as (algorithm name, steps) phases, in order; empty phases are left out."""
  method = algorithms.method(config.rl.method)
  one = [(name, sum(config[s].steps for s in sections)) for name, sections in method.phases]
  rounds = config.schedule.num_rounds if config.schedule.kind == "interleaved" else 1
  if len(one) == 1:  # a baseline's one phase: interleaving does not apply
    rounds = 1
  return [p for p in one * rounds if p[1] > 0]


def phase_at(config, loop_step: int) -> tuple[str, int]:
  """(algorithm, step within that phase) of the update numbered `loop_step` (0-based)."""
  start = 0
  for name, n in phases(config):
    if loop_step < start + n:
      return name, loop_step - start
    start += n
  raise ValueError(f"step {loop_step} is past the schedule's {start} steps")


def total_steps(config) -> int:
  return sum(n for _, n in phases(config))
