"""Held-out evaluation: K-attempt episodes -> the paper's self-correction metrics.

`evaluate(params, eval_set, ...)` samples K attempts per problem (greedy, the paper's protocol:
temperature 0), scores each attempt, and reports Acc@t1..K, Delta(t1,t2), Delta i->c / c->i
(fractions of ALL problems), the answer-change rate and the mean edit-distance ratio between
consecutive attempts (Figure 5), and 95% bootstrap intervals over problems of each accuracy and
delta (`<metric>_ci95_low/high`, trainer.confidence). `evaluate_episodes` does the same for
episodes from any sampling function (e.g. first attempts from another model). Problems are
split over processes; metrics and records are all-gathered (trainer.problem_batches).

The evaluation suite (what the 'evaluate' job and the end of training run) is trainer.suite.
"""

import dataclasses
import json
from collections.abc import Callable, Sequence

import jax
import numpy as np
from absl import logging

from score_jax import tasks
from score_jax.data import records
from score_jax.generation import rollout
from score_jax.rewards import math_reward
from score_jax.rewards.outcome import Outcome
from score_jax.rl import algorithms
from score_jax.trainer import confidence, metrics, problem_batches
from score_jax.trainer import setup as setup_lib

# (prompt ids of a batch, RNG row offset) -> the batch's episodes.
SampleFn = Callable[[list[list[int]], int], rollout.Episodes]


@dataclasses.dataclass
class EvalSet:
  """A held-out split, tokenized: problems, their prompt ids and the second-turn instruction."""

  task: tasks.Task
  examples: list[records.Example]
  prompt_ids: list[list[int]]
  instruction: list[int]
  which: str = "correction"  # which second-turn prompt (tasks.Task.instruction)

  def first(self, n: int) -> "EvalSet":
    """The first n problems (all of them when n is 0 or larger than the set)."""
    n = n or len(self.examples)
    return dataclasses.replace(self, examples=self.examples[:n], prompt_ids=self.prompt_ids[:n])


def make_eval_set(config, tok, template) -> EvalSet:
  """The first `eval.num_examples` problems of the held-out task (config.data.eval_task).

  The second turn is the instruction config.rl.method is evaluated with: SCoRe's correction
  instruction, or Self-Refine's critique-then-revise prompt for the self_refine method.
  """
  d = config.data
  task = tasks.load_task(d.eval_task or d.task, d.eval_split, d.eval_path, d.procedural_size)
  system = d.system or None
  examples, ids = tasks.encode_prompts(task, tok, template, system, config.rollout.max_prompt_len)
  which = algorithms.method(config.rl.method).instruction
  instruction = template.next_turn_ids(tok, task.instruction(which))
  setup_lib.check_instruction(config, instruction, task.name)
  return EvalSet(task, examples, ids, instruction, which).first(config.eval.num_examples)


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
  params,
  eval_set: EvalSet,
  sampler,
  pool,
  rc,
  *,
  batch_size: int,
  decode,
  rng: jax.Array | None = None,
) -> tuple[dict[str, float], list[dict]]:
  """(metrics, per-problem records of every process) of K attempts per held-out problem.

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
  rng = jax.random.key(0) if rng is None else rng
  reserve = len(eval_set.instruction)

  def sample(prompts, row):
    return rollout.run_episodes(
      sampler,
      params,
      prompts,
      eval_set.instruction,
      rc,
      rng,
      row_offset=row,
      reserve_instruction_len=reserve,
      decode=decode,
    )

  return evaluate_episodes(eval_set, pool, sample, batch_size=batch_size)


def evaluate_episodes(
  eval_set: EvalSet, pool, sample: SampleFn, *, batch_size: int
) -> tuple[dict[str, float], list[dict]]:
  """`evaluate`'s metrics and records for episodes from `sample` (one episode per problem)."""
  equal = answers_equal(eval_set.task.kind)

  def batch(idx, row):
    exs = [eval_set.examples[i] for i in idx]
    # This process's log file says which problems it took (positions >= n repeat early ones).
    logging.info("eval problems from position %d: %s", row, json.dumps([ex.id for ex in exs]))
    ep = sample([eval_set.prompt_ids[i] for i in idx], row)
    rewards, outcomes, _ = tasks.score_attempts(pool, eval_set.task, exs, ep.texts)
    recs = [
      episode_record(ex, texts, eval_set.task, rewards[i], outcomes[i])
      for i, (ex, texts) in enumerate(zip(exs, ep.texts))
    ]
    # Attempts 1 vs 2 (Figure 5); a K=1 run has no pair and reports neither.
    changed = [len(r["answers"]) > 1 and not equal(*r["answers"][:2]) for r in recs]
    edit = [r["edit_ratio"] or 0.0 for r in recs]
    return (rewards > 0, changed, edit, outcomes), recs

  (correct_ba, changed_ba, edit_ba, outcome_ba), recs = problem_batches.map_problems(
    len(eval_set.examples), batch_size, batch
  )
  out = summarize(correct_ba > 0)
  if correct_ba.shape[1] > 1:
    out["answer_change_rate"] = float(changed_ba.mean())
    out["edit_distance_ratio"] = float(edit_ba.mean())
  for o in Outcome:
    out[f"outcomes/{o.name.lower()}"] = float(np.sum(outcome_ba == int(o)))
  return out, recs


def summarize(correct_ba: np.ndarray) -> dict[str, float]:
  """Self-correction metrics, num_examples and 95% bootstrap intervals over problems."""
  out = metrics.self_correction_metrics(correct_ba)
  out["num_examples"] = float(len(correct_ba))
  # 95% intervals over problems (a resample of which problems were drawn), for tables with CIs.
  for name, iv in confidence.bootstrap_intervals(correct_ba, num_resamples=2000).items():
    out[f"{name}_ci95_low"], out[f"{name}_ci95_high"] = iv.low, iv.high
  return out


def episode_record(
  example: records.Example, texts: Sequence[str], task: tasks.Task, rewards, outcomes
) -> dict:
  """One problem's episode as the eval JSON stores it (edit_ratio: attempt 1 vs 2, or None)."""
  answers = [task.final_answer(t) for t in texts]
  ratio = metrics.edit_distance_ratio(texts[0], texts[1]) if len(texts) > 1 else None
  return {
    "id": example.id,
    "attempts": list(texts),
    "answers": answers,
    "rewards": np.asarray(rewards).tolist(),
    "outcomes": np.asarray(outcomes).tolist(),
    "edit_ratio": ratio,
  }
