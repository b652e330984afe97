"""`bench rl_step`: one RL update end to end, our single-turn RL vs google-tunix's GRPO learner.

  python -m score_jax.benchmarks rl_step                  # CPU-sized Gemma config, float32
  python -m score_jax.benchmarks rl_step --size=gemma-2b --dtype=bfloat16 --tunix_python=PY

One step = sample G completions per prompt, reward them, reference log-probs, one update. Both
sides run the same Gemma-1-style model and weights (`sampler.bench_params`, converted to tunix's
nnx layout there), the same prompts, G, generation length (forced: no reachable stop id),
temperature 1, beta, optimizer (`rl.optim.make_optimizer` of the same config on both sides:
Adam, global-norm clip 1, constant lr) and reward (`even_reward`, in-process on both sides:
the fraction of even token ids in the decoded completion). Ours is what the trainer runs for
the `single_turn` algorithm (trainer.loop.Trainer._step: `offline.training_episodes`, the
compacted Experience with its global normalizer, the jitted `Steps.update`, which recomputes
the reference log-probs inside). Tunix's is `GRPOLearner.train`, one global step per batch
(tunix_rl_runner, in tunix's own virtualenv), set to match: one iteration per batch (ratio 1,
no clipping), RLOO advantages, token-mean loss, the KL term with our estimator's gradient.
Timed runs alternate ours, tunix, ours (Stage II); medians after warm-up (compile excluded).
Then our two-turn SCoRe Stage II step (2 attempts, the correction instruction appended on the
same cache) against our single-turn step.
"""

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # two processes, one device

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from score_jax import configs  # noqa: E402
from score_jax.benchmarks import sampler as sampler_bench  # noqa: E402
from score_jax.generation import offline, rollout  # noqa: E402
from score_jax.models import decoder, flops  # noqa: E402
from score_jax.rl import algorithms, experience, optim, scoring  # noqa: E402
from score_jax.rl import steps as steps_lib  # noqa: E402
from score_jax.trainer import setup as setup_lib  # noqa: E402

# Our estimator -> tunix's kl_loss_mode. Tunix has no in-reward KL: its 'mse_kl' (0.5 r^2 in the
# loss) has exactly the per-token gradient of our 'k1_reward' and 'k2' (rl/kl.py); 'low_var_kl'
# is our 'k3'.
TUNIX_KL = {"k1_reward": "mse_kl", "k2": "mse_kl", "k3": "low_var_kl"}
PHASES = ("sample", "reward", "reference", "update")


def ids_text(ids) -> str:
  """Token ids as text, as the tunix side's IdTokenizer decodes them."""
  return " ".join(str(int(i)) for i in ids)


def even_reward(text: str) -> float:
  """The benchmark's graded reward: the fraction of even token ids in a decoded completion."""
  ids = text.split()
  return sum(int(i) % 2 == 0 for i in ids) / max(len(ids), 1)


def workload_args(args) -> argparse.Namespace:
  """`sampler.workload`'s arguments: the same seeded prompts, check rows and instruction."""
  return argparse.Namespace(
    batch=args.prompts, prompt_len=args.prompt_len, instr_len=args.instr_len, seed=args.seed
  )


def score_config(args):
  """The trainer's config for this workload (both sides build their optimizer from it)."""
  c = configs.base_config()
  c.seed = args.seed
  r = c.rollout
  r.num_samples, r.num_attempts = args.samples, 2
  r.max_prompt_len, r.max_new_tokens, r.temperature = args.prompt_len, args.gen_len, 1.0
  r.prompt_buckets, r.append_buckets = (args.prompt_len,), (args.instr_len,)
  r.gen_buckets = tuple(sorted({sampler_bench.CHECK_TOKENS, args.gen_len}))
  c.rl.beta1, c.rl.kl_estimator = args.beta, args.kl_estimator
  c.optim.lr = args.lr
  c.train.global_batch = args.prompts * args.samples
  c.rollout.decode_layout = args.decode_layout
  return c


