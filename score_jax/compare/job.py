"""The `compare` job: a pretrained checkpoint, its base evaluation, and the compared methods.

  python -m score_jax.main --config=experiments/smollm2_selfcorrect.py --workdir=/tmp/smollm2

One base model (config.model.checkpoint) is evaluated greedy over two attempts; every method of
`compare.methods` (rows of score_jax.configs.paper, e.g. score, naive_multiturn, single_turn)
is trained from it for each seed of `compare.rl_seeds` with the same update budget, and its
selected checkpoint (the highest training reward of its final phase, as in the paper) is
evaluated the same way on `compare.eval_problems` problems of `compare.final_split` (the
evaluations during training, the curves, use data.eval_split: keep that the validation split).
Then the policies of `compare.export_methods` are written as Hugging Face checkpoints
(compare.export; compare.hf_check checks them, and the base, against transformers), and the
paper-style report (CIs over problems, paired comparisons with SCoRe) is written:

  runs/<method>_seed<s>/      each run (trainer.loop.run) and its eval/final.json
  eval/<method>_seed<s>.json  its final evaluation, curve and episodes
  export/<method>_seed<s>/    the trained policy for transformers (model.safetensors, config,
                              tokenizer.json, tokenizer_config.json with the chat template)
  report/                     results.md / .json and plots; report/paper: the table with CIs
  timings.json                wall seconds per phase

Every phase is cached under the workdir, so a rerun resumes (training mid-way from its Orbax
checkpoints). Only the run selection (methods, seeds, exports) may change between reruns.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence

import jax
import ml_collections
from absl import logging

from score_jax import configs
from score_jax.compare import export
from score_jax.configs import ConfigError, is_int, paper, require
from score_jax.report import build as paper_report
from score_jax.report import seeds as report
from score_jax.rewards import factory
from score_jax.rl import algorithms
from score_jax.trainer import console, method_runs

JOB = "compare"
TAG = "compare"
ALIASES = {"naive": "naive_multiturn"}  # the short name of the naive multi-turn RL row
# Fields that only choose which runs exist (see method_runs.check_workdir_config).
RUN_SELECTION = ("methods", "rl_seeds", "export_methods")


def row_name(method: str) -> str:
  return ALIASES.get(method, method)


def rl_config(config, method: str, seed: int) -> ml_collections.ConfigDict:
  """The `score` job config of one run: the experiment's sections with the row's method."""
  c = ml_collections.ConfigDict(config.to_dict())
  del c["compare"]
  c.job = "score"
  c.seed = seed
  paper.apply_row(c, row_name(method))
  c.eval.suite = ()  # the final evaluation runs after training (method_runs.run_method)
  c.eval.num_examples = config.compare.curve_problems
  configs.validate(c, num_devices=jax.device_count())
  return c


def run(config, workdir: str, pool=None) -> list[dict]:
  """Runs (or resumes) every phase; returns the report's summary rows."""
  with factory.reward_pool(config, pool) as pool:
    return _run(config, workdir, pool)


def _trained(method: str) -> bool:
  return bool(algorithms.method(paper.get_row(row_name(method)).method).phases)


def _run(config, workdir: str, pool) -> list[dict]:
  t0 = time.time()
  cmp = config.compare
  method_runs.check_workdir_config(config, workdir, "compare", RUN_SELECTION)
  timings = method_runs.Timings(workdir)

  def run_one(method, seed):
    name = f"{method}_seed{seed}"
    c = rl_config(config, method, seed)
    result = method_runs.run_method(
      c, workdir, name, cmp.eval_problems, pool, timings, TAG, final_split=cmp.final_split
    )
    return method_runs.run_record(method, seed, result)

  runs = [run_one("base", config.seed)]
  for seed in cmp.rl_seeds:
    for method in cmp.methods:
      if _trained(method) or seed == cmp.rl_seeds[0]:  # greedy and untrained: one seed says all
        runs.append(run_one(method, seed))
  for method in cmp.export_methods:
    for seed in cmp.rl_seeds:
      name = f"{method}_seed{seed}"
      out = os.path.join(workdir, "export", name)
      if not os.path.exists(out):
        start = time.time()
        export.export_policy(
          rl_config(config, method, seed), os.path.join(workdir, "runs", name), out
        )
        timings.add(f"export/{name}", time.time() - start)
      console.say(f"{name}: exported to {out}", tag=TAG)
  rows = report.summarize(runs)
  if jax.process_index() == 0:
    paths = report.write_report(runs, os.path.join(workdir, "report"))
    rundirs = [os.path.join(workdir, "runs", f"{r['method']}_seed{r['seed']}") for r in runs]
    _write_paper_report(rundirs, os.path.join(workdir, "report", "paper"))
    console.say("\n" + report.format_table_for_console(rows))
    wall = json.dumps({k: round(v, 1) for k, v in timings.seconds.items()})
    console.say(f"\nwall seconds per phase: {wall}")
    console.say(f"this invocation: {time.time() - t0:.0f} s; log: {console.current_log()}")
    console.report(os.path.join(workdir, "report", "paper", paper_report.RESULTS_MD))
    console.report(paths["markdown"])
  logging.info("compare done: %s", rows)
  return rows


PAPER_TASKS = ("math", "mbpp", "humaneval")  # the tasks the paper's tables report


def _write_paper_report(rundirs: list[str], out: str) -> None:
  """The paper-style report; runs on a task the paper never reports form one table of their own
  (named after the task), so no row is printed beside the paper's numbers for another task."""
  runs, missing = paper_report.collect(rundirs, out)
  runs = [r if r.task in PAPER_TASKS else dataclasses.replace(r, table=r.task) for r in runs]
  paper_report.write(runs, missing, out)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """The SCoRe sections every run reads, then the `compare` section."""
  configs.validate_score_sections(config)
  if "compare" not in config:
    raise ConfigError("config.compare: missing; the compare job needs its section (methods, ...)")
  require(config, "compare.final_split", lambda v: isinstance(v, str) and v, "a split name")
  for f in ("eval_problems", "curve_problems"):
    require(config, f"compare.{f}", lambda v: is_int(v) and v >= 1, "an int >= 1")
  if not config.model.checkpoint:
    raise ConfigError("config.model.checkpoint: empty; the compare job starts from a checkpoint")
  names = ", ".join([*ALIASES, *paper.ROWS])
  require(
    config,
    "compare.methods",
    _methods,
    f"a tuple of distinct names from {names} (empty: base only)",
  )
  require(config, "compare.rl_seeds", _distinct_ints, "a non-empty tuple of distinct ints")
  require(
    config,
    "compare.export_methods",
    lambda v: (
      isinstance(v, Sequence) and all(m in config.compare.methods and _trained(m) for m in v)
    ),
    "a tuple of trained methods from compare.methods",
  )


def _methods(v) -> bool:
  if not isinstance(v, Sequence) or isinstance(v, str) or len(set(v)) != len(v):
    return False
  return all(row_name(x) in paper.ROWS and x != "base" for x in v)


def _distinct_ints(v) -> bool:
  return isinstance(v, Sequence) and len(v) > 0 and len(set(v)) == len(v) and all(map(is_int, v))


configs.register_job(
  configs.Job(JOB, "score_jax.compare.job", uses_reward_pool=True, validate=validate_config),
  replace=True,
)
