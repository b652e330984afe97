"""Repairing fixed first attempts: the MBPP-R stand-in (the paper's PaLM 2 repair set is not
public), the 'repair_set' job that builds one, and the suite's `repair` evaluation.

A repair set is a JSONL file of {"id", "program"} rows: a problem of the eval task and a first
attempt that fails it ("program" is the attempt's text as the model is shown it; a bare program
works too). `build_repair_set` writes the base model's failing greedy first attempts (wrong or
timed out; a checker ERROR says nothing about the program and is left out) with a sidecar
`<file>.meta.json` saying how it was built. `repair` shows each row's program as the evaluated
model's own closed attempt 1, appends the second-turn instruction and scores its greedy
attempt 2: repair accuracy = the fraction that pass.

  python -m score_jax.main --config=experiments/score_code.py --config.job=repair_set \
      --config.data.eval_task=mbpp --config.data.eval_split=test --config.eval.num_examples=0 \
      --config.model.checkpoint=/path/to/base --workdir=DIR   # -> DIR/repair_set.jsonl
"""

import datetime
import json
import os

import jax

from score_jax import configs, storage, tasks
from score_jax.data import records
from score_jax.generation import rollout
from score_jax.rewards import factory
from score_jax.rewards.outcome import Outcome
from score_jax.trainer import confidence, console, eval_context, problem_batches
from score_jax.trainer import evaluate as evaluate_lib
from score_jax.trainer import setup as setup_lib

KEPT = (int(Outcome.WRONG), int(Outcome.TIMEOUT))  # first attempts that fail their tests


def meta_path(path: str) -> str:
  """The sidecar that says how a repair set was built."""
  return path + ".meta.json"


def load_repair_set(path: str) -> tuple[list[tuple[int, str, str]], dict]:
  """((line, id, program) rows, sidecar metadata or {}); errors name the file and line."""
  if not path:
    raise configs.ConfigError(
      "config.eval.repair_set is empty: the repair evaluation needs a repair set (build one "
      "with --config.job=repair_set)."
    )
  if not storage.isfile(path):
    raise FileNotFoundError(f"{path}: repair set not found (config.eval.repair_set)")
  rows, seen = [], set()
  with storage.open_file(path) as f:
    for line, text in enumerate(f, 1):
      if not text.strip():
        continue
      try:
        row = json.loads(text)
      except json.JSONDecodeError as e:
        raise records.DataFormatError(f"{path}:{line}: not JSON ({e})") from e
      # An empty program is a real failing attempt (a model that answered nothing); kept.
      if not (
        isinstance(row, dict) and all(isinstance(row.get(k), str) for k in ("id", "program"))
      ):
        raise records.DataFormatError(
          f"{path}:{line}: expected an object with strings 'id' and 'program'"
        )
      if row["id"] in seen:
        raise records.DataFormatError(f"{path}:{line}: id {row['id']!r} appears twice")
      seen.add(row["id"])
      rows.append((line, row["id"], row["program"]))
  if not rows:
    raise records.DataFormatError(f"{path}: no rows (expected JSONL of {{'id', 'program'}})")
  meta = {}
  if storage.isfile(meta_path(path)):
    meta = json.loads(storage.read_text(meta_path(path)))
  return rows, meta


