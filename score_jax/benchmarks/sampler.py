"""`bench sampler`: tokens/s of our sampler vs google-tunix's `Sampler`, one- and two-turn.

  python -m score_jax.benchmarks sampler                        # CPU-sized Gemma config, float32
  python -m score_jax.benchmarks sampler --size=gemma-2b --dtype=bfloat16 --tunix_python=PY  # GPU

Both sides run the same Gemma-1-style architecture with the same weights (each process builds
them from the same seed with `bench_params`, then tunix's side converts them to its nnx layout;
a short greedy check confirms both produce the same tokens). tunix 0.1.7 pins safetensors<0.8,
so it lives in its own virtualenv and runs as a subprocess (`tunix_sampler_runner`) driven over
stdin/stdout. The two processes never run at the same time: each timed run is ours, then
tunix's, alternately, `--repeats` times after a warm-up (compilation excluded), and we report
medians and ratios. Workload: batch 32, prompts of ~128 tokens (left-padded into 128), 128
sampled tokens per turn at temperature 1 with no reachable stop id (full length). Two-turn:
turn 2 continues our cache with only the instruction prefilled; tunix re-prefills
question + attempt 1 + instruction as a new prompt (its API has no continuation).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# Two processes share one accelerator; neither may grab most of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from score_jax import configs  # noqa: E402
from score_jax.benchmarks import decode_profile  # noqa: E402
from score_jax.generation import (
  rollout,  # noqa: E402
  sampling,  # noqa: E402
)
from score_jax.models import decoder, flops, presets  # noqa: E402

DEFAULT_TUNIX_PYTHON = "/work/tunix-venv/bin/python"
CHECK_ROWS, CHECK_TOKENS = 4, 8


LAYER_LOOPS = ("auto", "scan", "unroll")
TUNIX_REMAT = ("none", "full")  # the remat policies tunix's Gemma has a match for


def bench_config(
  size: str, dtype: str, remat: str = "none", layers: str = "auto", param_dtype: str | None = None
):
  """The Gemma-1-style config both sides run (tunix's Gemma class supports exactly this).

  `remat`: our remat policy, "none" or "full" (tunix's RematConfig.NONE / DECODER).
  `layers`: "scan" (a while loop over the stacked layers), "unroll" (a Python loop over the same
  stacked parameters, as tunix's Gemma runs), or "auto" (unroll at size cpu, else the preset's).
  `param_dtype`: the weights' stored dtype (default `dtype`); float32 with bfloat16 compute is
  how the trainer's policy is stored (the paper configs).
  """
  if remat not in TUNIX_REMAT:
    raise ValueError(
      f"remat must be one of {TUNIX_REMAT} (tunix has a match for these), got {remat!r}"
    )
  if layers not in LAYER_LOOPS:
    raise ValueError(f"layers must be one of {LAYER_LOOPS}, got {layers!r}")
  name, overrides = size, {"remat_policy": remat}
  if size == "cpu":  # gemma-2b's layout (MQA, GeGLU, tied) at a size 2 CPU cores can run
    name = "gemma-2b"
    overrides |= dict(vocab_size=4096, embed_dim=256, hidden_dim=1024, num_layers=4, head_dim=64)
    # Layers as a Python loop, as the CPU testbed presets (and tunix's Gemma) run them: on CPU a
    # scanned stack's backward accumulates each layer's gradients through copies.
    overrides["scan_layers"] = False
  if layers != "auto":
    overrides["scan_layers"] = layers == "scan"
  config = presets.get_preset(name, dtype=dtype, param_dtype=param_dtype or dtype, **overrides)
  if config.family != "gemma" or "local" in config.layer_types:
    raise ValueError(
      f"--size={size}: tunix's Gemma class needs a Gemma 1 preset, not {config.family}"
    )
  return config


def bench_params(config, seed: int = 0):
  """Random weights with layers strong enough that greedy tokens are not one repeated token."""

  def make(key):
    params = decoder.init_params(config, key)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    out = []
    for (path, x), k in zip(leaves, keys):
      if "scale" in jax.tree_util.keystr(path):
        x = x + jax.random.normal(k, x.shape, x.dtype)
      elif x.ndim >= 3:
        x = 3 * x
      out.append(x)
    return jax.tree_util.tree_unflatten(treedef, out)

  return jax.jit(make)(jax.random.key(seed))


def workload(config, args):
  """Prompts (lengths 3/4..1 x prompt_len), check prompts and the instruction, from a seed."""
  rng = np.random.default_rng(args.seed)
  lo = 3  # ids 0..2 are pad/eos/bos in Gemma's layout
  lengths = rng.integers(args.prompt_len * 3 // 4, args.prompt_len + 1, args.batch)
  prompts = [rng.integers(lo, config.vocab_size, n).tolist() for n in lengths]
  check = [rng.integers(lo, config.vocab_size, n).tolist() for n in (5, 9, 3, 12)[:CHECK_ROWS]]
  instruction = rng.integers(lo, config.vocab_size, args.instr_len).tolist()
  return prompts, check, instruction


class Ours:
  """Our side: `rollout.run_episodes` (K=1 or 2), timed end to end and per stage."""

  def __init__(self, config, args):
    self.config, self.args = config, args
    self.params = bench_params(config, args.seed)
    self.prompts, self.check_prompts, self.instruction = workload(config, args)
    self.sampler = sampling.Sampler(
      config,
      prompt_buckets=(args.prompt_len,),
      append_buckets=(args.instr_len,),
      gen_buckets=(CHECK_TOKENS, args.gen_len),
      pad_id=0,
      decode_layout=configs.DECODE_LAYOUTS[args.decode_layout],
    )
    self.calls = 0

  def _rc(self, turns, temperature=1.0, max_new=None):
    return rollout.RolloutConfig(
      turns, 1, max_new or self.args.gen_len, temperature, stop_ids=()
    )  # no stop id: full length, as on the tunix side

  def check(self):
    rc = self._rc(1, 0.0, CHECK_TOKENS)
    ep = rollout.run_episodes(
      self.sampler, self.params, self.check_prompts, [], rc, jax.random.key(0)
    )
    return [t[0] for t in ep.attempt_tokens]

  def run(self, turns: int) -> dict:
    self.calls += 1
    t0 = time.perf_counter()
    ep = rollout.run_episodes(
      self.sampler,
      self.params,
      self.prompts,
      self.instruction,
      self._rc(turns),
      jax.random.key(self.calls),
      decode=lambda ids: " ".join(map(str, ids)),
    )
    seconds = time.perf_counter() - t0
    assert (ep.lengths == self.args.gen_len).all(), ep.lengths
    return {"seconds": seconds, "tokens": int(ep.lengths.sum())}

  def breakdown(self, turns: int) -> dict:
    """One extra run with a sync after each stage: prefill / append / decode / host seconds."""
    s, p, out = self.sampler, self.params, {"prefill": 0.0, "append": 0.0, "decode": 0.0}
    rc = self._rc(turns)
    t0 = time.perf_counter()
    slots = rollout.extra_slots(s, rc, self.args.instr_len)
    t = time.perf_counter()
    state = s.start(p, self.prompts, extra_slots=slots)
    jax.block_until_ready(state.arrays)
    out["prefill"] += time.perf_counter() - t
    outs = []
    for a in range(1, turns + 1):
      if a > 1:
        t = time.perf_counter()
        state = s.append(p, state, [self.instruction] * len(self.prompts))
        jax.block_until_ready(state.arrays)
        out["append"] += time.perf_counter() - t
      t = time.perf_counter()
      state, o = s.generate(p, state, rc.sampling_params(), jax.random.key(0), turn=a)
      jax.block_until_ready(o)
      out["decode"] += time.perf_counter() - t
      outs.append(o)
    t = time.perf_counter()
    arrays, outs = jax.device_get((state.arrays, outs))
    rollout.to_episodes(arrays, outs, state.prompt_index, lambda ids: " ".join(map(str, ids)))
    out["host"] = time.perf_counter() - t
    out["total"] = time.perf_counter() - t0
    return out


class Tunix:
  """The tunix side: a subprocess in tunix's virtualenv, one JSON command per line."""

  def __init__(self, args):
    env = {
      **os.environ,
      "PYTHONPATH": os.pathsep.join([_repo_root(), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
      args.tunix_python,
      "-m",
      "score_jax.benchmarks.tunix_sampler_runner",
      *_forward_flags(args),
    ]
    self.proc = subprocess.Popen(
      cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, cwd=_repo_root()
    )
    self._read()  # "ready" after building the model and converting weights

  def _read(self) -> dict:
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"tunix runner exited with code {self.proc.wait()} (its stderr is above)")
    return json.loads(line)

  def call(self, cmd: str) -> dict:
    self.proc.stdin.write(json.dumps({"cmd": cmd}) + "\n")
    self.proc.stdin.flush()
    return self._read()

  def close(self):
    if self.proc.poll() is None:
      self.call("quit")
      self.proc.wait(timeout=60)


def start_tunix(process_cls, args):
  """`process_cls(args)` (a tunix-side subprocess), or None with a printed reason when
  `--tunix_python` does not exist: the benchmark then runs and reports our side alone."""
  if os.path.exists(args.tunix_python):
    return process_cls(args)
  print(
    f"tunix side SKIPPED: no interpreter at --tunix_python={args.tunix_python} (a venv with "
    f"google-tunix==0.1.7, jax and flax as ours; or set SCORE_TUNIX_PYTHON)"
  )
  return None


def _repo_root() -> str:
  return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _forward_flags(args) -> list[str]:
  keys = ("size", "dtype", "batch", "prompt_len", "gen_len", "instr_len", "seed")
  return [f"--{k}={getattr(args, k)}" for k in keys]


def parse_args(argv):
  p = argparse.ArgumentParser(prog=argv[0], description=__doc__.splitlines()[0])
  p.add_argument("--size", default="cpu", help="'cpu' (small Gemma-style) or a Gemma 1 preset")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument(
    "--param_dtype",
    default="",
    choices=("", "float32", "bfloat16"),
    help="our weights' stored dtype (default --dtype; tunix always gets --dtype weights)",
  )
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--prompt_len", type=int, default=128, help="prompt bucket; prompts 3/4..1 x")
  p.add_argument("--gen_len", type=int, default=128, help="sampled tokens per turn")
  p.add_argument("--instr_len", type=int, default=32, help="correction-instruction tokens")
  p.add_argument("--repeats", type=int, default=3, help="timed runs per side and workload")
  p.add_argument(
    "--layers", default="auto", choices=LAYER_LOOPS, help="our layer loop (see bench_config)"
  )
  p.add_argument(
    "--decode_layout",
    default="auto",
    choices=tuple(configs.DECODE_LAYOUTS),
    help="our decode steps' weight/cache layout (Sampler; auto = on for CPUs only)",
  )
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
    "--tunix_python",
    default=os.environ.get("SCORE_TUNIX_PYTHON", DEFAULT_TUNIX_PYTHON),
    help="python of a virtualenv with google-tunix 0.1.7 (env SCORE_TUNIX_PYTHON)",
  )
  return p.parse_args(argv[1:])


def main(argv) -> None:
  args = parse_args(argv)
  config = bench_config(args.size, args.dtype, layers=args.layers, param_dtype=args.param_dtype)
  print(
    f"bench sampler: {time.strftime('%Y-%m-%d %H:%M')} load average {os.getloadavg()[0]:.2f} "
    f"device={jax.devices()[0].device_kind} "
    f"x{jax.device_count()} size={args.size} dtype={args.dtype} weights={config.param_dtype} "
    f"params={decoder.count_params(config):,} "
    f"batch={args.batch} prompt<={args.prompt_len} gen={args.gen_len}/turn instr={args.instr_len}"
  )
  ours = Ours(config, args)
  tunix = start_tunix(Tunix, args)
  try:
    _compare(ours, tunix, args)
  finally:
    if tunix is not None:
      tunix.close()


def _compare(ours, tunix, args) -> None:
  mine = ours.check()
  if tunix is not None:
    theirs = tunix.call("check")["tokens"]
    same = np.mean([a == b for ra, rb in zip(mine, theirs) for a, b in zip(ra, rb)])
    print(
      f"greedy check ({CHECK_ROWS} rows x {CHECK_TOKENS} tokens): "
      f"ours {mine} tunix {theirs} -> {same:.0%} equal"
    )
    if same < 1.0 and args.dtype == "float32":
      raise SystemExit("greedy tokens differ in float32: the two sides do not run the same model")
  sides = {"ours": ours.run, **({"tunix": lambda k: tunix.call(f"run{k}")} if tunix else {})}
  results = {}
  for turns in (1, 2):
    for run in sides.values():  # warm-up: compile and first-touch excluded
      run(turns)
    times = {name: [] for name in sides}
    for _ in range(args.repeats):
      for name, run in sides.items():  # interleaved: ours, tunix, ours, tunix, ...
        r = run(turns)
        times[name].append(r["tokens"] / r["seconds"])
    results[turns] = {name: statistics.median(v) for name, v in times.items()}
    for name, v in times.items():
      print(
        f"{turns}-turn {name:5s}: median {results[turns][name]:10.1f} tok/s  "
        f"runs {[round(x, 1) for x in v]}"
      )
  targets = {1: 1.5, 2: 2.0}
  for turns, target in targets.items():
    print(
      f"{turns}-turn ours/tunix: "
      + (
        f"{results[turns]['ours'] / results[turns]['tunix']:.2f}x (target >= {target}x)"
        if tunix
        else "n/a"
      )
    )
  _decode_step_report(ours, args)
  for turns in (1, 2):
    b = ours.breakdown(turns)
    print(
      f"{turns}-turn ours where time goes (s): " + ", ".join(f"{k} {v:.3f}" for k, v in b.items())
    )
    if tunix:
      b = tunix.call(f"breakdown{turns}")
      print(
        f"{turns}-turn tunix where time goes (s): "
        + ", ".join(f"{k} {v:.3f}" for k, v in b.items())
      )


def matmul_rate(dtype: str, n: int = 1024, reps: int = 10) -> float:
  """FLOP/s of a chain of [n, n] x [n, n] matmuls: this machine's matmul peak, measured now."""
  a = jnp.full((n, n), 1.0 / n, dtype)
  chain = jax.jit(lambda a: jax.lax.fori_loop(0, reps, lambda i, x: x @ a, a))
  jax.block_until_ready(chain(a))
  best = float("inf")
  for _ in range(3):
    t0 = time.perf_counter()
    jax.block_until_ready(chain(a))
    best = min(best, time.perf_counter() - t0)
  return 2.0 * n**3 * reps / best


def _decode_step_report(ours, args) -> None:
  """One single-turn decode call profiled by role, against its matmul floor at the same-run
  matmul rate (`models.flops.decode`: weights and attention over the whole cache)."""
  sp = ours._rc(1).sampling_params()
  state = ours.sampler.start(ours.params, ours.prompts, extra_slots=args.gen_len)
  b = decode_profile.breakdown(ours.sampler, ours.params, state, sp, jax.random.key(0))
  rate = matmul_rate(args.dtype)
  slots = args.prompt_len + args.gen_len
  floor_ms = flops.decode(ours.config, args.batch, 1, slots) / rate * 1e3
  step = b["wall_ms_per_step"]
  pairs = "/".join(f"{x:.2f}" for x in b["wall_ms_per_step_pairs"])
  head = (
    f"decode step (1 turn, batch {args.batch}, {slots} cache slots, decode_layout="
    f"{ours.sampler.decode_layout}): "
  )
  floor = f"matmul floor {floor_ms:.2f} ms at {rate / 1e9:.0f} GFLOP/s (same-run {1024}^3 matmul)"
  if step > 0:
    ratio = f"{step / floor_ms:.2f}x the floor (target <= 3x)"
    print(f"{head}{step:.2f} ms wall (median of {pairs}); {floor} -> {ratio}")
  else:  # a few tiny steps on a loaded machine: the calls' noise exceeds the steps between
    print(f"{head}not measured (median of {pairs}: not positive; raise --gen_len); {floor}")
  roles = ", ".join(f"{k} {v:.2f}" for k, v in b["roles_ms_per_step"].items())
  print(f"  per step by role (ms, profiled): {roles}; once per call {b['per_call_ms']:.1f} ms")
  w = decode_profile.weight_matmuls(ours.config, ours.params, args.batch)
  head = (
    "  the step's weight matmuls alone (its shapes and weights, chained, no attention or sampling)"
  )
  if w["ms_per_step"] <= 0:  # as above: noise larger than a tiny model's matmuls
    pairs = "/".join(f"{x:.2f}" for x in w["ms_per_step_pairs"])
    print(f"{head}: not measured (median of {pairs}: not positive)")
    return
  print(
    f"{head}: {w['ms_per_step']:.2f} ms at {w['flop_per_s'] / 1e9:.0f} GFLOP/s"
    + (f" -> the step is {step / w['ms_per_step']:.2f}x them" if step > 0 else "")
  )


if __name__ == "__main__":
  main(sys.argv)
