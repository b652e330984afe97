"""`bench train_step`: achieved FLOP/s of the Stage II update against this machine's matmul peak.

  python -m score_jax.benchmarks train_step                       # CPU: d 512, 4 layers, seq 256
  python -m score_jax.benchmarks train_step --preset=gemma-2b --dtype=bfloat16 --remat=full \\
      --seq=1024 --batch=8 --steps=5                         # one GPU
  python -m score_jax.benchmarks train_step --preset=gemma-2b --dtype=bfloat16 --paper_math \\
      --batch=16 --microbatches=2                            # the paper's MATH streams (3200)

FLOPs are counted two ways: analytically (6 N T for the policy's forward + backward, 2 N T for
the reference forward, N = matmul parameters incl. the output head, T = batch * seq tokens,
plus attention 4 b t^2 h k per layer per forward, times 3 for the policy and 1 for the
reference; remat recomputation is NOT counted, as MFU convention), and from the compiled step's
`cost_analysis()`. XLA counts a while loop's body once, so with scanned layers (and the
micro-batch scan) its figure is a lower bound that misses most of the layer work; it is printed
for reference only (set the preset's scan_layers=False to compare).
The peak is a jitted square `jnp.dot` in the same dtype, timed in the same process; the ratio
achieved / peak is the MFU. On a chip `parallel.targets` knows (TPU v5e/v5p/v6e, H100 SXM,
H200), bf16 MFU is also printed against the vendor's dense spec peak (or --spec_peak_tflops).
As in the trainer, the update computes logits only before its loss tokens, and the analytic
count takes the output head at those slots only. `--breakdown` also times the parts of a step
separately.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from score_jax.models import decoder, flops, presets
from score_jax.parallel import mesh as mesh_lib
from score_jax.parallel import targets
from score_jax.rl import losses, optim, steps
from score_jax.rl.algorithms import Coefficients
from score_jax.rl.experience import Experience


def model_config(args):
  """The benchmarked decoder: a preset, or a Gemma-style config of --width / --layers."""
  kw = dict(dtype=args.dtype, remat_policy=args.remat, max_seq_len=max(args.seq, 8192))
  if args.preset:
    return presets.get_preset(args.preset, **kw)
  d = args.width
  return presets.get_preset(
    "gemma-2b",
    vocab_size=args.vocab,
    embed_dim=d,
    hidden_dim=4 * d,
    num_layers=args.layers,
    num_heads=max(d // 128, 1),
    num_kv_heads=1,
    head_dim=128,
    **kw,
  )


def stream_layout(args) -> tuple[int, int, int]:
  """(prompt, attempt, instruction) slots of a stream: --prompt_len / --gen_len / --instr_len,
  or, where --gen_len is 0, fractions of --seq (prompt t/4, attempt 3t/8, instruction t/16)."""
  if args.gen_len:
    return args.prompt_len, args.gen_len, args.instr_len
  t = args.seq
  return t // 4, 3 * t // 8, t // 16


def episode_batch(cfg, b: int, t: int, layout: tuple[int, int, int], seed: int = 0) -> Experience:
  """Full-length two-attempt streams of t slots: prompt, y1, instruction, y2 (the rest)."""
  p, y1, ins = layout
  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, cfg.vocab_size, (b, t)).astype(np.int32)
  turn = np.zeros((b, t), np.int32)
  turn[:, p : p + y1] = 1
  turn[:, p + y1 + ins :] = 2
  return stream_batch(tokens, np.ones((b, t), bool), turn, rng)


def stream_batch(tokens, valid, turn, rng) -> Experience:
  """A step's batch from streams: positions count valid slots, random 0/1 rewards, zero logp."""
  loss_mask = valid & (turn > 0)
  return Experience(
    tokens=np.where(valid, tokens, 0),
    positions=np.maximum(np.cumsum(valid, axis=1) - 1, 0).astype(np.int32),
    valid=valid,
    turn=turn,
    loss_mask=loss_mask,
    logp=np.zeros(tokens.shape, np.float32),
    rewards=rng.integers(0, 2, (tokens.shape[0], 2)).astype(np.float32),
    normalizer=np.float32(losses.aggregation_normalizers(loss_mask, "token_mean")),
  )