class Ours:
  """Our side: the trainer's pieces (trainer.setup) and its step, per algorithm."""

  def __init__(self, args):
    c = self.config = score_config(args)
    self.model_cfg = sampler_bench.bench_config(args.size, args.dtype, args.remat, args.layers)
    self.mesh, self.sampler_mesh = setup_lib.make_meshes(c)
    setup_lib.check_process_batch(c, self.sampler_mesh)
    oc = setup_lib.optim_config(c)
    optimizer = optim.make_optimizer(oc)
    self.steps = steps_lib.Steps(
      self.model_cfg,
      setup_lib.loss_config(c),
      optimizer,
      self.mesh,
      c.train.num_microbatches,
      optim.make_schedule(oc),
    )
    self.sampler = setup_lib.make_sampler(c, self.model_cfg, self.sampler_mesh, pad_id=0)
    self.rollout_cfg = setup_lib.rollout_config(c, stop_ids=())  # full length, as on tunix's
    params = sampler_bench.bench_params(self.model_cfg, args.seed)
    self.ref_params = jax.device_put(params, self.steps.param_shardings)
    params0 = jax.tree.map(jnp.copy, self.ref_params)  # the policy state is donated every step
    rng = jax.random.key(c.seed)
    self.state = optim.init_train_state(self.model_cfg, optimizer, self.mesh, rng, params0)
    wl = sampler_bench.workload(self.model_cfg, workload_args(args))
    self.prompts, self.check_prompts, self.instruction = wl
    self.calls = 0

  def check(self) -> list[list[int]]:
    """Greedy tokens of the check prompts (before any update)."""
    rc = setup_lib.rollout_config(
      self.config, (), greedy=True, num_attempts=1, max_new=sampler_bench.CHECK_TOKENS
    )
    params = setup_lib.sampler_params(self.state.params, self.mesh, self.sampler_mesh)
    ep = rollout.run_episodes(self.sampler, params, self.check_prompts, [], rc, jax.random.key(0))
    return [t[0] for t in ep.attempt_tokens]

  def _sample(self, algorithm: algorithms.Algorithm, step: int) -> rollout.Episodes:
    """trainer.loop.Trainer._sample on one process, without offline first attempts."""
    rc = self.rollout_cfg
    if algorithm.attempts == "first":
      rc = dataclasses.replace(rc, num_attempts=1)
    params = setup_lib.sampler_params(
      self.state.params, self.mesh, self.sampler_mesh, self.model_cfg
    )
    return offline.training_episodes(
      self.sampler,
      params,
      None,  # no base-model first attempts
      self.prompts,
      self.instruction,
      rc,
      jax.random.fold_in(jax.random.key(self.config.seed), step),
      num_offline=0,
      row_offset=0,
      decode=ids_text,
      prompts_per_call=self.config.rollout.prompts_per_call,
    )

  def _experience(self, ep: rollout.Episodes, rewards) -> experience.Experience:
    """trainer.loop.Trainer._experience on one process: holes dropped, global normalizer."""
    exp = ep.experience
    if self.config.train.stream_multiple:
      exp = exp.compact(self.config.train.stream_multiple)
    norm = experience.global_normalizer(exp.loss_mask, self.config.rl.aggregation)
    return exp.replace(rewards=rewards, normalizer=norm)

  def step(self, phase: str, sync: bool = False) -> dict:
    """One update of algorithm `phase` (trainer.loop.Trainer._step's RL path), per phase timed.

    The phases hand over host data (episodes, rewards, metrics), so each ends synced without
    extra waits; `sync` only adds a wait on the new state after the update.
    """
    self.calls += 1
    algorithm, times = algorithms.get(phase), {}
    t0 = t = time.perf_counter()
    ep = self._sample(algorithm, self.calls)
    times["sample"], t = time.perf_counter() - t, time.perf_counter()
    rewards = np.array([[even_reward(x) for x in row] for row in ep.texts], np.float32)
    times["reward"] = time.perf_counter() - t
    batch = self._experience(ep, rewards)
    coef = setup_lib.coefficients(self.config)
    t = time.perf_counter()
    self.state, m = self.steps.update(phase)(self.state, self.ref_params, batch, coef)
    m = {k: float(v) for k, v in jax.device_get(m).items()}
    if sync:
      jax.block_until_ready(self.state)
    times["update"] = time.perf_counter() - t
    total = time.perf_counter() - t0
    assert m["finite"], f"non-finite {phase} update: {m}"
    assert (ep.lengths == self.config.rollout.max_new_tokens).all(), ep.lengths
    self.last_batch = batch
    # host: the rest (building the Experience, Python), as on tunix's side
    times["host"] = total - sum(times.values())
    return {"seconds": total, "reward": float(rewards.mean()), **times}

  def breakdown(self, phase: str) -> dict:
    """One step with the phase times; the reference forward runs inside the jitted update, so
    it is timed apart: the update's own reference scoring (`scoring.stream_scores`, logits at
    the loss slots only) on the step's batch."""
    out = self.step(phase, sync=True)
    out = {k: out[k] for k in ("sample", "reward", "update", "host")} | {"total": out["seconds"]}
    algorithm, lc = algorithms.get(phase), setup_lib.loss_config(self.config)
    k = algorithm.num_attempts(lc.num_attempts)
    batch = self.last_batch.only(("tokens", "positions", "valid", "loss_mask"))
    score = jax.jit(scoring.stream_scores, static_argnums=(0, 3, 4, 5))
    run = lambda: jax.block_until_ready(
      score(self.model_cfg, self.ref_params, batch, lc.temperature, False, k * lc.max_new_tokens)
    )
    run()  # compile
    t = time.perf_counter()
    run()
    out["reference_alone"] = time.perf_counter() - t
    return out


