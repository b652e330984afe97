"""The SCoRe outer loop: sample K-attempt episodes, score them, update, log, evaluate, checkpoint.

  python -m score_jax.main --config=experiments/score_math.py:tiny --workdir=/tmp/score

One step: this process's slice of the global prompt batch -> K attempts
per episode on one continuing KV cache (optionally with Stage II first attempts sampled from the
base model) -> rewards from the pool -> the batch (turn ids, loss mask, rewards_ba, global
normalizer) placed on the mesh -> the stage's jitted update. No loss math lives here.

Resume is exact: the checkpoint holds params, optimizer state, the loop step, the data
iterator's state and the adaptive beta2; the step's RNG is fold_in(root, step) and every
sampled row's key comes from its global row index, so a rerun draws the same samples and ends
with bitwise-identical params. SIGTERM saves and exits cleanly.
"""

import dataclasses
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from score_jax.data import iterators
from score_jax.generation import rollout
from score_jax.parallel import hosts
from score_jax.rewards import factory
from score_jax.rewards.outcome import Outcome
from score_jax.rl import kl, losses, optim
from score_jax.rl import steps as steps_lib
from score_jax.tasks import tasks as episodes
from score_jax.trainer import checkpoint as checkpoint_lib
from score_jax.trainer import evaluate as evaluate_lib
from score_jax.trainer import metric_writers, metrics
from score_jax.trainer import setup as train_lib

PyTree = Any
ROWS = jax.sharding.PartitionSpec(("data", "fsdp"))


class NonFiniteError(FloatingPointError):
  """The loss or gradient was not finite and train.on_nonfinite is 'stop'."""


def _rollout(ctx, params, ref_params, pids, rng, row_offset):
  """Episodes for this process's prompts; the last k prompts get base-model first attempts."""
  sampler, rc, instr = ctx["sampler"], ctx["rc"], ctx["instruction"]
  common = dict(reserve_instruction_len=len(instr), decode=ctx["tok"].decode)
  k = ctx["offline_k"] if ctx["stage"] == "stage2" else 0
  on, off = pids[: len(pids) - k], pids[len(pids) - k :]
  g = rc.samples_per_prompt
  parts = []
  if on:
    rng_on = jax.random.fold_in(rng, 0)
    parts.append(rollout.run_episodes(sampler, params, on, instr, rc, rng_on, row_offset=row_offset, **common))  # fmt: skip
  if off:
    # Paper 2.5: the base model's first attempts become part of the prompt of online attempt 2.
    rc1 = dataclasses.replace(rc, num_attempts=1)
    off_row = row_offset + len(on) * g
    first = rollout.run_episodes(sampler, ref_params, off, instr, rc1, jax.random.fold_in(rng, 1), row_offset=off_row, **common)  # fmt: skip
    cont = [
      list(off[first.prompt_index[r]]) + first.attempt_tokens[r][0] + list(instr)
      for r in range(len(first.prompt_index))
    ]
    rc2 = dataclasses.replace(rc, samples_per_prompt=1)
    second = rollout.run_episodes(sampler, params, cont, instr, rc2, jax.random.fold_in(rng, 2), row_offset=off_row, first_attempt=2, **common)  # fmt: skip
    second.prompt_index = first.prompt_index
    second.attempt_tokens = [a + b for a, b in zip(first.attempt_tokens, second.attempt_tokens)]
    second.texts = [a + b for a, b in zip(first.texts, second.texts)]
    second.truncated = np.concatenate([first.truncated, second.truncated], axis=1)
    second.lengths = np.concatenate([first.lengths, second.lengths], axis=1)
    parts.append(second)
  return rollout.concat_episodes(parts) if len(parts) > 1 else parts[0]


def _batch(ep, rewards_ba, aggregation: str, mesh) -> dict:
  """The step's batch; several processes: global arrays from each process's rows."""
  local = {f: getattr(ep, f) for f in rollout.STREAM_FIELDS}
  local["rewards"] = rewards_ba
  norm = losses.aggregation_normalizers(ep.loss_mask, aggregation)
  if jax.process_count() == 1:
    return {**local, "normalizer": np.float32(norm)}
  norm = float(hosts.allgather(np.array([norm])).sum())  # all three normalizers are additive
  dtypes = {**steps_lib.STREAM_KEYS, "rewards": np.float32}
  out = {k: hosts.global_array(np.asarray(v, dtypes[k]), mesh, ROWS) for k, v in local.items()}
  out["normalizer"] = hosts.global_array(np.float32(norm), mesh, jax.sharding.PartitionSpec())
  return out


