"""`bench compaction`: the update on streams as the sampler lays them out vs with holes dropped.

  python -m score_jax.benchmarks compaction                  # the testbed's model and shapes
  python -m score_jax.benchmarks compaction --preset=gemma-2b --batch=8 --prompt=512 --gen=1024

Streams are built the way `rollout` leaves them: a left-padded prompt bucket, then per attempt a
generation bucket of which the attempt fills only its own length (the rest are holes), with the
instruction between. `Experience.compact` drops the holes. Both layouts are timed in this
one process, alternating step by step, and the ratio of the medians is printed; the two updates
are also checked to agree (same loss), since compaction must not change what is learnt.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from score_jax.benchmarks import train_step
from score_jax.models import decoder, presets
from score_jax.parallel import mesh as mesh_lib
from score_jax.rl import optim, steps
from score_jax.rl.algorithms import Coefficients


def sampler_layout(cfg, b: int, prompt: int, gen: int, instr: int, lens, seed: int = 0) -> dict:
  """Episode streams [b, prompt + gen + instr + gen]: attempt a fills lens[a] of its bucket."""
  rng = np.random.default_rng(seed)
  s = prompt + 2 * gen + instr
  tokens = rng.integers(3, cfg.vocab_size, (b, s)).astype(np.int32)
  valid = np.zeros((b, s), bool)
  turn = np.zeros((b, s), np.int32)
  for i in range(b):
    p = int(rng.integers(prompt // 2, prompt + 1))
    valid[i, prompt - p : prompt] = True
    y1 = int(rng.integers(*lens[0]))
    valid[i, prompt : prompt + y1] = True
    turn[i, prompt : prompt + y1] = 1
    valid[i, prompt + gen : prompt + gen + instr] = True
    start2 = prompt + gen + instr
    y2 = int(rng.integers(*lens[1]))
    valid[i, start2 : start2 + y2] = True
    turn[i, start2 : start2 + y2] = 2
  return train_step.stream_batch(tokens, valid, turn, rng)


def main(argv):
  parser = argparse.ArgumentParser(prog=argv[0], description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="testbed-gemma")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--prompt", type=int, default=40, help="prompt bucket")
  parser.add_argument("--gen", type=int, default=104, help="generation bucket per attempt")
  parser.add_argument("--instr", type=int, default=21, help="instruction tokens")
  parser.add_argument("--y1", default="10,12", help="attempt-1 length range lo,hi")
  parser.add_argument("--y2", default="10,93", help="attempt-2 length range lo,hi")
  parser.add_argument("--multiple", type=int, default=32, help="Experience.compact's multiple")
  parser.add_argument("--steps", type=int, default=5)
  args = parser.parse_args(argv[1:])

  cfg = presets.get_preset(args.preset)
  mesh = mesh_lib.make_mesh({"fsdp": -1})
  lc = steps.LossConfig(samples_per_prompt=4)
  coef = Coefficients.of(beta1=0.01, beta2=0.1)
  ocfg = optim.OptimConfig(learning_rate=1e-6)
  opt = optim.make_optimizer(ocfg)
  stage1 = steps.Steps(cfg, lc, opt, mesh, 1, optim.make_schedule(ocfg)).update("stage1")
  state = optim.init_train_state(cfg, opt, mesh, jax.random.key(0))
  ref = jax.tree.map(jnp.copy, state.params)
  lens = [tuple(int(x) for x in v.split(",")) for v in (args.y1, args.y2)]
  full = sampler_layout(cfg, args.batch, args.prompt, args.gen, args.instr, lens)
  small = full.compact(args.multiple)
  dev = jax.devices()[0]
  print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}; {time.ctime()}")
  print(f"model: {args.preset} params={decoder.count_params(cfg) / 1e6:.2f}M; batch {args.batch}")
  print(
    f"streams: sampler layout {full.num_slots} slots, compacted {small.num_slots} (real tokens "
    f"per row: mean {full.valid.sum(1).mean():.0f}, max {full.valid.sum(1).max()})"
  )
  losses_seen, times = {}, {"sampler layout": [], "compacted": []}
  for name, batch in (("sampler layout", full), ("compacted", small)):
    _, m = stage1(jax.tree.map(jnp.copy, state), ref, batch, coef)  # compile; the same start
    losses_seen[name] = float(m["loss"])
  for _ in range(args.steps):
    for name, batch in (("sampler layout", full), ("compacted", small)):
      t0 = time.perf_counter()
      state, m = stage1(state, ref, batch, coef)  # the state is donated: carry it on
      jax.block_until_ready((state, m))
      times[name].append(time.perf_counter() - t0)
  med = {k: statistics.median(v) for k, v in times.items()}
  for k, v in med.items():
    print(f"{k:15s}: median {v:.3f} s/update over {args.steps}, loss {losses_seen[k]:.6f}")
  print(f"speed-up (sampler layout / compacted): {med['sampler layout'] / med['compacted']:.2f}x")
  if abs(losses_seen["sampler layout"] - losses_seen["compacted"]) > 1e-4:
    raise SystemExit("compaction changed the loss: the two layouts must give the same update")