class TunixProcess(sampler_bench.Tunix):
  """The tunix side: `tunix_rl_runner` in tunix's virtualenv, the sampler benchmark's protocol."""

  def __init__(self, args):  # not the base class's: that starts the sampler benchmark's runner
    root = sampler_bench._repo_root()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    keys = ("size", "dtype", "prompts", "samples", "prompt_len", "gen_len", "instr_len", "seed")
    keys += ("beta", "kl_estimator", "lr", "remat")  # --layers and --decode_layout: ours only
    flags = [f"--{k}={getattr(args, k)}" for k in keys]
    cmd = [args.tunix_python, "-m", "score_jax.benchmarks.tunix_rl_runner", *flags]
    self.proc = subprocess.Popen(
      cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, cwd=root
    )
    self._read()  # "ready" after building the models and the learner


def parse_args(argv):
  p = argparse.ArgumentParser(prog=argv[0], description=__doc__.splitlines()[0])
  p.add_argument("--size", default="cpu", help="'cpu' (small Gemma-style) or a Gemma 1 preset")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--prompts", type=int, default=8, help="unique prompts per step")
  p.add_argument("--samples", type=int, default=4, help="G: completions per prompt")
  p.add_argument("--prompt_len", type=int, default=64, help="prompt bucket; prompts 3/4..1 x")
  p.add_argument("--gen_len", type=int, default=32, help="sampled tokens per attempt")
  p.add_argument("--instr_len", type=int, default=16, help="Stage II instruction tokens")
  p.add_argument("--beta", type=float, default=0.04, help="KL coefficient")
  p.add_argument("--kl_estimator", default="k1_reward", choices=tuple(TUNIX_KL))
  p.add_argument("--lr", type=float, default=5e-6, help="Adam learning rate (constant)")
  p.add_argument(
    "--remat",
    default="none",
    choices=sampler_bench.TUNIX_REMAT,
    help="activation remat on both sides: none, or full (ours 'full', tunix's DECODER)",
  )
  p.add_argument(
    "--layers",
    default="auto",
    choices=sampler_bench.LAYER_LOOPS,
    help="our layer loop (sampler.bench_config); tunix's Gemma always unrolls",
  )
  p.add_argument(
    "--decode_layout",
    default="auto",
    choices=tuple(configs.DECODE_LAYOUTS),
    help="rollout.decode_layout for our sampler (auto = on for CPUs only)",
  )
  p.add_argument("--repeats", type=int, default=5, help="timed steps per side")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps per side first")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", default="", help="also write every figure to this JSON file")
  p.add_argument(
    "--tunix_python",
    default=os.environ.get("SCORE_TUNIX_PYTHON", sampler_bench.DEFAULT_TUNIX_PYTHON),
    help="python of a virtualenv with google-tunix 0.1.7 (env SCORE_TUNIX_PYTHON)",
  )
  return p.parse_args(argv[1:])


