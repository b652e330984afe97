"""tunix's side of `bench rl_step`: google-tunix 0.1.7's GRPO learner, one global step per command.

Started by `score_jax.benchmarks.rl_step` with the same flags, in tunix's own virtualenv. It
builds the benchmark's weights with the same function and seed as our side (`bench_params`),
converts them into two tunix nnx Gemmas (actor, frozen reference; rollout shares the actor),
and runs `GRPOLearner.train` in a thread over a data set that yields one batch per `step`
command, so every step is tunix's own global step (rollout, reward, reference log-probs,
advantages, update). One JSON command per stdin line, one JSON line back on stdout:
  check      -> greedy tokens of the check prompts (before any update)
  step       -> {"seconds", "reward"} of one global step, end to end
  breakdown  -> one step with a sync after each phase: sample / reward / reference / update /
                host seconds
  quit
"""

import dataclasses
import json
import os
import queue
import sys
import threading
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402
from flax import nnx  # noqa: E402
from tunix.rl import rl_cluster as rl_cluster_lib  # noqa: E402
from tunix.rl.grpo import grpo_learner  # noqa: E402
from tunix.rl.rollout import base_rollout  # noqa: E402

from score_jax.benchmarks import rl_step  # noqa: E402
from score_jax.benchmarks import sampler as bench  # noqa: E402
from score_jax.benchmarks.tunix_sampler_runner import (  # noqa: E402
  REMAT_SWITCH,
  IdTokenizer,
  to_tunix,
)
from score_jax.rl import optim  # noqa: E402
from score_jax.trainer import setup as setup_lib  # noqa: E402

PHASES = ("sample", "reward", "reference", "update")


def reward_fn(prompts, completions, **_):
  """The benchmark's reward, on tunix's decoded completions (IdTokenizer text: "5 17 9")."""
  return [rl_step.even_reward(text) for text in completions]


def make_cluster(config, params, args) -> rl_cluster_lib.RLCluster:
  """Actor, rollout and reference colocated on one mesh; our optimizer; no checkpoints."""
  auto = (jax.sharding.AxisType.Auto,) * 2  # tunix's jits need Auto axes
  mesh = jax.make_mesh((1, len(jax.devices())), ("tp", "fsdp"), axis_types=auto)
  Role = rl_cluster_lib.Role
  rollout_cfg = base_rollout.RolloutConfig(
    max_tokens_to_generate=args.gen_len,
    temperature=1.0,
    top_p=1.0,  # tunix samples only in top-p mode; top_p=None would mean greedy
    max_prompt_length=args.prompt_len,
    # The smallest cache that fits (tunix attends over its whole cache); the check samples more.
    kv_cache_size=args.prompt_len + max(args.gen_len, bench.CHECK_TOKENS),
    eos_tokens=[-1],  # unreachable: every completion runs the full length, as on our side
  )
  optimizer = optim.make_optimizer(setup_lib.optim_config(rl_step.score_config(args)))
  training = rl_cluster_lib.RLTrainingConfig(
    actor_optimizer=optimizer, eval_every_n_steps=10**9, max_steps=10**9
  )
  cluster_cfg = rl_cluster_lib.ClusterConfig(
    role_to_mesh={Role.ACTOR: mesh, Role.REFERENCE: mesh, Role.ROLLOUT: mesh},
    rollout_engine="vanilla",
    offload_to_cpu=False,
    training_config=training,
    rollout_config=rollout_cfg,
  )
  # The actor gets copies: nothing it updates or donates may alias the reference's arrays.
  actor = to_tunix(config, jax.tree.map(jnp.copy, params))
  return rl_cluster_lib.RLCluster(
    actor=actor,
    reference=to_tunix(config, params),
    tokenizer=IdTokenizer(),
    cluster_config=cluster_cfg,
  )


def grpo_config(args) -> grpo_learner.GRPOConfig:
  """GRPO set to match our single-turn RL: one pass per batch (ratio 1, nothing clipped),
  RLOO advantages, token-mean loss, the same beta and a KL estimator with our gradient."""
  return grpo_learner.GRPOConfig(
    num_generations=args.samples,
    num_iterations=1,
    beta=args.beta,
    kl_loss_mode=rl_step.TUNIX_KL[args.kl_estimator],
    advantage_estimator="rloo",
    loss_agg_mode="token-mean",
  )


