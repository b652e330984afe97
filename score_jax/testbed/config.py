"""The testbed job's registration and the validation of its `testbed` config section.

Importing this module registers the `testbed` job (run by score_jax.testbed.pipeline) and the
`testbed` task, so `configs.validate` knows both; experiments/testbed.py imports it.
"""

from collections.abc import Sequence

import ml_collections

from score_jax import configs
from score_jax.configs import ConfigError, is_int, is_number, paper, require
from score_jax.testbed import arith, corpus
from score_jax.testbed import task as testbed_task

JOB = "testbed"
# The runs the job can make: any row of the paper's tables (score_jax.configs.paper.ROWS), plus
# the testbed's short name 'naive' for the naive multi-turn RL row (reward on attempt 2).
ALIASES = {"naive": "naive_multiturn"}


def row_name(method: str) -> str:
  """The paper row (score_jax.configs.paper) a testbed method name runs."""
  return ALIASES.get(method, method)


_POSITIVE_INTS = (
  "tokenizer_problems",
  "train_problems",
  "seq_len",
  "pretrain_steps",
  "pretrain_batch",
  "pretrain_save_every",
  "eval_problems",
  "curve_problems",
)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """The SCoRe sections the RL runs read, then the `testbed` section (experiments/testbed.py)."""
  configs.validate_score_sections(config)
  if "testbed" not in config:
    raise ConfigError("config.testbed: missing; the testbed job needs experiments/testbed.py")
  for f in _POSITIVE_INTS:
    require(config, f"testbed.{f}", lambda v: is_int(v) and v >= 1, "an int >= 1")
  require(config, "testbed.pretrain_lr", lambda v: is_number(v) and v > 0, "a number > 0")
  _validate_mixture(config)
  rows = ", ".join([*ALIASES, *paper.ROWS])
  require(config, "testbed.methods", _methods, f"a non-empty tuple of distinct names from {rows}")
  require(config, "testbed.rl_seeds", _distinct_ints, "a non-empty tuple of distinct ints")
  runs = ("base", *config.testbed.methods)
  require(
    config,
    "testbed.figure_methods",
    lambda v: isinstance(v, Sequence) and all(m in runs for m in v),
    f"a tuple of names from {runs} (the methods this config runs)",
  )
  figs = ("attempts", "scaling", "fixed_first")
  require(
    config,
    "testbed.figure_evals",
    lambda v: isinstance(v, Sequence) and len(v) > 0 and all(e in figs for e in v),
    f"a non-empty tuple of names from {figs}",
  )
  for field in ("task", "eval_task"):
    if config.data[field] not in testbed_task.FAMILY_OF:
      raise ConfigError(
        f"config.data.{field} = {config.data[field]!r}: the testbed job runs one of the "
        f"testbed tasks {sorted(testbed_task.FAMILY_OF)}."
      )
  if config.testbed.eval_problems > config.data.procedural_size:
    raise ConfigError(
      f"config.testbed.eval_problems = {config.testbed.eval_problems}: more than the "
      f"config.data.procedural_size = {config.data.procedural_size} test problems generated."
    )


def _methods(v) -> bool:
  if not isinstance(v, Sequence) or isinstance(v, str) or not v or len(set(v)) != len(v):
    return False
  return all(row_name(x) in paper.ROWS and x != "base" for x in v)


def _distinct_ints(v) -> bool:
  return isinstance(v, Sequence) and len(v) > 0 and len(set(v)) == len(v) and all(map(is_int, v))


def _validate_mixture(config: ml_collections.ConfigDict) -> None:
  """The pretraining corpus mixture: shares in [0, 1], the second-attempt shares summing to 1."""
  fraction = lambda v: is_number(v) and 0 <= v <= 1
  for f in corpus.FRACTIONS:
    require(config, f"testbed.mixture.{f}", fraction, "a fraction in [0, 1]")
  forms = arith.FAST_FORMS
  require(config, "testbed.mixture.fast_form", lambda v: v in forms, f"one of {forms}")
  m = config.testbed.mixture
  total = sum(m.get(k, 0.0) for k in corpus.SECOND_ATTEMPT_KINDS)
  if abs(total - 1) > 1e-6:
    raise ConfigError(
      f"config.testbed.mixture: {' + '.join(corpus.SECOND_ATTEMPT_KINDS)} = {total}, expected 1."
    )


GRID_JOB = "testbed_grid"
STOP_AFTER = ("", "tuning")


def validate_grid_config(config: ml_collections.ConfigDict) -> None:
  """The testbed job's checks, then the grid's own fields (score_jax.testbed.grid)."""
  validate_config(config)
  tb = config.testbed
  require(config, "testbed.pretrain_seeds", _distinct_ints, "a non-empty tuple of distinct ints")
  seeds = len(tb.pretrain_seeds)
  require(
    config, "testbed.num_bases", lambda v: is_int(v) and 1 <= v <= seeds, f"an int in [1, {seeds}]"
  )
  require(
    config,
    "testbed.base_gate.min_forced_fix",
    lambda v: is_number(v) and 0 <= v <= 1,
    "a rate in [0, 1]",
  )
  require(config, "testbed.base_gate.problems", lambda v: is_int(v) and v >= 1, "an int >= 1")
  require(config, "testbed.validation_problems", lambda v: is_int(v) and v >= 1, "an int >= 1")
  require(config, "testbed.workers", lambda v: is_int(v) and v >= 1, "an int >= 1 (processes)")
  runs = ("base", *tb.methods)
  require(
    config,
    "testbed.vote_methods",
    lambda v: isinstance(v, Sequence) and not isinstance(v, str) and all(m in runs for m in v),
    f"a tuple of names from {runs} (the runs whose majority vote of 2 samples is evaluated)",
  )
  require(config, "testbed.forced_prefix", lambda v: isinstance(v, str) and v, "a non-empty string")
  require(config, "testbed.stop_after", lambda v: v in STOP_AFTER, f"one of {STOP_AFTER}")
  require(
    config,
    "testbed.held_out_task",
    lambda v: v in testbed_task.FAMILY_OF and v != config.data.task,
    f"a testbed task other than data.task ({sorted(testbed_task.FAMILY_OF)})",
  )
  grid = require(
    config,
    "testbed.tune_grid",
    lambda v: isinstance(v, ml_collections.ConfigDict),
    "a ConfigDict of {'section:field': tuple of values}",
  )
  for field, values in grid.items():
    if not isinstance(values, Sequence) or isinstance(values, str) or not values:
      raise ConfigError(
        f"config.testbed.tune_grid.{field} = {values!r}: expected a tuple of values"
      )
  for field in grid:  # each field must exist in the RL config the point is applied to
    node, path = config, field.split(":")
    for part in path:
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise ConfigError(f"config.testbed.tune_grid: {field!r} is not a config field")
      node = node[part]
  if config.data.eval_split != "validation":
    raise ConfigError(
      f"config.data.eval_split = {config.data.eval_split!r}: the grid's evaluations during "
      "training must use 'validation' (the test split is scored once, at the end)."
    )


configs.register_job(
  configs.Job(JOB, "score_jax.testbed.pipeline", uses_reward_pool=True, validate=validate_config),
  replace=True,  # a re-import (importlib.reload) registers it again
)
configs.register_job(
  configs.Job(
    GRID_JOB, "score_jax.testbed.grid", uses_reward_pool=True, validate=validate_grid_config
  ),
  replace=True,
)