def _header(args, model_cfg, decode_layout: bool) -> str:
  load = "/".join(f"{x:.2f}" for x in os.getloadavg())
  return (
    f"bench rl_step: {time.strftime('%Y-%m-%d %H:%M')} device={jax.devices()[0].device_kind} "
    f"x{jax.device_count()} load={load} size={args.size} dtype={args.dtype} "
    f"params={decoder.count_params(model_cfg):,} remat={args.remat} "
    f"layers={'scan' if model_cfg.scan_layers else 'unroll'} decode_layout={decode_layout}\n"
    f"workload: {args.prompts} prompts x G={args.samples} = {args.prompts * args.samples} "
    f"episodes, prompts {args.prompt_len * 3 // 4}..{args.prompt_len} tokens (left-padded into "
    f"{args.prompt_len}), {args.gen_len} new tokens forced (no stop id), temperature 1, "
    f"beta {args.beta} (ours {args.kl_estimator}, tunix {TUNIX_KL[args.kl_estimator]}: the same "
    f"per-token gradient), Adam lr {args.lr} clip 1.0, reward = fraction of even ids in the "
    f"decoded completion (in-process on both sides); Stage II: 2 attempts, {args.instr_len}-token"
    f" instruction on the same cache\n"
    f"ours  step: the trainer's single_turn path: offline.training_episodes (one prefill per "
    f"prompt, G samples on its cache) -> reward -> compacted Experience -> jitted Steps.update "
    f"(reference forward, policy forward + backward, Adam; logits only before the loss tokens) "
    f"-> metrics to the host\n"
    f"tunix step: one GRPOLearner global step: rollout (vanilla Sampler, top-p mode) -> reward "
    f"-> RLOO advantages -> reference log-probs (jit) -> actor train step (forward, backward, Adam)"
  )


def _check(ours, tunix, dtype: str) -> dict:
  """Both sides sample greedily from the same prompts; float32 must give the same tokens."""
  mine = ours.check()
  if tunix is None:
    return {"ours": mine}
  theirs = tunix.call("check")["tokens"]
  same = float(np.mean([a == b for ra, rb in zip(mine, theirs) for a, b in zip(ra, rb)]))
  n = sampler_bench.CHECK_TOKENS
  print(
    f"greedy check ({len(mine)} rows x {n} tokens): ours {mine} tunix {theirs} -> {same:.0%} equal"
  )
  if same < 1.0 and dtype == "float32":
    raise SystemExit("greedy tokens differ in float32: the two sides do not run the same model")
  return {"ours": mine, "tunix": theirs, "equal": same}


def _timed(sides: dict, repeats: int, warmup: int) -> dict[str, list[float]]:
  """Seconds per step of each side, interleaved (one of each per round) after the warm-up."""
  for _ in range(warmup):  # compilation and first touches excluded
    for run in sides.values():
      run()
  times = {name: [] for name in sides}
  for _ in range(repeats):
    for name, run in sides.items():
      times[name].append(run()["seconds"])
  return times