def timed(fn, n: int) -> list[float]:
  out = []
  for _ in range(n):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    out.append(time.perf_counter() - t0)
  return out


def matmul_peak(dtype: str, n: int, repeats: int = 5) -> float:
  """FLOP/s of a jitted n x n x n jnp.dot in `dtype` (median of `repeats`)."""
  k1, k2 = jax.random.split(jax.random.key(0))
  a = jax.random.normal(k1, (n, n), dtype)
  b = jax.random.normal(k2, (n, n), dtype)
  dot = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=dtype))
  jax.block_until_ready(dot(a, b))
  return 2.0 * n**3 / statistics.median(timed(lambda: dot(a, b), repeats))


def breakdown(cfg, state, ref, batch, opt, mesh, n: int) -> dict[str, float]:
  """Seconds of the parts of a step, each jitted alone: one forward, vocab log-softmax, Adam."""
  b, t = batch.tokens.shape
  with mesh_lib.use_rules(mesh):
    fwd = jax.jit(lambda p: decoder.forward(cfg, p, batch.tokens, batch.positions)[0])
    logits = fwd(ref)
    lsm = jax.jit(lambda x: losses.token_logprobs(x, jnp.asarray(batch.tokens)))
    upd = jax.jit(lambda s: opt.update(s.params, s.opt_state, s.params))
    jax.block_until_ready((lsm(logits), upd(state)))
    return {
      "forward (1 model)": statistics.median(timed(lambda: fwd(ref), n)),
      "log-softmax over vocab": statistics.median(timed(lambda: lsm(logits), n)),
      "optimizer update": statistics.median(timed(lambda: upd(state), n)),
    }


def parse_args(argv):
  parser = argparse.ArgumentParser(prog=argv[0], description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="", help="model preset; '' = Gemma-style --width")
  parser.add_argument("--width", type=int, default=512)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--vocab", type=int, default=8192)
  parser.add_argument("--seq", type=int, default=256, help="stream slots (unless --gen_len)")
  parser.add_argument("--prompt_len", type=int, default=0, help="prompt slots (with --gen_len)")
  parser.add_argument("--gen_len", type=int, default=0, help="slots per attempt; 0 = from --seq")
  parser.add_argument("--instr_len", type=int, default=0, help="instruction slots (--gen_len)")
  parser.add_argument(
    "--paper_math",
    action="store_true",
    help="experiments/score_math.py's streams: prompt 1024 + 2 attempts of 1024 + instruction "
    "128, remat dots_with_no_batch_dims_saveable (set --batch / --microbatches to the slice)",
  )
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--remat", default="none", help="ModelConfig.remat_policy")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--microbatches", type=int, default=1)
  parser.add_argument("--peak_n", type=int, default=0, help="matmul size; 0 = 2048 CPU, 16384")
  parser.add_argument(
    "--spec_peak_tflops",
    type=float,
    default=0.0,
    help="the chip's spec dense peak per device; 0 = from parallel.targets by device kind",
  )
  parser.add_argument("--breakdown", action="store_true", help="also time the parts")
  args = parser.parse_args(argv[1:])
  if args.paper_math:
    args.prompt_len, args.gen_len, args.instr_len = 1024, 1024, 128
    args.remat = "dots_with_no_batch_dims_saveable"
  if args.gen_len:
    if min(args.prompt_len, args.gen_len, args.instr_len) <= 0:
      parser.error("--gen_len needs --prompt_len and --instr_len > 0 too")
    args.seq = args.prompt_len + 2 * args.gen_len + args.instr_len
  if args.batch % args.microbatches:
    parser.error(f"--batch={args.batch} is not a multiple of --microbatches={args.microbatches}")
  return args


def spec_peak(args, dev) -> tuple[float, str]:
  """(FLOP/s per device, its source) of the chip's spec sheet; (0, reason) when unknown."""
  if args.spec_peak_tflops:
    return args.spec_peak_tflops * 1e12, "--spec_peak_tflops"
  chip = targets.chip_for_device_kind(dev.device_kind)
  if chip is None or args.dtype != "bfloat16":
    why = f"no spec for {dev.device_kind!r}" if chip is None else "spec peaks are bf16"
    return 0.0, why
  return chip.peak_bf16_flops, f"{chip.name} dense bf16 spec (parallel.targets)"


