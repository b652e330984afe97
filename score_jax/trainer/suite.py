"""The evaluation suite: the paper's evaluations of one workdir, one JSON each under WORKDIR/eval/.

  suite.run_suite(config, workdir, pool)   # the 'evaluate' job; the trainer after training

The parameters are those eval.checkpoint names (best | latest | <step> of WORKDIR/checkpoints;
best falls back to latest when no checkpoint has metrics); a method that trains nothing
(base, self_refine) with no checkpoint is evaluated on its base model, step 0. Each evaluation
named in eval.suite writes WORKDIR/eval/<name>.json (process 0, atomically) holding "step"; an
evaluation whose file already holds the same step is skipped, so a rerun after a kill resumes
and a finished suite costs nothing (the model is not even loaded).

| name | what | module |
| --- | --- | --- |
| final | greedy eval.num_attempts attempts: metrics with 95% CIs, per level, episodes | correction_evals |
| attempts | Acc@t1..tK of K = eval.curve_attempts greedy attempts (Figure 8) | correction_evals |
| scaling | parallel vs sequential majority voting at each budget (Figure 1 right) | scaling |
| fixed_first | the base model's attempt 1 corrected by the evaluated model (Figure 4) | correction_evals |
| forced_check | attempt 2 made to open with eval.forced_prefix: fix / keep upper bounds | correction_evals |
| pass_at_k | unbiased pass@k of attempts 1 and 2 (code) | scaling |
| repair | greedy repair of a fixed repair set's first attempts (MBPP-R stand-in) | repair |
"""

import json
import os
import time
from collections.abc import Callable

import jax
import numpy as np
from absl import logging

from score_jax import storage
from score_jax.parallel import hosts
from score_jax.rewards import factory
from score_jax.trainer import console, correction_evals, eval_context, repair, scaling

EVALUATIONS: dict[str, Callable[[eval_context.Context], dict]] = {
  "final": correction_evals.final,
  "attempts": correction_evals.attempts,
  "scaling": scaling.scaling,
  "fixed_first": correction_evals.fixed_first,
  "forced_check": correction_evals.forced_check,
  "pass_at_k": scaling.pass_at_k,
  "repair": repair.repair,
}
NEEDS_BASE = ("fixed_first",)  # evaluations that sample the base (reference) model too
EVAL_DIR = "eval"


def path_of(workdir: str, name: str) -> str:
  """Where evaluation `name` of a workdir is written."""
  return os.path.join(workdir, EVAL_DIR, f"{name}.json")


def _done(path: str, step: int) -> dict | None:
  """The payload already written for `step` (process 0's view, shared with every process)."""
  payload = None
  if jax.process_index() == 0 and storage.isfile(path):
    try:
      payload = _read(path)
    except (OSError, json.JSONDecodeError) as e:
      logging.warning("%s is unreadable (%s): evaluating again", path, e)
    if not isinstance(payload, dict) or payload.get("step") != step:
      payload = None
  # Every process must take the same branch: the evaluations run collectives.
  flag = hosts.allgather(np.array([payload is not None], np.int32))
  if not flag[0]:
    return None
  return payload if payload is not None else _read(path)


def _read(path: str) -> dict:
  return json.loads(storage.read_text(path))


def _write(path: str, payload: dict) -> None:
  if jax.process_index() != 0:
    return
  storage.write_atomic(path, json.dumps(payload, indent=1))  # never half a file


def summary(payload: dict) -> dict:
  """What run_suite returns for an evaluation: its "metrics", or the payload without the
  episodes for evaluations whose numbers sit at the top level (scaling, pass_at_k, repair)."""
  if "metrics" in payload:
    return payload["metrics"]
  return {k: v for k, v in payload.items() if k != "episodes"}


def run_suite(config, workdir: str, pool=None) -> dict[str, dict]:
  """Runs the evaluations of config.eval.suite on `workdir`; returns {name: summary(payload)}.

  Each payload holds "step" (the evaluated checkpoint step, 0 for a base model) and the keys
  its evaluation documents. The reward pool is made from the config when `pool` is None.
  """
  unknown = [n for n in config.eval.suite if n not in EVALUATIONS]
  if unknown:
    raise ValueError(f"config.eval.suite names unknown evaluations {unknown}")
  step, label = eval_context.resolve_checkpoint(config, workdir)
  results, todo = {}, []
  # eval.file_suffix keeps a second evaluation of the same kind (another task, another split)
  # beside the first: eval/<name><suffix>.json.
  out_path = lambda name: path_of(workdir, name + config.eval.file_suffix)
  for name in config.eval.suite:
    done = _done(out_path(name), step)
    if done is None:
      todo.append(name)
    else:
      results[name] = summary(done)
      logging.info("evaluation %s of step %d: already in %s", name, step, out_path(name))
  if not todo:
    return results
  with factory.reward_pool(config, pool) as pool:
    need_base = any(n in NEEDS_BASE for n in todo)
    ctx = eval_context.build(config, workdir, pool, step, label, need_base=need_base)
    for name in todo:
      start = time.time()
      payload = {"step": step, **EVALUATIONS[name](ctx)}
      _write(out_path(name), payload)
      results[name] = summary(payload)
      _announce(name, step, label, results[name], time.time() - start)
  return {n: results[n] for n in config.eval.suite}


def _announce(name: str, step: int, label: str, result: dict, seconds: float) -> None:
  keys = ("acc@t1", "acc@t2", "delta(t1,t2)", "correction_rate", "repair_accuracy")
  shown = {k: round(100 * result[k], 1) for k in keys if isinstance(result.get(k), float)}
  if "budgets" in result:  # scaling: the largest budget's votes
    for kind in ("parallel", "sequential"):
      shown[f"{kind}@{result['budgets'][-1]}"] = round(100 * result[kind][-1], 1)
  for t in ("pass@k_t1", "pass@k_t2"):
    shown |= {f"{t[:4]}{k}_{t[-2:]}": round(100 * v, 1) for k, v in result.get(t, {}).items()}
  console.result(f"eval {name} (step {step}, {label})", shown, seconds)
  logging.info("evaluation %s of step %d: %s", name, step, result)


def run(config, workdir: str, pool=None) -> dict[str, dict]:
  """The 'evaluate' job: the suite on eval.checkpoint of `workdir`."""
  return run_suite(config, workdir, pool)
