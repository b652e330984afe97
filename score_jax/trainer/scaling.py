"""The suite's sampled evaluations: self-consistency scaling (Figure 1 right) and pass@k.

- `scaling`: at eval.scaling_temperature, for each budget B of eval.scaling_budgets, "parallel"
  = majority vote over B independent first attempts, "sequential" = majority vote over the
  second attempts of B/2 independent episodes (attempt 1 then one correction). Both are sampled
  once at the largest budget; a smaller budget votes over a prefix of the same samples, so the
  curves are nested and cost one sampling pass each.
- `pass_at_k`: eval.pass_samples two-attempt episodes per problem at eval.pass_temperature; the
  unbiased pass@k (metrics.pass_at_k) of attempt 1 and of attempt 2 for each k of eval.pass_k.

Each returns the JSON payload trainer.suite writes (without "step", which the suite adds).
Shape letters: p problems, n samples per problem, a attempts, j budgets.
"""

from collections.abc import Callable

import numpy as np

from score_jax import tasks
from score_jax.generation import rollout
from score_jax.trainer import confidence, eval_context, metrics, problem_batches
from score_jax.trainer import evaluate as evaluate_lib

# Per-problem result of n sampled episodes: (rewards [n, a], final answers [n][a]) -> row.
PerProblem = Callable[[np.ndarray, list[list[str | None]]], list]


def sample_problems(
  ctx: eval_context.Context, eval_set, rc: rollout.RolloutConfig, salt: int, per_problem
) -> np.ndarray:
  """[p, ...] rows of `per_problem` over rc.samples_per_prompt episodes of each problem."""
  n, task = rc.samples_per_prompt, eval_set.task
  rng = ctx.rng(salt)

  def batch(idx, pos):
    ep = rollout.run_episodes(
      ctx.sampler,
      ctx.params,
      [eval_set.prompt_ids[i] for i in idx],
      eval_set.instruction,
      rc,
      rng,
      row_offset=pos * n,  # each problem's n rows keep their own RNG ids
      reserve_instruction_len=len(eval_set.instruction),
      decode=ctx.tok.decode,
    )
    exs = [eval_set.examples[i] for i in idx for _ in range(n)]  # prompt-major, as sampled
    rewards, _, _ = tasks.score_attempts(ctx.pool, task, exs, ep.texts)
    answers = [[task.final_answer(t) for t in row] for row in ep.texts]
    rows = [
      per_problem(rewards[q * n : (q + 1) * n], answers[q * n : (q + 1) * n])
      for q in range(len(idx))
    ]
    return [np.asarray(rows, np.float64)], []

  per_call = problem_batches.problems_per_call(ctx.config.eval.batch_size, n, ctx.shards)
  (out,), _ = problem_batches.map_problems(len(eval_set.examples), per_call, batch)
  return out


def budget_votes(answers, correct, takes, equal) -> list[bool]:
  """Majority-vote correctness over the first `t` samples, for each t of `takes`."""
  groups = metrics.vote_groups(answers, equal)
  ok = np.asarray(correct, bool)
  return [metrics.majority_vote(groups[:t], ok[:t]) for t in takes]


def scaling(ctx: eval_context.Context) -> dict:
  """Parallel vs sequential self-consistency at each budget of eval.scaling_budgets."""
  c = ctx.config
  budgets = [int(b) for b in c.eval.scaling_budgets]
  top, temp = max(budgets), float(c.eval.scaling_temperature)
  eval_set = ctx.eval_set.first(c.eval.curve_problems)
  equal = evaluate_lib.answers_equal(eval_set.task.kind)

  def parallel(rewards_na, answers_na):
    return budget_votes([a[0] for a in answers_na], rewards_na[:, 0] > 0, budgets, equal)

  def sequential(rewards_na, answers_na):
    takes = [b // 2 for b in budgets]
    return budget_votes([a[1] for a in answers_na], rewards_na[:, 1] > 0, takes, equal)

  rc_par = ctx.rollout_config(1, temperature=temp, samples=top)
  rc_seq = ctx.rollout_config(2, temperature=temp, samples=top // 2)
  par_pj = sample_problems(ctx, eval_set, rc_par, 3, parallel)
  seq_pj = sample_problems(ctx, eval_set, rc_seq, 4, sequential)
  out = {"temperature": temp, "budgets": budgets}
  for name, x_pj in (("parallel", par_pj), ("sequential", seq_pj)):
    out[name] = [float(v) for v in x_pj.mean(axis=0)]
    out[f"{name}_ci95"] = column_intervals(x_pj > 0.5)
  out["num_examples"] = len(eval_set.examples)
  # Per problem, for paired comparisons at a matched budget (testbed.findings' vote2).
  out["per_problem"] = {
    "ids": [ex.id for ex in eval_set.examples],
    "parallel": (par_pj > 0.5).tolist(),
    "sequential": (seq_pj > 0.5).tolist(),
  }
  return out


def column_intervals(x_pj: np.ndarray) -> list[list[float]]:
  """95% bootstrap interval over problems of each column's accuracy."""
  iv = confidence.bootstrap_intervals(x_pj, num_resamples=2000)
  return [[iv[f"acc@t{j + 1}"].low, iv[f"acc@t{j + 1}"].high] for j in range(x_pj.shape[1])]


def pass_at_k(ctx: eval_context.Context) -> dict:
  """Unbiased pass@k of attempts 1 and 2 from eval.pass_samples episodes per problem."""
  c = ctx.config
  n, ks = int(c.eval.pass_samples), [int(k) for k in c.eval.pass_k]
  eval_set = ctx.eval_set.first(c.eval.curve_problems)
  rc = ctx.rollout_config(2, temperature=float(c.eval.pass_temperature), samples=n)
  counts_pa = sample_problems(ctx, eval_set, rc, 5, lambda r, _: (r > 0).sum(axis=0).tolist())
  out = {"n": n}
  for a in range(2):
    counts = counts_pa[:, a].astype(int)
    out[f"pass@k_t{a + 1}"] = {
      str(k): float(np.mean([metrics.pass_at_k(n, int(x), k) for x in counts])) for k in ks
    }
  out["num_examples"] = len(eval_set.examples)
  return out