def report_mfu(args, cfg, times, xla_flops, head_slots, dev) -> None:
  """Step time, achieved FLOP/s and MFU against the same-run matmul peak and the spec peak."""
  step_s = statistics.median(times)
  model_flops = flops.policy_update(cfg, args.batch, args.seq, head_slots)
  peak_n = args.peak_n or (2048 if dev.platform == "cpu" else 16384)
  peak = matmul_peak(args.dtype, peak_n) * jax.device_count()
  spec, spec_src = spec_peak(args, dev)
  spec *= jax.device_count()
  print(f"step: median {step_s:.3f} s over {args.steps} ({', '.join(f'{x:.3f}' for x in times)})")
  print(f"matmul peak ({peak_n}^3 {args.dtype} jnp.dot, all devices): {peak / 1e9:.1f} GFLOP/s")
  print(
    f"spec peak, all devices: {spec / 1e9:.1f} GFLOP/s ({spec_src})"
    if spec
    else f"spec: {spec_src}"
  )
  for name, count in (("analytic model", model_flops), ("XLA cost (loops 1x)", xla_flops)):
    rate, best = count / step_s, count / min(times)
    line = (
      f"{name:19s}: {count / 1e9:10.1f} GFLOP/step  {rate / 1e9:8.1f} GFLOP/s  "
      f"MFU {100 * rate / peak:.1f}% of the matmul peak (best step: {100 * best / peak:.1f}%)"
    )
    print(line + (f", {100 * rate / spec:.1f}% of the spec peak" if spec else ""))


def main(argv):
  args = parse_args(argv)
  cfg = model_config(args)
  mesh = mesh_lib.make_mesh({"fsdp": -1})
  layout = stream_layout(args)
  # As the trainer: logits only before the loss tokens (at most 2 attempts' worth per row).
  max_new = max(layout[1], args.seq - sum(layout))
  lc = steps.LossConfig(samples_per_prompt=2, max_new_tokens=max_new)
  ocfg = optim.OptimConfig(learning_rate=1e-6)
  opt = optim.make_optimizer(ocfg)
  stage2 = steps.Steps(cfg, lc, opt, mesh, args.microbatches, optim.make_schedule(ocfg)).update(
    "stage2"
  )
  coef = Coefficients.of(alpha=10.0, beta1=0.01, beta2=0.1)  # the paper's MATH values
  state = optim.init_train_state(cfg, opt, mesh, jax.random.key(0))
  ref = jax.tree.map(jnp.copy, state.params)
  batch = episode_batch(cfg, args.batch, args.seq, layout)
  dev = jax.devices()[0]
  print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}; {time.ctime()}")
  print(
    f"model: {args.preset or 'gemma-style'} d={cfg.embed_dim} f={cfg.hidden_dim} "
    f"L={cfg.num_layers} h={cfg.num_heads}x{cfg.head_dim} v={cfg.vocab_size} "
    f"params={decoder.count_params(cfg) / 1e6:.1f}M dtype={cfg.dtype} remat={cfg.remat_policy}"
  )
  print(
    f"batch {args.batch} x seq {args.seq} (prompt {layout[0]}, attempts {layout[1]} + "
    f"{args.seq - sum(layout)}, instruction {layout[2]}), micro-batches {args.microbatches}, "
    f"logits at <= {lc.max_loss_tokens} slots per row"
  )

  t0 = time.perf_counter()
  compiled = stage2.lower(state, ref, batch, coef).compile()
  print(f"compile: {time.perf_counter() - t0:.1f} s")
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  xla_flops = float(cost.get("flops", 0.0)) if cost else 0.0

  state, _ = stage2(state, ref, batch, coef)  # warm-up
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, metrics = stage2(state, ref, batch, coef)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t0)
  report_mfu(args, cfg, times, xla_flops, min(lc.max_loss_tokens, args.seq), dev)
  if args.breakdown:
    step_s = statistics.median(times)
    for name, sec in breakdown(cfg, state, ref, batch, opt, mesh, args.steps).items():
      print(f"  {name:24s} {sec:.3f} s ({100 * sec / step_s:.0f}% of a step)")
