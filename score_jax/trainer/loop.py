"""The RL outer loop: sample K-attempt episodes, score them, update, log, evaluate, checkpoint.

  python -m score_jax.main --config=experiments/score_math.py:tiny --workdir=/tmp/score

One step: this process's slice of the global prompt batch -> K attempts per episode on one
continuing KV cache (Stage II may take first attempts from the base model, generation.offline)
-> pool rewards -> the Experience -> the phase's jitted update (rl.steps). No loss math here.

Resume is exact (SIGTERM saves and exits): the checkpoint holds params, optimizer state, the
loop step, the data iterator's state and the adaptive beta2; the step's RNG is fold_in(root,
step) and each row's key comes from its global row index: a rerun ends bitwise-identical.
"""

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from score_jax import configs, tasks
from score_jax.data import iterators
from score_jax.generation import offline
from score_jax.models import flops
from score_jax.parallel import hosts
from score_jax.parallel import mesh as mesh_lib
from score_jax.rewards import factory
from score_jax.rewards.outcome import Outcome
from score_jax.rl import algorithms, experience, kl, losses, optim
from score_jax.trainer import checkpoint as checkpoint_lib
from score_jax.trainer import collect as collect_lib
from score_jax.trainer import (
  console,
  metric_writers,
  metrics,
  overlapped_rewards,
  schedule,
  step_log,
  suite,
)
from score_jax.trainer import evaluate as evaluate_lib
from score_jax.trainer import setup as setup_lib

PyTree = Any


class NonFiniteError(FloatingPointError):
  """The loss or gradient was not finite and train.on_nonfinite is 'stop'."""


def run(config, workdir: str, pool=None) -> dict[str, float]:
  """Trains per `config` (config.rl.method) in `workdir`, resuming from its latest checkpoint,
  then runs the evaluations of `config.eval.suite` on the selected checkpoint (WORKDIR/eval/)."""
  with factory.reward_pool(config, pool) as pool:
    last, finished = _train(config, workdir, pool)  # the trainer's device state is freed here
    if finished and config.eval.suite:
      suite.run_suite(config, workdir, pool)
    return last


def _train(config, workdir: str, pool) -> tuple[dict[str, float], bool]:
  trainer = Trainer(config, workdir, pool)
  return trainer.train(), trainer.finished