def _host_metrics(ctx, ep, rewards_g, outcomes_g, counts, timer) -> dict[str, float]:
  """Self-correction metrics, lengths, truncation, text diagnostics, throughput, outcomes."""
  out = {f"train/{k}": v for k, v in metrics.self_correction_metrics(rewards_g > 0).items()}
  k = rewards_g.shape[1]
  for a in range(k):
    out[f"train/reward_turn{a + 1}"] = float(rewards_g[:, a].mean())
  lengths = hosts.allgather(ep.lengths)
  trunc = hosts.allgather(ep.truncated)
  for a in range(k):
    out[f"len/turn{a + 1}_mean"] = float(lengths[:, a].mean())
    out[f"len/turn{a + 1}_truncation_rate"] = float(trunc[:, a].mean())
  task = ctx["task"]
  # Training-time answer changes compare extracted answers as text (the eval uses the checker).
  answers = [[task.final_answer(t) for t in row] for row in ep.texts]
  changed = np.array([[(x or "").strip() != (y or "").strip() for x, y in zip(r, r[1:])] for r in answers])  # fmt: skip
  edit = np.stack([metrics.edit_distance_ratios([r[a] for r in ep.texts], [r[a + 1] for r in ep.texts]) for a in range(k - 1)], axis=1)  # fmt: skip
  out["train/answer_change_rate"] = float(hosts.allgather(changed)[:, 0].mean())
  out["train/edit_distance_ratio"] = float(hosts.allgather(edit)[:, 0].mean())
  for name, v in counts.items():
    out[f"outcomes/{name}"] = float(v)
  out.update(timer.summary())
  sampled = float(lengths.sum())
  out["tokens_per_s"] = sampled / max(timer.seconds.get("sampling", 0.0), 1e-9)
  return out


def _save_nonfinite(workdir: str, step: int, batch: dict, m: dict) -> str:
  d = os.path.join(workdir, "nonfinite")
  os.makedirs(d, exist_ok=True)
  me = jax.process_index()
  path = os.path.join(d, f"step_{step}_process_{me}.npz")
  local = {k: (np.asarray(v.addressable_data(0)) if isinstance(v, jax.Array) else np.asarray(v)) for k, v in batch.items()}  # fmt: skip
  np.savez(path, **local)
  with open(os.path.join(d, f"step_{step}_process_{me}.json"), "w") as f:
    json.dump({"step": step, "metrics": {k: float(np.asarray(v)) for k, v in m.items()}}, f, indent=1)  # fmt: skip
  return path


def run(config, workdir: str, pool=None) -> dict[str, float]:
  """Trains with SCoRe per `config` in `workdir`, resuming from its latest checkpoint."""
  with factory.reward_pool(config, pool) as pool:
    return _run(config, workdir, pool)