def _summary(times: list[float], episodes: int) -> dict:
  s = statistics.median(times)
  return {"seconds": s, "steps_per_s": 1 / s, "episodes_per_s": episodes / s, "runs": times}


def _fmt(d: dict, keys) -> str:
  return ", ".join(f"{k} {d[k]:.3f}" for k in keys if k in d)


def _report(results: dict, tunix_present: bool) -> None:
  labels = {
    "ours": "ours  single-turn",
    "tunix": "tunix GRPO       ",
    "stage2": "ours  Stage II   ",
  }
  for name, r in results["steps"].items():
    runs = ", ".join(f"{x:.3f}" for x in r["runs"])
    print(
      f"{labels[name]}: median {r['seconds']:.3f} s/step  {r['steps_per_s']:.2f} steps/s  "
      f"{r['episodes_per_s']:.1f} episodes/s  runs [{runs}]"
    )
  ratio = results.get("ours_over_tunix")
  print("ours/tunix (steps/s): " + (f"{ratio:.2f}x (target >= 1.5x)" if ratio else "n/a"))
  b = results["breakdown"]
  print("where the time goes (s; one extra step per side, synced after each phase):")
  print(
    f"  ours : {_fmt(b['ours'], ('sample', 'reward'))}, reference inside update (alone "
    f"~{b['ours']['reference_alone']:.3f}), {_fmt(b['ours'], ('update', 'host', 'total'))}"
  )
  if tunix_present:
    print(f"  tunix: {_fmt(b['tunix'], (*PHASES, 'host', 'total'))}")
    print(
      "  tunix's loss also computes the full-vocabulary entropy of every completion position "
      "(an aux metric, kept); ours computes full-vocabulary entropy too (stop-gradient metric)"
    )
  print(f"  ours Stage II: {_fmt(b['stage2'], ('sample', 'reward', 'update', 'host', 'total'))}")
  w = results["work_two_over_one"]
  print(
    f"two-turn/single-turn (ours): {results['two_over_one']:.2f}x (target <= 1.6x); the work "
    f"itself (models.flops.rl_step): {w['total']:.2f}x (sampling {w['sample']:.2f}x, update "
    f"{w['update']:.2f}x)"
  )


def _compare(ours, tunix, args) -> dict:
  results = {"check": _check(ours, tunix, args.dtype)}
  sides = {"ours": lambda: ours.step("single_turn")}
  if tunix is not None:
    sides["tunix"] = lambda: tunix.call("step")
  sides["stage2"] = lambda: ours.step("stage2")
  times = _timed(sides, args.repeats, args.warmup)
  episodes = args.prompts * args.samples
  results["steps"] = {name: _summary(t, episodes) for name, t in times.items()}
  s = {name: r["seconds"] for name, r in results["steps"].items()}
  if tunix is not None:
    results["ours_over_tunix"] = s["tunix"] / s["ours"]
  results["two_over_one"] = s["stage2"] / s["ours"]
  shape = (args.prompts, args.samples, args.prompt_len, args.gen_len)
  work = [flops.rl_step(ours.model_cfg, *shape, k, args.instr_len) for k in (1, 2)]
  results["work_two_over_one"] = {part: work[1][part] / work[0][part] for part in work[0]}
  b = {"ours": ours.breakdown("single_turn"), "stage2": ours.breakdown("stage2")}
  if tunix is not None:
    b["tunix"] = tunix.call("breakdown")
  results["breakdown"] = b
  return results


def main(argv) -> None:
  args = parse_args(argv)
  ours = Ours(args)
  print(_header(args, ours.model_cfg, ours.sampler.decode_layout), flush=True)
  tunix = sampler_bench.start_tunix(TunixProcess, args)
  try:
    results = _compare(ours, tunix, args)
  finally:
    if tunix is not None:
      tunix.close()
  _report(results, tunix is not None)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"args": vars(args), **results}, f, indent=1)


if __name__ == "__main__":
  main(sys.argv)
