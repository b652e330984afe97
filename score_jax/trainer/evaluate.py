"""Held-out evaluation: greedy K-attempt episodes -> the paper's self-correction metrics.

`evaluate(params, eval_set, ...)` samples K attempts per problem (greedy, the paper's protocol:
temperature 0), scores each attempt, and reports Acc@t1..K, Delta(t1,t2), Delta i->c / c->i
(fractions of ALL problems), the answer-change rate and the mean edit-distance ratio between
consecutive attempts (Figure 5), and 95% bootstrap intervals over problems of each accuracy and
delta (`<metric>_ci95_low/high`, trainer.confidence). Problems are split over processes;
results are all-gathered.

`run(config, workdir)` is the 'evaluate' job: it restores the best (highest training reward) or
latest checkpoint of a workdir and writes `eval_<step>.json`.
"""

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np
from absl import logging

from score_jax import tasks
from score_jax.data import records
from score_jax.generation import rollout
from score_jax.parallel import hosts
from score_jax.rewards import factory, math_reward
from score_jax.rewards.outcome import Outcome
from score_jax.rl import optim
from score_jax.trainer import checkpoint as checkpoint_lib
from score_jax.trainer import confidence, metrics
from score_jax.trainer import setup as setup_lib

PyTree = Any


@dataclasses.dataclass
class EvalSet:
  """A held-out split, tokenized: problems, their prompt ids and the instruction ids."""

  task: tasks.Task
  examples: list[records.Example]
  prompt_ids: list[list[int]]
  instruction: list[int]


def make_eval_set(config, tok, template) -> EvalSet:
  """The first `eval.num_examples` problems of the held-out task (config.data.eval_task)."""
  d = config.data
  task = tasks.load_task(d.eval_task or d.task, d.eval_split, d.eval_path, d.procedural_size)
  system = d.system or None
  examples, ids = tasks.encode_prompts(task, tok, template, system, config.rollout.max_prompt_len)
  n = config.eval.num_examples or len(examples)
  instruction = template.next_turn_ids(tok, task.correction())
  setup_lib.check_instruction(config, instruction, task.name)
  return EvalSet(task, examples[:n], ids[:n], instruction)


def answers_equal(kind: str):
  """(x, y) -> whether two extracted final answers count as the same (answer-change metric)."""
  if kind == "code":
    return lambda x, y: (x or "").strip() == (y or "").strip()

  def same(x, y):
    if x is None or y is None:
      return x is None and y is None
    return x.strip() == y.strip() or math_reward.is_equivalent(y, x)

  return same