class Runner:
  def __init__(self, args):
    self.args = args
    config = bench.bench_config(args.size, args.dtype, args.remat)
    params = bench.bench_params(config, args.seed)
    prompts, self.check_prompts, _ = bench.workload(config, rl_step.workload_args(args))
    # A numpy array of strings: tunix repeats each prompt G times with np.repeat (a list of
    # strings would be split into characters by its jax.tree.map).
    self.batch = {"prompts": np.array([rl_step.ids_text(p) for p in prompts])}
    self.cluster = make_cluster(config, params, args)
    # Remat off while the rollout traces its decode loop (tunix_sampler_runner.RematSwitch).
    self.cluster.rollout.generate = REMAT_SWITCH.sampling(self.cluster.rollout.generate)
    self.learner = grpo_learner.GRPOLearner(self.cluster, grpo_config(args), reward_fns=reward_fn)
    self.times, self.sync, self.rewards = dict.fromkeys(PHASES, 0.0), False, []
    self._wrap_phases()
    self.batches, self.done = queue.Queue(), queue.Queue()
    self.thread = threading.Thread(target=self._train, daemon=True)
    self.thread.start()
    self.calls = 0

  def _timed(self, fn, phase, block=False):
    def wrapped(*a, **kw):
      t = time.perf_counter()
      out = fn(*a, **kw)
      if self.sync and block:
        jax.block_until_ready(out)
      self.times[phase] += time.perf_counter() - t
      return out

    return wrapped

  def _wrap_phases(self):
    """Times tunix's phases where its learner calls them (instance attributes shadow methods)."""
    c, lr = self.cluster, self.learner
    c.generate = self._timed(c.generate, "sample")  # returns host tokens: already synced
    c.get_ref_per_token_logps = self._timed(c.get_ref_per_token_logps, "reference", block=True)
    compute_rewards = self._timed(lr._compute_rewards, "reward")

    def rewards(*a, **kw):
      out = compute_rewards(*a, **kw)
      self.rewards.append(float(np.mean(out)))
      return out

    lr._compute_rewards = rewards
    update_actor = self._timed(c.update_actor, "update")

    def update(*a, **kw):
      out = update_actor(*a, **kw)
      if self.sync:
        t = time.perf_counter()
        jax.block_until_ready(nnx.state(c.actor_trainer.model))
        self.times["update"] += time.perf_counter() - t
      return out

    c.update_actor = update

  def _batches(self):
    """One batch per step command (None ends tunix's loop). tunix asks for the next batch once
    its global step is over, bookkeeping included: that request ends the step."""
    while (batch := self.batches.get()) is not None:
      yield batch
      jax.block_until_ready(nnx.state(self.cluster.actor_trainer.model))
      self.done.put(time.perf_counter())

  def _train(self):
    try:
      self.learner.train(self._batches())
    except BaseException as e:  # reported to the command that waits for a step
      self.done.put(e)

  def step(self) -> dict:
    self.calls += 1
    # tunix reuses key 0 for every rollout unless the config carries a new seed.
    self.cluster.cluster_config.rollout_config.seed = self.calls
    self.times, self.rewards = dict.fromkeys(PHASES, 0.0), []
    t0 = time.perf_counter()
    self.batches.put(self.batch)
    end = self.done.get()
    if isinstance(end, BaseException):
      raise RuntimeError("tunix's GRPO train loop failed") from end
    return {"seconds": end - t0, "reward": float(np.mean(self.rewards))}

  def breakdown(self) -> dict:
    self.sync = True
    try:
      out = self.step()
    finally:
      self.sync = False
    total = out["seconds"]
    return {**self.times, "host": total - sum(self.times.values()), "total": total}

  def check(self) -> dict:
    rc = dataclasses.replace(
      self.cluster.cluster_config.rollout_config,
      max_tokens_to_generate=bench.CHECK_TOKENS,
      temperature=0.0,
      top_p=None,  # greedy
    )
    out = self.cluster.rollout.generate([rl_step.ids_text(p) for p in self.check_prompts], rc)
    return {"tokens": [list(map(int, t)) for t in out.tokens]}

  def close(self):
    self.batches.put(None)
    self.thread.join(timeout=60)


def main(argv):
  logging.set_verbosity(logging.ERROR)  # tunix logs every step at INFO/WARNING
  args = rl_step.parse_args(argv)
  runner = Runner(args)
  print(json.dumps({"ready": True}), flush=True)
  commands = {"check": runner.check, "step": runner.step, "breakdown": runner.breakdown}
  try:
    for line in sys.stdin:
      cmd = json.loads(line)["cmd"]
      if cmd == "quit":
        print(json.dumps({"bye": True}), flush=True)
        return
      if cmd not in commands:
        raise ValueError(f"tunix rl runner: unknown command {cmd!r}")
      print(json.dumps(commands[cmd]()), flush=True)
  finally:
    runner.close()


if __name__ == "__main__":
  main(sys.argv)
