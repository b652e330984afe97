"""The suite's greedy self-correction evaluations: final, attempts (Figure 8), fixed_first (Fig. 4).

- `final`: eval.num_attempts attempts on the held-out set: the paper's table row with 95%
  intervals, the correction rate of the model's own first attempts, MATH's per-level metrics
  (Figure 7) and every episode.
- `attempts`: eval.curve_attempts attempts on eval.curve_problems problems: Acc@t1..tK.
- `fixed_first`: attempt 1 from the BASE model, attempt 2 from the evaluated model: how well it
  corrects first attempts it did not write (the distribution shift of Figure 4).

Each returns the JSON payload trainer.suite writes (without "step", which the suite adds).
"""

import functools

import numpy as np

from score_jax.generation import offline
from score_jax.trainer import eval_context, metrics
from score_jax.trainer import evaluate as evaluate_lib

FIXED_FIRST_KEYS = ("acc@t1", "acc@t2", "delta(t1,t2)", "delta_i->c(t1,t2)", "delta_c->i(t1,t2)")


def final(ctx: eval_context.Context) -> dict:
  """Greedy eval.num_attempts attempts on eval.num_examples problems."""
  c = ctx.config
  rc = ctx.rollout_config(c.eval.num_attempts)
  out, recs = evaluate_lib.evaluate(
    ctx.params,
    ctx.eval_set,
    ctx.sampler,
    ctx.pool,
    rc,
    batch_size=c.eval.batch_size,
    decode=ctx.tok.decode,
    rng=ctx.rng(0),
  )
  correct_ba = _correct(recs)
  if correct_ba.shape[1] > 1:
    out["own_correction_rate"] = metrics.correction_rate(correct_ba)
  payload = {
    "checkpoint": ctx.checkpoint,
    "method": ctx.method.name,
    "instruction": ctx.eval_set.which,
    "metrics": out,
  }
  levels = [ex.metadata.get("level", "absent") for ex in ctx.eval_set.examples]
  if "absent" not in levels:
    payload["per_level"] = metrics.per_level_metrics(correct_ba, levels)
  payload["episodes"] = recs
  return payload


def attempts(ctx: eval_context.Context) -> dict:
  """Greedy eval.curve_attempts attempts on eval.curve_problems problems (0 = eval.num_examples)."""
  c = ctx.config
  k = c.eval.curve_attempts
  eval_set = ctx.eval_set.first(c.eval.curve_problems)
  rc = ctx.rollout_config(k)
  ctx.check_attempts(rc, eval_set.prompt_ids, "eval.curve_attempts")
  out, _ = evaluate_lib.evaluate(
    ctx.params,
    eval_set,
    ctx.sampler,
    ctx.pool,
    rc,
    batch_size=c.eval.batch_size,
    decode=ctx.tok.decode,
    rng=ctx.rng(1),
  )
  keep = [f"acc@t{j}{s}" for j in range(1, k + 1) for s in ("", "_ci95_low", "_ci95_high")]
  m = {n: out[n] for n in keep}
  m["num_examples"] = out["num_examples"]
  return {"num_attempts": k, "metrics": m}


def fixed_first(ctx: eval_context.Context) -> dict:
  """The base model's greedy attempt 1, then the evaluated model's greedy attempt 2."""
  c, eval_set = ctx.config, ctx.eval_set
  rc = ctx.rollout_config(2)
  close = ctx.template.close_turn_ids(ctx.tok)
  extra = rc.max_new_tokens + len(close) + len(eval_set.instruction)
  ctx.check_continued_prompts([len(p) + extra for p in eval_set.prompt_ids], "fixed_first")
  common = dict(reserve_instruction_len=len(eval_set.instruction), decode=ctx.tok.decode)
  cont = functools.partial(offline.continue_base_attempts, ctx.sampler, ctx.params, ctx.base_params)

  def sample(prompts, row):
    return cont(prompts, eval_set.instruction, rc, ctx.rng(2), row, common)

  out, recs = evaluate_lib.evaluate_episodes(
    eval_set, ctx.pool, sample, batch_size=c.eval.batch_size
  )
  m = {k: out[k] for k in FIXED_FIRST_KEYS}
  m["correction_rate"] = metrics.correction_rate(_correct(recs))
  m["num_examples"] = out["num_examples"]
  return {"metrics": m, "episodes": recs}


def _correct(recs) -> np.ndarray:
  return np.array([r["rewards"] for r in recs]) > 0