class Trainer:
  """One run: its model, data, steps, checkpoints and writers, and the loop over its phases."""

  def __init__(self, config, workdir: str, pool):
    self.config, self.workdir, self.pool = config, workdir, pool
    self.mesh, self.sampler_mesh = setup_lib.make_meshes(config)
    setup_lib.check_process_batch(config, self.sampler_mesh)
    self.model_cfg, self.ref_params, self.tok = setup_lib.load_base(config, workdir, self.mesh)
    self.template = setup_lib.chat_template(config, self.model_cfg, self.tok)
    self._load_data()
    self.eval_set = evaluate_lib.make_eval_set(config, self.tok, self.template)
    self.total = schedule.total_steps(config)
    self.steps = setup_lib.make_steps(config, self.model_cfg, self.mesh)
    self.optimizer = self.steps.optimizer
    self.sampler = setup_lib.make_sampler(
      config, self.model_cfg, self.sampler_mesh, self.tok.pad_id
    )
    stop_ids = self.template.stop_ids(self.tok)
    close = self.template.close_turn_ids(self.tok)  # after attempts cut at max_new_tokens
    self.rollout_cfg = setup_lib.rollout_config(config, stop_ids, close_ids=close)
    self.eval_rollout_cfg = setup_lib.rollout_config(
      config,
      stop_ids,
      close_ids=close,
      greedy=True,
      num_attempts=config.eval.num_attempts,
      max_new=config.eval.max_new_tokens,
    )
    self.meta = {"beta2": config.stage1.beta2, "reward_acc": [], "nonfinite_skipped": 0}
    self.last_reward = 0.0  # the last attempt's training reward of the latest step (progress)
    self.collector = collect_lib.Collector(self)  # the SFT baselines' data sets
    self.finished = False

  def _load_data(self) -> None:
    """The training prompts, the correction instruction and the checkpointable iterator."""
    c, me, nproc = self.config, jax.process_index(), jax.process_count()
    d, r = c.data, c.rollout
    self.task = tasks.load_task(d.task, d.train_split, d.train_path, d.procedural_size)
    if d.max_train_examples:
      self.task.examples = self.task.examples[: d.max_train_examples]
    self.examples, self.prompt_ids = tasks.encode_prompts(
      self.task, self.tok, self.template, d.system or None, r.max_prompt_len
    )
    self.instruction = self.template.next_turn_ids(self.tok, self.task.correction())
    close = self.template.close_turn_ids(self.tok)  # a cut attempt is closed first
    setup_lib.check_instruction(c, self.instruction, self.task.name, close)
    g = r.num_samples
    self.prompts_global = c.train.global_batch // g
    self.local_prompts = self.prompts_global // nproc
    ratio = c.stage2.offline_first_attempt_ratio
    shards = mesh_lib.batch_shards(self.sampler_mesh)
    self.num_offline = offline.offline_prompt_count(self.local_prompts, g, shards, ratio)
    need = r.max_prompt_len + r.max_new_tokens + len(close) + len(self.instruction)
    if ratio > 0 and max(r.prompt_buckets) < need:
      raise configs.ConfigError(
        f"config.stage2.offline_first_attempt_ratio = {ratio}: prompts then hold attempt 1, so "
        f"max(config.rollout.prompt_buckets) = {max(r.prompt_buckets)} must reach max_prompt_len"
        f" + max_new_tokens + the turn close + the instruction ({need})."
      )
    self.iterator = iterators.DataIterator(
      list(range(len(self.examples))),
      self.prompts_global,
      c.seed,
      process_index=me,
      process_count=nproc,
    )

  # --------------------------------------------------------------------------- the loop

  def train(self) -> dict[str, float]:
    c, me = self.config, jax.process_index()
    cc = c.checkpoint
    self.ckpt = checkpoint_lib.Checkpointer(
      os.path.join(self.workdir, "checkpoints"),
      keep=cc.keep,
      keep_best=cc.keep_best,
      save_interval_steps=cc.every_steps,
      async_save=cc.async_save,
      best_metric="reward",
      config=json.loads(c.to_json_best_effort()),
    )
    state, step = self._restore_or_init()
    resume = step if step else None
    writer = metric_writers.MetricWriter(self.workdir, me, resume_step=resume)
    every_dump = c.log.episodes_every_steps
    dumper = None
    if every_dump:
      dumper = metric_writers.EpisodeDumper(self.workdir, every_dump, me, resume_step=resume)
    title = algorithms.method(c.rl.method).title
    progress = metric_writers.Progress(self.total, title, enabled=me == 0, start_step=step)
    guard = checkpoint_lib.PreemptionGuard()
    last: dict[str, float] = {}
    try:
      while step < self.total:
        state, step, last, phase_step = self._step(state, step, writer, dumper)
        progress.update(step, reward=self.last_reward, loss=last["step/loss"])
        if guard.should_stop():
          self.ckpt.save(step, state, self._meta(step, phase_step), force=True)
          logging.warning("SIGTERM: saved step %d, exiting", step)
          break
      self.ckpt.wait()
      self.finished = step >= self.total
    finally:
      self.ckpt.close()
      writer.close()
      if dumper is not None:
        dumper.close()
      progress.close()
      guard.uninstall()
    return last

  def _restore_or_init(self) -> tuple[optim.TrainState, int]:
    abstract = optim.abstract_train_state(self.model_cfg, self.optimizer, self.mesh)
    restored = self.ckpt.restore_latest(abstract)
    if restored is None:
      # A copy: jit may forward an unchanged input, and the policy state is donated every step.
      params0 = jax.tree.map(jnp.copy, self.ref_params)
      rng = jax.random.key(self.config.seed)
      return optim.init_train_state(self.model_cfg, self.optimizer, self.mesh, rng, params0), 0
    state, saved = restored
    self.meta.update(saved)
    self.iterator.restore(self.meta["data"])
    step = int(self.meta["loop_step"])
    if jax.process_index() == 0:
      console.say(f"resumed from step {step} ({self.ckpt.directory})")
    return state, step

  def _meta(self, step: int, phase_step: int) -> dict:
    phase, _ = schedule.phase_at(self.config, step - 1)
    return {
      **self.meta,
      "loop_step": step,
      "stage": phase,
      "stage_step": phase_step,
      "data": self.iterator.state(),
    }

  def _step(self, state, step: int, writer, dumper):
    """One update (the loop step numbered `step`, 0-based); returns the state and scalars."""
    c, t = self.config, self.config.train
    seg, is_last = schedule.segment_at(c, step)
    phase, phase_step = seg.name, seg.step
    algorithm = algorithms.get(phase)
    if algorithm.collection is not None:
      return self._sft_step(state, step, seg, algorithm, writer)
    timer = metrics.PhaseTimer()
    idx = next(self.iterator)
    exs = [self.examples[i] for i in idx]
    # Each process's log file says which problems it drew (its slice of the global batch).
    logging.info("step %d prompts: %s", step + 1, json.dumps([ex.id for ex in exs]))
    g = self.rollout_cfg.samples_per_prompt
    attempts = 1 if algorithm.attempts == "first" else self.rollout_cfg.num_attempts
    # Rows are prompt-major (row r answers prompt r // g): the scorer can score them on arrival.
    scorer = overlapped_rewards.OverlappedScorer(
      self.pool, self.task, [ex for ex in exs for _ in range(g)], attempts
    )
    with timer("sampling"):
      ep = self._sample(state, algorithm, [self.prompt_ids[i] for i in idx], step, scorer)
    ep_examples = [exs[i] for i in ep.prompt_index]
    with timer("rewards"):  # what is left on the critical path; the rest overlapped sampling
      rewards, outcomes, counts = scorer.finish(ep_examples, ep.texts)
    batch = self._experience(ep, rewards)
    coef = setup_lib.coefficients(c, self.meta["beta2"])
    with timer("update"):
      ref = self.ref_params
      if step == t.debug_nan_step:  # testing the non-finite guard: a NaN reference
        ref = jax.tree.map(lambda x: x * jnp.nan, self.ref_params)
      state, m = self.steps.update(phase)(state, ref, batch, coef)
      m = {k: float(v) for k, v in jax.device_get(m).items()}
    step += 1
    self._check_finite(m, step, phase, batch)
    rewards_g = hosts.allgather(rewards)
    counts_g = hosts.allgather(np.array([[counts[o.name.lower()] for o in Outcome]])).sum(0)
    counts_g = {o.name.lower(): int(v) for o, v in zip(Outcome, counts_g)}
    beta2_used = float(coef.beta2)
    if algorithm.adapts_beta2 and c.stage1.adaptive_beta2:
      self._adapt_beta2(rewards_g, m)
    if is_last:  # checkpoint selection ranks the final phase only, on its online episodes
      self.meta["reward_acc"].append(self._ranking_reward(algorithm, rewards))
    scalars = {f"step/{k}": v for k, v in m.items()}
    # Global shape; the update makes logits only before its loss tokens (setup.loss_config).
    head_slots = algorithm.num_attempts(self.rollout_cfg.num_attempts) * c.rollout.max_new_tokens
    flops_ = flops.policy_update(self.model_cfg, batch.num_rows, batch.num_slots, head_slots)
    scalars.update(step_log.host_metrics(self.task, ep, rewards_g, counts_g, timer, flops_))
    scalars["time/rewards_overlapped_s"] = scorer.overlapped_s  # inside time/sampling_s
    scalars["beta2"] = beta2_used
    scalars["stage_index"] = float(phase == "stage2")
    scalars["nonfinite_skipped"] = float(self.meta["nonfinite_skipped"])
    self.last_reward = scalars[f"train/reward_turn{rewards.shape[1]}"]
    self._after_step(state, step, phase, phase_step, scalars, timer, writer)
    if dumper is not None:
      records = step_log.episode_records(
        self.task, ep, ep_examples, rewards, outcomes, c.log.num_episodes
      )
      dumper.maybe_dump(step, records)
    return state, step, scalars, phase_step + 1

  def _ranking_reward(self, algorithm, rewards) -> float:
    """The last attempt's mean reward over the episodes whose first attempt is the policy's own
    (Stage II's base-model first attempts are left out; all of them when every one is)."""
    rows = rewards.shape[0]
    if algorithm.offline_first_attempts and self.num_offline:
      g = self.config.rollout.num_samples
      rows = (self.local_prompts - self.num_offline) * g
    last = hosts.allgather(rewards[: rows or rewards.shape[0], -1])
    return float(last.mean())

  def _sft_step(self, state, step: int, seg, algorithm, writer):
    """One update of an SFT baseline on its round's collected rows (trainer.collect)."""
    timer = metrics.PhaseTimer()
    with timer("collect"):
      batch, stats = self.collector.batch(state, algorithm, seg)
    m = {"loss": 0.0, "finite": 1.0, "tokens": 0.0}
    if batch is None:
      logging.warning("step %d: %s kept no rows this round; update skipped", step, seg.name)
    else:
      with timer("update"):
        state, m = self.steps.update(seg.name)(state, batch)
        m = {k: float(v) for k, v in jax.device_get(m).items()}
    step += 1
    self._check_finite(m, step, seg.name, batch)
    scalars = {f"step/{k}": v for k, v in m.items()}
    scalars.update({f"collect/{k}": v for k, v in stats.items()})
    scalars.update(timer.summary())
    scalars["stage_index"] = float(seg.name == "stage2")
    scalars["nonfinite_skipped"] = float(self.meta["nonfinite_skipped"])
    self.last_reward = stats["acc_t2"]
    self._after_step(state, step, seg.name, seg.step, scalars, timer, writer)
    return state, step, scalars, seg.step + 1

  def _sample(self, state, algorithm: algorithms.Algorithm, prompt_ids, step: int, sink=None):
    """This process's episodes of the step (its rows start at its global row offset)."""
    rc = self.rollout_cfg
    if algorithm.attempts == "first":
      rc = dataclasses.replace(rc, num_attempts=1)
    params = setup_lib.sampler_params(state.params, self.mesh, self.sampler_mesh, self.model_cfg)
    row_offset = jax.process_index() * self.local_prompts * rc.samples_per_prompt
    num_offline = self.num_offline if algorithm.offline_first_attempts else 0
    return offline.training_episodes(
      self.sampler,
      params,
      self.base_sampler_params() if num_offline else None,
      prompt_ids,
      self.instruction,
      rc,
      jax.random.fold_in(jax.random.key(self.config.seed), step),
      num_offline=num_offline,
      row_offset=row_offset,
      decode=self.tok.decode,
      prompts_per_call=self.config.rollout.prompts_per_call,
      sink=sink,
    )

  def base_sampler_params(self):
    """The reference (base model) placed for the sampler, built when used and not kept.

    On several processes it is a cast replica on every device, as large as the policy's own:
    kept for the run, it would sit beside every update and every sampler call (the preflight
    counts what stays resident: `preflight.programs.resident`).
    """
    return setup_lib.sampler_params(self.ref_params, self.mesh, self.sampler_mesh, self.model_cfg)

  def _experience(self, ep, rewards) -> experience.Experience:
    """The episodes as the update takes them: holes dropped, scored, global normalizer."""
    exp = ep.experience
    if self.config.train.stream_multiple:
      exp = exp.compact(self.config.train.stream_multiple)
    if jax.process_count() > 1:  # every process's rows must share one stream length
      exp = exp.pad(int(hosts.allgather(np.array([exp.num_slots])).max()))
    norm = experience.global_normalizer(exp.loss_mask, self.config.rl.aggregation)
    return exp.replace(rewards=rewards, normalizer=norm)

  def _check_finite(self, m: dict, step: int, phase: str, batch) -> None:
    if m["finite"]:
      return
    if self.config.train.on_nonfinite == "stop":
      path = step_log.save_nonfinite(self.workdir, step, batch, m)
      raise NonFiniteError(
        f"non-finite loss/gradient at step {step} ({phase}): loss={m['loss']}, "
        f"grad_norm={m['grad_norm']}; update not applied, batch saved to {path}"
      )
    self.meta["nonfinite_skipped"] += 1
    logging.warning("step %d: non-finite loss, update skipped (train.on_nonfinite=skip)", step)

  def _adapt_beta2(self, rewards_g, m: dict) -> None:
    s1 = self.config.stage1
    adv = losses.rloo_advantages(
      rewards_g[:, -1], self.config.rollout.num_samples, self.config.rl.baseline
    )
    mean_abs_adv = float(np.abs(adv).mean())
    self.meta["beta2"] = float(
      kl.adaptive_beta2_update(
        self.meta["beta2"],
        m["kl_k3_turn1"],
        mean_abs_adv,
        s1.adaptive_target_ratio,
        s1.adaptive_rate,
      )
    )

  def _after_step(self, state, step, phase, phase_step, scalars, timer, writer) -> None:
    """Held-out eval, metrics and the checkpoint after the update numbered `step` (1-based)."""
    c = self.config
    every_eval = c.eval.every_steps
    if (every_eval and step % every_eval == 0) or step == self.total:
      with timer("eval"):
        params = setup_lib.sampler_params(
          state.params, self.mesh, self.sampler_mesh, self.model_cfg
        )
        ev, _ = evaluate_lib.evaluate(
          params,
          self.eval_set,
          self.sampler,
          self.pool,
          self.eval_rollout_cfg,
          batch_size=c.eval.batch_size,
          decode=self.tok.decode,
        )
      scalars.update({f"eval/{k}": v for k, v in ev.items()})
      scalars["time/eval_s"] = timer.seconds["eval"]
    if step % c.log.every_steps == 0 or step == self.total:
      writer.write(step, scalars, stage=phase)
    if step % c.checkpoint.every_steps == 0 or step == self.total:
      # Only final-phase RL checkpoints carry a training reward, so 'best' never picks a Stage I
      # (or SFT) checkpoint; a run without any falls back to its latest checkpoint.
      best = None
      if self.meta["reward_acc"]:
        best = {"reward": float(np.mean(self.meta["reward_acc"]))}
      self.meta["reward_acc"] = []
      writer.flush()  # an object store's metrics are uploaded in batches: none missing on resume
      self.ckpt.save(step, state, self._meta(step, phase_step + 1), metrics=best, force=True)
