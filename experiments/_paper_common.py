"""Shared by the experiments/paper_table*.py files: the MATH / code base configs and their CPU
`tiny` forms, loaded by path (experiment files are not a package)."""

import importlib.util
import os

from score_jax.configs import paper

_HERE = os.path.dirname(os.path.abspath(__file__))


def _load(name: str):
  spec = importlib.util.spec_from_file_location(name, os.path.join(_HERE, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def table_config(table: str, arg: str, experiment: str, suite: tuple[str, ...]):
  """The config of one row of `table` on `experiment` (score_math or score_code)."""
  row, tiny = paper.parse_experiment_arg(table, arg)
  c = _load(experiment).get_config("tiny" if tiny else "")
  paper.apply_row(c, row, table)
  c.eval.suite = suite
  if tiny:
    shrink_evaluations(c)
  if {"fixed_first", "repair"} & set(suite):
    paper.add_continued_prompt_bucket(c)
  return c


def shrink_evaluations(c):
  """The evaluations of a `tiny` row at CPU size: the same programs, a few problems."""
  # Three attempts run the same K-attempt program as ten (each attempt continues the cache);
  # ten cost Table 2's SCoRe row 24 of its 52 s.
  c.eval.curve_attempts, c.eval.curve_problems = 3, 4
  c.eval.scaling_budgets = (2, 4)
  c.eval.pass_samples, c.eval.pass_k = 2, (1, 2)
  c.stage1.steps, c.stage2.steps = 1, 1
  c.checkpoint.every_steps = 1
