"""The suite's greedy self-correction evaluations: final, attempts (Figure 8), fixed_first (Fig. 4).

- `final`: eval.num_attempts attempts on the held-out set: the paper's table row with 95%
  intervals, the correction rate of the model's own first attempts, MATH's per-level metrics
  (Figure 7) and every episode.
- `attempts`: eval.curve_attempts attempts on eval.curve_problems problems: Acc@t1..tK.
- `fixed_first`: attempt 1 from the BASE model, attempt 2 from the evaluated model: how well it
  corrects first attempts it did not write (the distribution shift of Figure 4).
- `forced_check`: the evaluated model's own attempt 1, then an attempt 2 made to open with
  eval.forced_prefix (a check's opening): the upper bounds of correction, how often a forced
  check fixes a wrong first attempt and keeps a right one.

Each returns the JSON payload trainer.suite writes (without "step", which the suite adds).
"""

import dataclasses
import functools

import numpy as np

from score_jax import configs
from score_jax.generation import offline, rollout
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


def forced_check(ctx: eval_context.Context) -> dict:
  """Greedy attempt 1, then a greedy attempt 2 that opens with eval.forced_prefix."""
  c, eval_set = ctx.config, ctx.eval_set
  if not c.eval.forced_prefix:
    raise configs.ConfigError("config.eval.forced_prefix: empty; forced_check needs the opening.")
  rc = ctx.rollout_config(2)
  prefix = list(ctx.tok.encode(c.eval.forced_prefix))
  close = ctx.template.close_turn_ids(ctx.tok)
  extra = rc.max_new_tokens + len(close) + len(eval_set.instruction) + len(prefix)
  ctx.check_continued_prompts([len(p) + extra for p in eval_set.prompt_ids], "forced_check")
  common = dict(reserve_instruction_len=len(eval_set.instruction), decode=ctx.tok.decode)
  run = functools.partial(rollout.run_episodes, ctx.sampler, ctx.params, **common)
  stops = set(rc.stop_ids)

  def sample(prompts, row):
    first = run(
      prompts,
      eval_set.instruction,
      dataclasses.replace(rc, num_attempts=1),
      ctx.rng(3),
      row_offset=row,
    )
    continued = [
      list(prompts[first.prompt_index[r]])
      + first.attempt_tokens[r][0]
      + (list(close) if first.truncated[r, 0] else [])
      + list(eval_set.instruction)
      + prefix
      for r in range(len(first.prompt_index))
    ]
    second = run(continued, eval_set.instruction, rc, ctx.rng(4), row_offset=row, first_attempt=2)
    texts = [
      [a[0], ctx.tok.decode(prefix + [t for t in toks[0] if t not in stops])]
      for a, toks in zip(first.texts, second.attempt_tokens)
    ]
    return dataclasses.replace(first, texts=texts)

  out, recs = evaluate_lib.evaluate_episodes(
    eval_set, ctx.pool, sample, batch_size=c.eval.batch_size
  )
  correct = _correct(recs)
  wrong, right = ~correct[:, 0], correct[:, 0]
  m = {k: out[k] for k in FIXED_FIRST_KEYS}
  # None (JSON null) where no first attempt is wrong (or right): the rate is undefined there.
  m["forced_fix_rate"] = float(correct[wrong, 1].mean()) if wrong.any() else None
  m["forced_keep_rate"] = float(correct[right, 1].mean()) if right.any() else None
  m["num_wrong_first"], m["num_right_first"] = int(wrong.sum()), int(right.sum())
  m["num_examples"] = out["num_examples"]
  return {"prefix": c.eval.forced_prefix, "metrics": m, "episodes": recs}


def _correct(recs) -> np.ndarray:
  return np.array([r["rewards"] for r in recs]) > 0