def build_repair_set(config, out_path: str, *, workdir: str = "", pool=None) -> dict:
  """Writes the base model's failing greedy first attempts on the eval task; returns the meta.

  Problems: the first eval.num_examples of data.eval_task / data.eval_split (0 = all). The
  workdir holds a trained tokenizer if the config trains one (default: out_path's folder).
  """
  workdir = workdir or os.path.dirname(storage.absolute(out_path))
  with factory.reward_pool(config, pool) as pool:
    ctx = eval_context.build(config, workdir, pool, 0, eval_context.BASE, need_base=False)
    rc = ctx.rollout_config(1, temperature=0.0)  # greedy, whatever eval.greedy says
    out, recs = evaluate_lib.evaluate(
      ctx.params,
      ctx.eval_set,
      ctx.sampler,
      pool,
      rc,
      batch_size=config.eval.batch_size,
      decode=ctx.tok.decode,
    )
  rows = [{"id": r["id"], "program": r["attempts"][0]} for r in recs if r["outcomes"][0] in KEPT]
  m = config.model
  meta = {
    "task": ctx.eval_set.task.name,
    "split": config.data.eval_split,
    "model_checkpoint": m.checkpoint or f"random init of {m.preset} (seed {config.seed})",
    "model_preset": m.preset,
    "tokenizer": str(ctx.tok.source),
    "chat_template": ctx.template.name,
    "max_new_tokens": rc.max_new_tokens,
    "num_problems": len(recs),
    "count": len(rows),
    "acc@t1": out["acc@t1"],
    "kept": "greedy attempt 1 of the base model that failed (outcome wrong or timeout)",
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
  if jax.process_index() == 0:
    storage.write_atomic(out_path, "".join(json.dumps(r) + "\n" for r in rows))
    storage.write_atomic(meta_path(out_path), json.dumps(meta, indent=1))
  return meta


def run(config, workdir: str, pool=None) -> dict:
  """The 'repair_set' job: eval.repair_out ("" = WORKDIR/repair_set.jsonl)."""
  out = config.eval.repair_out or os.path.join(workdir, "repair_set.jsonl")
  meta = build_repair_set(config, out, workdir=workdir, pool=pool)
  console.result("repair set", {"rows": meta["count"], "of": meta["num_problems"], "path": out})
  return meta


def _problems(ctx, rows, meta, path):
  """(task, examples in row order) of a repair set: the task and split its sidecar names, else
  the config's eval task and split."""
  d = ctx.config.data
  own = d.eval_task or d.task
  name, split = meta.get("task") or own, meta.get("split") or d.eval_split
  task = tasks.load_task(name, split, d.eval_path if name == own else "", d.procedural_size)
  by_id = {ex.id: ex for ex in task.examples}
  for line, pid, _ in rows:
    if pid not in by_id:
      raise records.DataFormatError(
        f"{path}:{line}: id {pid!r} is not a problem of task {name!r} split {split!r}"
      )
  return task, [by_id[pid] for _, pid, _ in rows]


def repair_prompt(tok, template, question: str, program: str, instruction, system=None):
  """Ids of [user question][model: program, closed][instruction ids] (`next_turn_ids`): the
  fixed attempt is a closed model turn, exactly as the template renders the conversation."""
  program = program.strip() if template.trim_content else program
  return (
    template.first_turn_ids(tok, question, system)
    + tok.encode(program)
    + template.close_turn_ids(tok)
    + list(instruction)
  )


def repair(ctx: eval_context.Context) -> dict:
  """Greedy attempt 2 after each fixed first attempt of eval.repair_set."""
  c, tok, template = ctx.config, ctx.tok, ctx.template
  path = c.eval.repair_set
  rows, meta = load_repair_set(path)
  task, examples = _problems(ctx, rows, meta, path)
  instruction = template.next_turn_ids(tok, task.instruction(ctx.eval_set.which))
  setup_lib.check_instruction(c, instruction, task.name)
  system = c.data.system or None
  prompts = [
    repair_prompt(tok, template, task.first_turn(ex), program, instruction, system)
    for ex, (_, _, program) in zip(examples, rows)
  ]
  ctx.check_continued_prompts([len(p) for p in prompts], "repair")
  rc, rng = ctx.rollout_config(2), ctx.rng(6)

  def batch(idx, pos):
    exs = [examples[i] for i in idx]
    ep = rollout.run_episodes(
      ctx.sampler,
      ctx.params,
      [prompts[i] for i in idx],
      instruction,
      rc,
      rng,
      row_offset=pos,
      reserve_instruction_len=len(instruction),
      decode=tok.decode,
      first_attempt=2,
    )
    rewards, outcomes, _ = tasks.score_attempts(ctx.pool, task, exs, ep.texts)
    recs = [
      {"id": ex.id, "attempt": t[0], "reward": float(r[0]), "outcome": int(o[0])}
      for ex, t, r, o in zip(exs, ep.texts, rewards, outcomes)
    ]
    return [rewards[:, 0] > 0], recs

  (ok,), recs = problem_batches.map_problems(len(rows), c.eval.batch_size, batch)
  iv = confidence.bootstrap_intervals(ok[:, None] > 0.5, num_resamples=2000)["acc@t1"]
  return {
    "repair_accuracy": float(ok.mean()),
    "ci95": [iv.low, iv.high],
    "num_examples": len(rows),
    "repair_set": path,
    "episodes": recs,
  }
