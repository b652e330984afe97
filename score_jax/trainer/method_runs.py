"""One compared method inside a multi-run job: train it, then evaluate its selected checkpoint.

The jobs that compare methods on one base model (the laptop testbed, the SmolLM2 suite) run each
(method, seed) through `run_method`: `trainer.loop.run` (nothing for untrained rows), then the
final greedy evaluation of the checkpoint the paper selects (the highest training reward of the
final phase) on a fixed number of held-out problems. Each phase's result is written atomically
under the job's workdir and reused when it is there, so a rerun continues where a crash or kill
stopped (training itself resumes mid-way from its Orbax checkpoints). `Timings` keeps the wall
seconds of every phase across invocations.

  WORKDIR/runs/<method>_seed<s>/     the run (metrics.jsonl, checkpoints, episodes, eval/)
  WORKDIR/eval/<method>_seed<s>.json its final evaluation, the training curve, the episodes
  WORKDIR/timings.json               wall seconds per phase
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from score_jax import configs
from score_jax.trainer import console, loop, metric_writers, schedule, suite
from score_jax.trainer import evaluate as evaluate_lib


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` as JSON atomically (a reader never sees half a file)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp"  # per process: grid workers may write the same file
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def headline(m: dict) -> dict[str, float]:
  """A phase's result line: accuracies at both attempts and their difference, in points."""
  return {k: round(100 * m[k], 1) for k in ("acc@t1", "acc@t2", "delta(t1,t2)")}


class Timings:
  """Wall seconds per phase, persisted so a resumed run still reports every phase."""

  def __init__(self, workdir: str, name: str = "timings.json"):
    self.path = os.path.join(workdir, name)
    self.seconds: dict[str, float] = {}
    if os.path.exists(self.path):
      with open(self.path) as f:
        self.seconds = json.load(f)

  def add(self, phase: str, seconds: float) -> None:
    self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds
    if jax.process_index() == 0:
      write_json(self.path, self.seconds)


def training_curve(rundir: str) -> list[dict]:
  """The evaluations logged during training: [{step, phase, acc@t1, acc@t2}]."""
  out = []
  for row in metric_writers.read_metrics(rundir):
    scalars = row["scalars"]
    if "eval/acc@t1" in scalars:
      out.append(
        {
          "step": int(row["step"]),
          "phase": row.get("stage", ""),
          "acc@t1": scalars["eval/acc@t1"],
          "acc@t2": scalars["eval/acc@t2"],
        }
      )
  return out


def run_method(
  rl_cfg: ml_collections.ConfigDict,
  workdir: str,
  name: str,
  eval_problems: int,
  pool,
  timings: Timings,
  tag: str,
  final_split: str = "",
) -> dict:
  """Trains `rl_cfg` (a `score` job config) into WORKDIR/runs/<name>, then evaluates it greedy
  on `eval_problems` problems of `final_split` ("" = its eval split, which the evaluations
  during training use); cached in WORKDIR/eval/<name>.json."""
  say: Callable[[str], None] = lambda msg: jax.process_index() == 0 and console.say(msg, tag=tag)
  path = os.path.join(workdir, "eval", f"{name}.json")
  rundir = os.path.join(workdir, "runs", name)
  if os.path.exists(path):
    say(f"{name}: cached")
    with open(path) as f:
      return json.load(f)
  steps = schedule.total_steps(rl_cfg)
  plan = " + ".join(f"{n} {s} steps" for s, n in schedule.phases(rl_cfg)) or "no training"
  say(f"{name}: {plan}")
  start = time.time()
  if jax.process_index() == 0:
    configs.save(rl_cfg, rundir)
  loop.run(rl_cfg, rundir, pool)
  timings.add(f"rl/{name}", time.time() - start)
  done = metric_writers.read_metrics(rundir)
  if steps and (not done or int(done[-1]["step"]) != steps):
    raise RuntimeError(f"{rundir}: stopped before step {steps} (preempted?); rerun to resume")
  start = time.time()
  final = ml_collections.ConfigDict(rl_cfg.to_dict())
  final.eval.num_examples = eval_problems
  final.eval.suite = ("final",)
  final.data.eval_split = final_split or final.data.eval_split
  suite.run_suite(final, rundir, pool)
  with open(os.path.join(rundir, "eval", "final.json")) as f:
    out = json.load(f)
  result = {
    "metrics": out["metrics"],
    "edit_ratios": [e["edit_ratio"] for e in out["episodes"]],
    "episodes": out["episodes"],
    "checkpoint_step": out["step"],
    "curve": training_curve(rundir),
  }
  if jax.process_index() == 0:
    write_json(path, result)
  timings.add(f"eval/{name}", time.time() - start)
  if jax.process_index() == 0:
    console.result(name, headline(result["metrics"]), time.time() - start, tag=tag)
  return result


def run_record(method: str, seed: int, result: dict, kind: str = "math") -> dict:
  """A run's row for the comparison reports: metrics, edit ratios, answer changes, curve."""
  same = evaluate_lib.answers_equal(kind)
  changed = [not same(*r["answers"][:2]) for r in result["episodes"]]
  return {
    "method": method,
    "seed": seed,
    "metrics": result["metrics"],
    # Per problem, for paired comparisons (testbed.findings): which problem, which attempts right.
    "ids": [r["id"] for r in result["episodes"]],
    "correct": [[x > 0 for x in r["rewards"]] for r in result["episodes"]],
    "edit_ratios": result["edit_ratios"],
    "answer_changed": changed,
    "curve": result.get("curve", []),
  }


def check_workdir_config(config, workdir: str, section: str, run_selection: tuple[str, ...]):
  """A workdir belongs to one config: cached phases of another config would be silently reused.

  Only the fields of `config.<section>` named in `run_selection` (which runs exist: methods,
  seeds) may change between invocations; each run's phases are cached under its own name, so a
  rerun with more seeds or methods reuses what is done and adds the rest.
  """
  path = os.path.join(workdir, f"{section}_config.json")
  mine = json.loads(config.to_json_best_effort(sort_keys=True))
  if os.path.exists(path):
    with open(path) as f:
      theirs = json.load(f)
    cached = lambda d: {
      **d,
      section: {k: v for k, v in d.get(section, {}).items() if k not in run_selection},
    }
    diff = sorted(_diff(cached(theirs), cached(mine)))
    if diff:
      raise configs.ConfigError(
        f"{workdir} holds a {section} run of another config (fields {', '.join(diff[:8])} "
        "differ): its cached phases would be reused. Use a new --workdir, or delete that one."
      )
  if jax.process_index() == 0:
    write_json(path, mine)


def _diff(a, b, prefix="config") -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    return [d for k in set(a) | set(b) for d in _diff(a.get(k), b.get(k), f"{prefix}.{k}")]
  return [] if a == b else [prefix]