def _run(config, workdir: str, pool) -> dict[str, float]:
  me, nproc = jax.process_index(), jax.process_count()
  mesh, sampler_mesh = train_lib.make_meshes(config)
  train_lib.check_process_batch(config, sampler_mesh)
  model_cfg, ref_params, tok = train_lib.load_base(config, workdir, mesh)
  template = train_lib.chat_template(config, model_cfg, tok)
  d, r, t = config.data, config.rollout, config.train
  task = episodes.load_task(d.task, d.train_split, d.train_path, d.procedural_size)
  if d.max_train_examples:
    task.examples = task.examples[: d.max_train_examples]
  examples, prompt_ids = episodes.encode_prompts(task, tok, template, d.system or None, r.max_prompt_len)  # fmt: skip
  instruction = template.next_turn_ids(tok, task.correction())
  train_lib.check_instruction(config, instruction, task.name)
  eval_set = evaluate_lib.make_eval_set(config, tok, template)
  g, total = r.num_samples, train_lib.total_steps(config)
  prompts_global = t.global_batch // g
  local_prompts = prompts_global // nproc
  ratio = config.stage2.offline_first_attempt_ratio
  offline_k = rollout.offline_prompt_count(local_prompts, g, train_lib.batch_shards(sampler_mesh), ratio)  # fmt: skip
  if ratio > 0 and max(r.prompt_buckets) < r.max_prompt_len + r.max_new_tokens + len(instruction):
    raise train_lib.config_lib.ConfigError(
      f"config.stage2.offline_first_attempt_ratio = {ratio}: prompts then hold attempt 1, so "
      f"max(config.rollout.prompt_buckets) = {max(r.prompt_buckets)} must reach max_prompt_len + "
      f"max_new_tokens + the instruction ({r.max_prompt_len + r.max_new_tokens + len(instruction)})."
    )
  it = iterators.DataIterator(list(range(len(examples))), prompts_global, config.seed, process_index=me, process_count=nproc)  # fmt: skip
  oc = train_lib.optim_config(config)
  optimizer, schedule = optim.make_optimizer(oc), optim.make_schedule(oc)
  steps_by_beta2: dict[float, steps_lib.Steps] = {}

  def steps_for(beta2: float) -> steps_lib.Steps:
    if beta2 not in steps_by_beta2:
      lc = train_lib.loss_config(config, beta2)
      steps_by_beta2[beta2] = steps_lib.make_steps(model_cfg, lc, optimizer, mesh, t.num_microbatches, schedule)  # fmt: skip
    return steps_by_beta2[beta2]

  base_steps = steps_for(config.stage1.beta2)
  abstract = optim.abstract_train_state(model_cfg, optimizer, mesh)
  c = config.checkpoint
  ckpt = checkpoint_lib.Checkpointer(
    os.path.join(workdir, "checkpoints"), keep=c.keep, keep_best=c.keep_best,
    save_interval_steps=c.every_steps, async_save=c.async_save, best_metric="reward",
    config=json.loads(config.to_json_best_effort()),
  )  # fmt: skip
  restored = ckpt.restore_latest(abstract)
  meta = {"beta2": config.stage1.beta2, "reward_acc": [], "nonfinite_skipped": 0}
  if restored is None:
    # A copy: jit may forward an unchanged input, and the policy state is donated every step.
    params0 = jax.tree.map(jnp.copy, ref_params)
    state = optim.init_train_state(model_cfg, optimizer, mesh, jax.random.key(config.seed), params0)  # fmt: skip
    step = 0
  else:
    state, saved = restored
    meta.update(saved)
    step = int(meta["loop_step"])
    it.restore(meta["data"])
    logging.info("resumed from step %d (%s)", step, ckpt.directory)
  resume = step if restored is not None else None
  writer = metric_writers.MetricWriter(workdir, me, resume_step=resume)
  every_dump = config.log.episodes_every_steps
  dumper = metric_writers.EpisodeDumper(workdir, every_dump, me, resume_step=resume) if every_dump else None  # fmt: skip
  title = "naive multi-turn RL" if config.rl.method == "naive_multiturn" else "SCoRe"
  progress = metric_writers.Progress(total, title, enabled=me == 0)
  guard = checkpoint_lib.PreemptionGuard()
  sampler = train_lib.make_sampler(config, model_cfg, sampler_mesh, tok.pad_id)
  rc = train_lib.rollout_config(config, template.stop_ids(tok))
  eval_rc = train_lib.rollout_config(
    config, template.stop_ids(tok), greedy=True, num_attempts=config.eval.num_attempts,
    max_new=config.eval.max_new_tokens,
  )  # fmt: skip
  ref_sampler_params = train_lib.sampler_params(ref_params, mesh, sampler_mesh)
  ctx = {"sampler": sampler, "rc": rc, "instruction": instruction, "tok": tok, "task": task,
         "offline_k": offline_k}  # fmt: skip
  root = jax.random.key(config.seed)
  timer = metrics.PhaseTimer()
  last: dict[str, float] = {}

  def meta_now(stage, stage_step):
    return {**meta, "loop_step": step, "stage": stage, "stage_step": stage_step, "data": it.state()}

  try:
    while step < total:
      stage, stage_step = train_lib.stage_at(config, step)
      ctx["stage"] = stage
      rng = jax.random.fold_in(root, step)
      timer.reset()
      idx = next(it)
      exs = [examples[i] for i in idx]
      with timer("sampling"):
        params = train_lib.sampler_params(state.params, mesh, sampler_mesh)
        ep = _rollout(ctx, params, ref_sampler_params, [prompt_ids[i] for i in idx], rng, me * local_prompts * g)  # fmt: skip
      with timer("rewards"):
        ep_examples = [exs[i] for i in ep.prompt_index]
        rewards, outcomes, counts = episodes.score_attempts(pool, task, ep_examples, ep.texts)
      if t.stream_multiple:
        ep = rollout.compact_streams(ep, t.stream_multiple)
      if nproc > 1:
        length = int(hosts.allgather(np.array([ep.tokens.shape[1]])).max())
        ep = rollout.pad_streams(ep, length)
      beta2_used = train_lib.quantize_beta2(meta["beta2"]) if config.stage1.adaptive_beta2 else config.stage1.beta2  # fmt: skip
      fns = steps_for(beta2_used) if stage == "stage1" else base_steps
      with timer("update"):
        batch = _batch(ep, rewards, config.rl.aggregation, mesh)
        ref = ref_params
        if step == t.debug_nan_step:  # testing the non-finite guard: a NaN reference
          ref = jax.tree.map(lambda x: x * jnp.nan, ref_params)
        update = {"stage1": fns.stage1, "stage2": fns.stage2, "naive": fns.naive_multiturn}[stage]
        state, m = update(state, ref, batch)
        m = {k: float(v) for k, v in jax.device_get(m).items()}
      step += 1
      if not m["finite"]:
        if t.on_nonfinite == "stop":
          path = _save_nonfinite(workdir, step, batch, m)
          raise NonFiniteError(
            f"non-finite loss/gradient at step {step} ({stage}): loss={m['loss']}, "
            f"grad_norm={m['grad_norm']}; update not applied, batch saved to {path}"
          )
        meta["nonfinite_skipped"] += 1
        logging.warning("step %d: non-finite loss, update skipped (train.on_nonfinite=skip)", step)
      rewards_g = hosts.allgather(rewards)
      counts_g = hosts.allgather(np.array([[counts[o.name.lower()] for o in Outcome]])).sum(0)
      counts_g = {o.name.lower(): int(v) for o, v in zip(Outcome, counts_g)}
      if stage == "stage1" and config.stage1.adaptive_beta2:
        adv = losses.rloo_advantages(rewards_g[:, -1], g, config.rl.baseline)
        meta["beta2"] = float(kl.adaptive_beta2_update(meta["beta2"], m["kl_k3_turn1"], float(np.abs(adv).mean()), config.stage1.adaptive_target_ratio, config.stage1.adaptive_rate))  # fmt: skip
      meta["reward_acc"].append(float(rewards_g[:, -1].mean()))
      scalars = {f"step/{k}": v for k, v in m.items()}
      scalars.update(_host_metrics(ctx, ep, rewards_g, outcomes, counts_g, timer))
      scalars.update({"beta2": beta2_used, "stage_index": float(stage == "stage2"),
                      "nonfinite_skipped": float(meta["nonfinite_skipped"])})  # fmt: skip
      every_eval = config.eval.every_steps
      if (every_eval and step % every_eval == 0) or step == total:
        with timer("eval"):
          eval_params = train_lib.sampler_params(state.params, mesh, sampler_mesh)
          ev, _ = evaluate_lib.evaluate(eval_params, eval_set, sampler, pool, eval_rc, batch_size=config.eval.batch_size, decode=tok.decode)  # fmt: skip
        scalars.update({f"eval/{k}": v for k, v in ev.items()})
        scalars["time/eval_s"] = timer.seconds["eval"]
      if step % config.log.every_steps == 0 or step == total:
        writer.write(step, scalars, stage=stage)
      if dumper is not None:
        dumper.maybe_dump(step, _episode_records(task, ep, ep_examples, rewards, outcomes, config.log.num_episodes))  # fmt: skip
      if step % config.checkpoint.every_steps == 0 or step == total:
        best = {"reward": float(np.mean(meta["reward_acc"]))}
        meta["reward_acc"] = []
        ckpt.save(step, state, meta_now(stage, stage_step + 1), metrics=best, force=True)
      progress.update(step, reward=scalars[f"train/reward_turn{rewards.shape[1]}"], loss=m["loss"])
      last = scalars
      if guard.should_stop():
        ckpt.save(step, state, meta_now(stage, stage_step + 1), force=True)
        logging.warning("SIGTERM: saved step %d, exiting", step)
        break
    ckpt.wait()
  finally:
    ckpt.close()
    writer.close()
    if dumper is not None:
      dumper.close()
    progress.close()
    guard.uninstall()
  return last


def _episode_records(task, ep, exs, rewards, outcomes, n: int) -> list[dict]:
  out = []
  for i in range(min(n, len(exs))):
    out.append({
      "prompt": task.first_turn(exs[i]),
      "id": exs[i].id,
      "attempts": ep.texts[i],
      "rewards": rewards[i].tolist(),
      "outcomes": [Outcome(int(o)).name.lower() for o in outcomes[i]],
      "turn_lengths": ep.lengths[i].tolist(),
      "truncated": ep.truncated[i].tolist(),
      "time": time.time(),
    })  # fmt: skip
  return out
