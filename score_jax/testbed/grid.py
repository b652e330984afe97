"""Testbed v2's pre-registered grid: bases, tuning on validation, one confirmatory test per run.

  python -m score_jax.main --config=experiments/testbed_v2.py --workdir=DIR

The protocol (experiments/testbed_protocol.md) fixes what this job runs, in this order:

  1. bases: one per pretraining seed, drawn in testbed.pretrain_seeds' order: tokenizer and
     pretraining with config.seed set to that seed, under DIR/bases/pretrain_seed<p>/ (the v1
     pipeline's phases), then the gate on the validation split (its forced check must fix
     >= testbed.base_gate.min_forced_fix of its wrong first attempts) until testbed.num_bases
     bases pass (tuning starts once the first has passed: it needs no other); every draw is
     in DIR/bases.json and the report. Each accepted base is evaluated on the test split
     (final, forced_check, the majority vote of 2 samples) and on the held-out variant in
     phase 3;
  2. tuning: every trained method at every point of the one grid `testbed.tune_grid` (the same
     grid for every method), on the first pretraining seed and the first RL seed, scored by
     Acc@t2 on `testbed.validation_problems` problems of the VALIDATION split; the best point of
     each method (ties: the earlier point) is written to DIR/tuning.json;
  3. confirmation: each method at its selected point for every pretraining seed x RL seed,
     evaluated once on the test split (final, the base model's fixed first attempts, the
     majority vote of 2 samples for testbed.vote_methods) and on the held-out variant's test
     split;
  4. DIR/report/: the tables with sample standard deviations and 95% CIs, and the findings
     (score_jax.testbed.findings) for the main task and the held-out variant.

Every phase is cached under DIR and skipped on rerun (training resumes mid-run), so a killed
grid continues where it stopped; `testbed.stop_after = "tuning"` stops after phase 2.
`testbed.workers` > 1 runs the units of each phase in that many processes
(score_jax.testbed.workers); the results do not depend on it.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import time

import jax
import ml_collections

from score_jax import configs
from score_jax.configs import paper
from score_jax.parallel import mesh as mesh_lib
from score_jax.rewards import factory
from score_jax.rl import algorithms
from score_jax.testbed import config as testbed_config
from score_jax.testbed import grid_report, pipeline, workers
from score_jax.trainer import console, method_runs, suite

TAG = "grid"


def _say(msg: str) -> None:
  if jax.process_index() == 0:
    console.say(msg, tag=TAG)


def grid_points(config) -> list[dict]:
  """The tuning grid's points, in a fixed order: the product of testbed.tune_grid's values."""
  grid = config.testbed.tune_grid.to_dict()
  fields = sorted(grid)
  return [dict(zip(fields, values)) for values in itertools.product(*(grid[f] for f in fields))]


def point_name(point: dict) -> str:
  """A point as a directory name: 'optim.lr=0.0001,stage2.alpha=10'."""
  return ",".join(f"{k.replace(':', '.')}={v}" for k, v in sorted(point.items())) or "default"


def apply_point(c: ml_collections.ConfigDict, point: dict) -> ml_collections.ConfigDict:
  """Sets each field of `point` ('section:field' keys: ConfigDict keys cannot hold dots)."""
  for field, value in point.items():
    node = c
    *path, last = field.split(":")
    for p in path:
      node = node[p]
    node[last] = value
  return c


def trained(method: str) -> bool:
  return bool(algorithms.method(paper.get_row(testbed_config.row_name(method)).method).phases)


def _base(config, workdir: str, pseed: int, mesh, timings) -> str:
  """The base model of one pretraining seed (the v1 pipeline's tokenizer and pretraining)."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.seed = pseed
  sub = os.path.join(workdir, "bases", f"pretrain_seed{pseed}")
  spm = pipeline._tokenizer(c, sub, timings)
  return pipeline._pretrain(c, sub, spm, mesh, timings)


def _gate(config, base_dir: str, pool) -> dict:
  """The base's skills on the VALIDATION split (testbed.base_gate.problems problems): one pass,
  and the forced check's fix / keep rates (what RL can find); cached in
  DIR/bases/pretrain_seed<p>/gate/."""
  b = _rl(config, "base", 0, 0, base_dir)
  b.data.eval_split, b.eval.suite = "validation", ("forced_check",)
  b.eval.num_examples = config.testbed.base_gate.problems
  b.eval.forced_prefix, b.eval.file_suffix = config.testbed.forced_prefix, "_gate"
  paper.add_continued_prompt_bucket(b)
  res = suite.run_suite(b, os.path.join(os.path.dirname(base_dir), "gate"), pool)["forced_check"]
  keys = ("acc@t1", "acc@t2", "forced_fix_rate", "forced_keep_rate")
  return {k: None if res[k] is None else float(res[k]) for k in keys}  # None: no such attempts


def select_bases(drawn, num_bases: int, min_fix: float) -> tuple[list[int], list[dict]]:
  """(accepted pretraining seeds, a record of every draw) from `drawn`, an iterable of
  (seed, gate figures) consumed lazily: it stops at the num_bases-th base whose forced check
  fixes >= min_fix of its wrong first attempts (a base without the check cannot show what RL
  does with it: BUILD_NOTES.md, testbed v2, the draws of v2-J)."""
  accepted, record = [], []
  for seed, gate in drawn:
    fix = gate["forced_fix_rate"]  # None: no wrong first attempt, the check is not measured
    ok = fix is not None and fix >= min_fix
    record.append({"pretrain_seed": seed, **gate, "accepted": ok})
    accepted += [seed] if ok else []
    if len(accepted) == num_bases:
      return accepted, record
  raise configs.ConfigError(
    f"config.testbed.pretrain_seeds: {len(accepted)} of {len(record)} bases passed the gate "
    f"(forced fix >= {min_fix}), {num_bases} needed (testbed.num_bases): draw more seeds. "
    f"Draws: {json.dumps(record)}"
  )


def _base_unit(p: int) -> str:
  return f"base/pretrain_seed{p}"


def _bases(config, workdir, mesh, pool, timings, count: int) -> tuple[dict[int, str], list[dict]]:
  """Phase 1: bases drawn in testbed.pretrain_seeds' order until `count` pass the gate
  ({accepted seed: base dir}, the record of every draw). With several workers, seeds are drawn
  side by side, but only ones the order may still need for testbed.num_bases; a worker with no
  such seed to draw moves on (tuning needs only the first accepted base)."""
  tb = config.testbed
  base = lambda p: _base(config, workdir, p, mesh, timings)  # cached once drawn
  gate = lambda p: _gate(config, base(p), pool)  # cached once evaluated
  _draw_ahead(config, workdir, gate)

  def drawn():
    for p in tb.pretrain_seeds:
      workers.wait_for(workdir, _base_unit(p), functools.partial(gate, p))
      figures = gate(p)
      _say(f"base of pretraining seed {p} on validation: {json.dumps(figures)}")
      yield p, figures

  accepted, record = select_bases(drawn(), count, tb.base_gate.min_forced_fix)
  return {p: base(p) for p in accepted}, record


def _write_draws(workdir: str, drawn: list[dict]) -> None:
  """DIR/bases.json: every draw so far, rejected ones too (the report lists them)."""
  if jax.process_index() == 0:
    method_runs.write_json(os.path.join(workdir, "bases.json"), drawn)


def _draw_ahead(config, workdir: str, gate) -> None:
  """Draws (pretraining + gate) the first seed nobody has drawn, while the seeds before it,
  finished (counting those that passed) or being drawn by another worker (counting as if they
  pass), number fewer than testbed.num_bases: a seed drawn here is one the in-order selection
  needs unless an earlier draw fails, so no worker pretrains a base the selection cannot use."""
  tb = config.testbed
  while True:
    needed = tb.num_bases
    for p in tb.pretrain_seeds:
      unit = _base_unit(p)
      if needed <= 0:
        return
      if workers.done(workdir, unit):
        fix = gate(p)["forced_fix_rate"]
        needed -= fix is not None and fix >= tb.base_gate.min_forced_fix
      elif workers.held_elsewhere(workdir, unit):
        needed -= 1
      else:
        workers.try_run(workdir, unit, functools.partial(gate, p))
        break  # count again
    else:
      return


def _rl(config, method, pseed, seed, base_dir, point=None):
  c = pipeline.rl_config(config, method, seed, base_dir)
  c.seed = seed if trained(method) else pseed
  return apply_point(c, point or {})


def _tune(config, workdir, bases, pool, timings) -> dict:
  """Phase 2: every trained method at every grid point on validation; the selection."""
  path = os.path.join(workdir, "tuning.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  tb, points = config.testbed, grid_points(config)
  pseed, seed = next(iter(bases), None), tb.rl_seeds[0]  # the first accepted base
  methods = [m for m in tb.methods if trained(m)]
  runs = [(m, point) for m in methods for point in points] if len(points) > 1 else []

  def tune(method, point):  # cached once run
    c = _rl(config, method, pseed, seed, bases[pseed], point)
    name = f"tune/{method}/{point_name(point)}"
    return method_runs.run_method(
      c, workdir, name, tb.validation_problems, pool, timings, TAG, final_split="validation"
    )

  # A one-point grid has nothing to choose: no validation runs (testbed_v2.py:one_seed).
  units = [(f"tune/{m}/{point_name(pt)}", functools.partial(tune, m, pt)) for m, pt in runs]
  workers.run_all(workdir, units)
  scores = {}
  for method, point in runs:
    res = tune(method, point)
    scores.setdefault(method, []).append({"point": point, **method_runs.headline(res["metrics"])})
  best = lambda m: max(scores[m], key=lambda r: r["acc@t2"])["point"] if scores else points[0]
  selected = {m: best(m) for m in methods}
  out = {"selected": selected, "validation": scores, "pretrain_seed": pseed, "rl_seed": seed}
  if jax.process_index() == 0:
    method_runs.write_json(path, out)
  return out


def long_attempt_config(c, problems: int) -> ml_collections.ConfigDict:
  """The matched token budget's second baseline: the `final` evaluation on test with attempt 1
  given two attempts' tokens (eval/final_long1.json; its Acc@t1 is what the report reads)."""
  long = ml_collections.ConfigDict(c.to_dict())
  long.data.eval_split, long.eval.suite = "test", ("final",)
  long.eval.num_examples, long.eval.file_suffix = problems, "_long1"
  long.eval.num_attempts = 1  # only attempt 1 is read: a second would double the cost
  long.rollout.max_new_tokens = 2 * c.rollout.max_new_tokens
  long.rollout.gen_buckets = (long.rollout.max_new_tokens,)
  return long


def _extra_evals(c, rundir, pool, config, method) -> None:
  """The test-split evaluations beyond `final`, each in its own eval file of the run."""
  tb = config.testbed
  if method in tb.vote_methods:  # the matched token budget's vote (16 s of a ~110 s run)
    vote = ml_collections.ConfigDict(c.to_dict())
    vote.data.eval_split = "test"
    vote.eval.suite, vote.eval.scaling_budgets = ("scaling",), (2,)
    vote.eval.num_examples = vote.eval.curve_problems = tb.eval_problems
    vote.eval.file_suffix = "_vote2"
    suite.run_suite(vote, rundir, pool)
  held = ml_collections.ConfigDict(c.to_dict())
  held.data.eval_task, held.data.eval_split = tb.held_out_task, "test"
  held.eval.suite, held.eval.num_examples = ("final",), tb.eval_problems
  held.eval.file_suffix = "_heldout"
  suite.run_suite(held, rundir, pool)
  if method == "single_turn":
    suite.run_suite(long_attempt_config(c, tb.eval_problems), rundir, pool)
  extra = ml_collections.ConfigDict(c.to_dict())
  extra.data.eval_split = "test"
  extra.eval.num_examples = tb.eval_problems
  extra.eval.suite = ("forced_check",) if method == "base" else ("fixed_first",)
  extra.eval.forced_prefix = tb.forced_prefix
  paper.add_continued_prompt_bucket(extra)  # prompts that hold attempt 1
  suite.run_suite(extra, rundir, pool)


def _confirm(config, workdir, bases, selected, pool, timings) -> list[str]:
  """Phase 3: every (method, pretraining seed, RL seed) at its selected point, tested once."""
  tb = config.testbed

  def confirm(method, pseed, seed, name):
    c = _rl(config, method, pseed, seed, bases[pseed], selected.get(method))
    method_runs.run_method(
      c, workdir, name, tb.eval_problems, pool, timings, TAG, final_split="test"
    )
    start = time.time()
    _extra_evals(c, os.path.join(workdir, "runs", name), pool, config, method)
    timings.add(f"extra/{name}", time.time() - start)

  jobs = [("base", 0)] + [(m, s) for s in tb.rl_seeds for m in tb.methods]
  runs = [(m, p, s, f"{m}/p{p}_s{s}") for p in bases for m, s in jobs]
  workers.run_all(workdir, [(f"run/{r[3]}", functools.partial(confirm, *r)) for r in runs])
  return [r[3] for r in runs]


RUN_SELECTION = ("stop_after",)


def _persistent_compilation_cache(workdir: str) -> None:
  """The grid's ~90 runs compile the same programs (sampler, update per stream shape). An
  on-disk cache in the workdir saved ~10 s of a 153 s run (BUILD_NOTES.md, testbed v2 sizing);
  a cache the user set (JAX_COMPILATION_CACHE_DIR) is kept."""
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "xla_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def run(config, workdir: str, pool=None, worker: int = 0):
  """Runs (or resumes) the grid's phases; returns the findings (or the tuning, if stopped).
  `worker` > 0: a process score_jax.testbed.workers started; it runs units, not the report."""
  t0 = time.time()
  tb = config.testbed
  if tb.workers > 1 and jax.process_count() > 1:
    raise configs.ConfigError(
      f"config.testbed.workers = {tb.workers}: worker processes are for one host; a "
      f"multi-process JAX run ({jax.process_count()} processes) takes testbed.workers = 1."
    )
  if worker == 0:
    method_runs.check_workdir_config(config, workdir, "testbed", RUN_SELECTION)
  _persistent_compilation_cache(workdir)
  timings = method_runs.Timings(
    workdir, "timings.json" if worker == 0 else f"timings.w{worker}.json"
  )
  mesh = mesh_lib.make_mesh(configs.mesh_shape(config, jax.device_count()))
  procs = workers.spawn(config, workdir, tb.workers) if worker == 0 and tb.workers > 1 else []
  for i, p in enumerate(procs, start=1):
    _say(f"worker {i}: pid {p.pid}, output in {os.path.join(workdir, 'workers', f'w{i}.out')}")
  try:
    with factory.reward_pool(config, pool) as pool:
      first, drawn = _bases(config, workdir, mesh, pool, timings, count=1)  # what tuning needs
      _write_draws(workdir, drawn)
      tuning = _tune(config, workdir, first, pool, timings)
      _say(f"tuning done: selected {json.dumps(tuning['selected'])}")
      if tb.stop_after != "tuning":
        bases, drawn = _bases(config, workdir, mesh, pool, timings, count=tb.num_bases)
        _write_draws(workdir, drawn)
        names = _confirm(config, workdir, bases, tuning["selected"], pool, timings)
  except BaseException:
    workers.stop(procs)
    raise
  workers.finish(procs)
  if tb.stop_after == "tuning" or worker > 0:
    return tuning
  found = None
  if jax.process_index() == 0:
    found, md = grid_report.write(workdir, names, tuning, config, drawn)
    console.say(grid_report.console_text(md))
    console.say(f"this invocation: {time.time() - t0:.0f} s; log: {console.current_log()}")
    console.report(os.path.join(workdir, "report", "results.md"))
  return found