def evaluate(
  params: PyTree,
  eval_set: EvalSet,
  sampler,
  pool,
  rc,
  *,
  batch_size: int,
  decode,
  rng: jax.Array | None = None,
) -> tuple[dict[str, float], list[dict]]:
  """(metrics, per-problem records of this process) of K attempts per held-out problem.

  Args:
    params: policy params placed for `sampler` (setup_lib.sampler_params).
    eval_set: the held-out problems.
    sampler: the jitted sampler.
    pool: the reward pool (math/code checks).
    rc: rollout.RolloutConfig, normally greedy with samples_per_prompt=1.
    batch_size: problems per sampler call on this process.
    decode: tokenizer.decode.
    rng: sampling key (unused by greedy decoding).
  """
  if rc.samples_per_prompt != 1:
    raise ValueError(f"evaluate: samples_per_prompt must be 1, got {rc.samples_per_prompt}")
  n, procs, me = len(eval_set.examples), jax.process_count(), jax.process_index()
  chunk = batch_size * procs
  padded = -(-n // chunk) * chunk
  order = np.arange(padded) % n  # padding repeats early problems; cut before the metrics
  per_proc = padded // procs
  mine = order[me * per_proc : (me + 1) * per_proc]
  rng = jax.random.key(0) if rng is None else rng
  equal = answers_equal(eval_set.task.kind)
  correct, changed, edit, outs, recs = [], [], [], [], []
  for start in range(0, per_proc, batch_size):
    idx = mine[start : start + batch_size]
    ep = rollout.run_episodes(
      sampler,
      params,
      [eval_set.prompt_ids[i] for i in idx],
      eval_set.instruction,
      rc,
      rng,
      row_offset=me * per_proc + start,
      reserve_instruction_len=len(eval_set.instruction),
      decode=decode,
    )
    exs = [eval_set.examples[i] for i in idx]
    rewards, outcomes, _ = tasks.score_attempts(pool, eval_set.task, exs, ep.texts)
    correct.append(rewards > 0)
    outs.append(outcomes)
    for i, (ex, texts) in enumerate(zip(exs, ep.texts)):
      answers = [eval_set.task.final_answer(t) for t in texts]
      # A K=1 run has no pair of attempts: a dummy column keeps the arrays rectangular.
      changed.append([not equal(a, b) for a, b in zip(answers, answers[1:])] or [False])
      edit.append(metrics.edit_distance_ratios(texts[:-1], texts[1:]) if len(texts) > 1 else [0.0])
      recs.append(
        {
          "id": ex.id,
          "attempts": texts,
          "answers": answers,
          "rewards": rewards[i].tolist(),
          "outcomes": outcomes[i].tolist(),
        }
      )
  gathered = [hosts.allgather(np.asarray(x, np.float64)) for x in (correct, changed, edit, outs)]
  keep = np.concatenate([order[p * per_proc : (p + 1) * per_proc] for p in range(procs)])
  first = np.unique(keep, return_index=True)[1]  # each problem once (drop the padding repeats)
  correct_ba, changed_ba, edit_ba, outcome_ba = (x.reshape(padded, -1)[first] for x in gathered)
  out = metrics.self_correction_metrics(correct_ba > 0)
  if correct_ba.shape[1] > 1:
    out["answer_change_rate"] = float(changed_ba[:, 0].mean())
    out["edit_distance_ratio"] = float(edit_ba[:, 0].mean())
  out["num_examples"] = float(n)
  # 95% intervals over problems (a resample of which problems were drawn), for tables with CIs.
  for name, iv in confidence.bootstrap_intervals(correct_ba > 0, num_resamples=2000).items():
    out[f"{name}_ci95_low"], out[f"{name}_ci95_high"] = iv.low, iv.high
  for o in Outcome:
    out[f"outcomes/{o.name.lower()}"] = float(np.sum(outcome_ba == int(o)))
  return out, recs


def _pick_step(ckpt: checkpoint_lib.Checkpointer, which: str) -> int:
  step = {"best": ckpt.best_step, "latest": ckpt.latest_step}.get(which, lambda: int(which))()
  if which == "best" and step is None:
    step = ckpt.latest_step()
  if step is None:
    raise FileNotFoundError(f"{ckpt.directory}: no complete checkpoint to evaluate")
  return step


def run(config, workdir: str, pool=None) -> dict[str, float]:
  """The 'evaluate' job: eval.checkpoint (best | latest | step) of `workdir` -> eval JSON."""
  mesh, sampler_mesh = setup_lib.make_meshes(config)
  setup_lib.check_process_batch(config, sampler_mesh)
  model_cfg, base, tok = setup_lib.load_base(config, workdir, mesh)
  template = setup_lib.chat_template(config, model_cfg, tok)
  eval_set = make_eval_set(config, tok, template)
  optimizer = optim.make_optimizer(setup_lib.optim_config(config))
  abstract = optim.abstract_train_state(model_cfg, optimizer, mesh)
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  step = _pick_step(ckpt, config.eval.checkpoint)
  state, _ = ckpt.restore(step, abstract)
  ckpt.close()
  del base
  sampler = setup_lib.make_sampler(config, model_cfg, sampler_mesh, tok.pad_id)
  rc = setup_lib.rollout_config(
    config,
    template.stop_ids(tok),
    greedy=config.eval.greedy,
    num_attempts=config.eval.num_attempts,
    max_new=config.eval.max_new_tokens,
  )
  if not config.eval.greedy:
    rc = dataclasses.replace(rc, samples_per_prompt=1)
  with factory.reward_pool(config, pool) as pool:
    params = setup_lib.sampler_params(state.params, mesh, sampler_mesh)
    out, recs = evaluate(
      params,
      eval_set,
      sampler,
      pool,
      rc,
      batch_size=config.eval.batch_size,
      decode=tok.decode,
      rng=jax.random.key(config.seed),
    )
  out["step"] = float(step)
  if jax.process_index() == 0:
    path = os.path.join(workdir, f"eval_{step}.json")
    with open(path + ".tmp", "w") as f:
      json.dump({"metrics": out, "episodes": recs}, f, indent=1)
    os.replace(path + ".tmp", path)
    logging.info("evaluation of step %d: %s -> %s", step, out, path)
  return out
