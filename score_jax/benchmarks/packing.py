"""`bench packing`: a pretraining SFT step, one transcript per row vs packed; scanned vs unrolled.

  python -m score_jax.benchmarks packing                   # the testbed's model and transcripts
  python -m score_jax.benchmarks packing --lengths=300:50,900:50 --width=1024 --preset=tiny-gemma

Transcripts get the lengths of `--lengths` (length:percent pairs; the default is the testbed
corpus of design 34: copies 74 tokens, one-attempt transcripts 42, written redos 151-155) in
streams of `--width` slots. Each step draws a fresh batch. The unpacked layout is trimmed to a
multiple of 32 slots, as `pretrain` did before packing; the packed one is `pretrain.pack_rows`.
Both layouts are timed in this one process on the same batches, alternating step by step
(every row-count shape is compiled before timing), and the ratio of the medians is printed with
the slots each uses. Each layout also runs with the layers as an XLA loop (`scan_layers=True`)
and unrolled (the testbed preset's choice: on CPU the loop costs more than 4 layers' worth of
extra compile). All variants' losses on the same first batch are checked to agree, since
neither packing nor unrolling may change what is learnt.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from score_jax.models import decoder, presets
from score_jax.parallel import mesh as mesh_lib
from score_jax.rl import losses, optim, steps
from score_jax.rl.experience import Experience
from score_jax.testbed import pretrain

SLOT_QUANTUM = 32  # the unpacked layout is trimmed to a multiple of this (few shapes)
DESIGN_34_LENGTHS = "42:8,74:44,122:2,151:5,153:15,155:26"  # measured on its 20000 transcripts


def corpus_streams(cfg, n: int, width: int, lengths: str, seed: int = 0) -> dict:
  """Right-padded SFT streams [n, width] whose lengths follow `lengths` (length:percent)."""
  pairs = [tuple(int(x) for x in item.split(":")) for item in lengths.split(",")]
  values, weights = np.array(pairs).T
  if values.max() > width:
    raise SystemExit(f"--lengths: a {values.max()}-token transcript does not fit --width={width}")
  rng = np.random.default_rng(seed)
  length_n = rng.choice(values, size=n, p=weights / weights.sum())
  valid = np.arange(width) < length_n[:, None]
  return {
    "tokens": np.where(valid, rng.integers(3, cfg.vocab_size, (n, width)), 0).astype(np.int32),
    "positions": np.broadcast_to(np.arange(width, dtype=np.int32), (n, width)).copy(),
    "valid": valid,
    "loss_mask": valid & (np.arange(width) >= 30),  # the prompt is context, not target
  }


def _batches(streams, rows, shards: int) -> dict[str, Experience]:
  """The step's two layouts of the same transcripts, with their normalizers."""
  used = int(streams["valid"][rows].sum(1).max())
  width = min(-(-used // SLOT_QUANTUM) * SLOT_QUANTUM, streams["tokens"].shape[1])
  out = {
    "one per row": {k: v[rows, :width] for k, v in streams.items()},
    "packed": pretrain.pack_rows(streams, rows, np.lcm(pretrain.ROW_QUANTUM, shards)),
  }
  norm = lambda b: np.float32(losses.aggregation_normalizers(b["loss_mask"], "token_mean"))
  return {layout: Experience(**b, normalizer=norm(b)) for layout, b in out.items()}


def main(argv):
  parser = argparse.ArgumentParser(prog=argv[0], description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="testbed-gemma")
  parser.add_argument("--batch", type=int, default=32, help="transcripts per step")
  parser.add_argument("--width", type=int, default=160, help="stream slots")
  parser.add_argument("--lengths", default=DESIGN_34_LENGTHS, help="length:percent,...")
  parser.add_argument("--steps", type=int, default=20)
  args = parser.parse_args(argv[1:])

  mesh = mesh_lib.make_mesh({"fsdp": -1})
  ocfg = optim.OptimConfig(learning_rate=1e-6)
  opt = optim.make_optimizer(ocfg)
  lc = steps.LossConfig(samples_per_prompt=1, baseline="none")
  run = {}
  for scan in (True, False):
    cfg = presets.get_preset(args.preset, scan_layers=scan)
    sft = steps.Steps(cfg, lc, opt, mesh, 1, optim.make_schedule(ocfg)).update("sft")
    layers = "scanned" if scan else "unrolled"
    run.update({("one per row", layers): sft, ("packed", layers): sft})
  state = optim.init_train_state(cfg, opt, mesh, jax.random.key(0))  # same tree either way
  streams = corpus_streams(cfg, 4096, args.width, args.lengths)
  shards = mesh_lib.batch_shards(mesh)
  rng = np.random.default_rng(1)
  plan = [
    _batches(streams, rng.choice(4096, args.batch, replace=False), shards)
    for _ in range(args.steps)
  ]
  dev = jax.devices()[0]
  print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}; {time.ctime()}")
  print(
    f"model: {args.preset} params={decoder.count_params(cfg) / 1e6:.2f}M; "
    f"{args.batch} transcripts per step"
  )
  # The same first batch from the same state in every variant; then compile every other shape.
  first_loss = {
    key: float(fn(jax.tree.map(jnp.copy, state), plan[0][key[0]])[1]["loss"])
    for key, fn in run.items()
  }
  compiled = {(key, plan[0][key[0]].tokens.shape) for key in run}
  for batches in plan:
    for key, fn in run.items():
      if (key, batches[key[0]].tokens.shape) not in compiled:
        compiled.add((key, batches[key[0]].tokens.shape))
        fn(jax.tree.map(jnp.copy, state), batches[key[0]])
  times = {key: [] for key in run}
  for batches in plan:
    for key, fn in run.items():
      t0 = time.perf_counter()
      state, m = fn(state, batches[key[0]])  # the state is donated: carry it on
      jax.block_until_ready((state, m))
      times[key].append(time.perf_counter() - t0)
  real = np.mean([b["one per row"].valid.sum() for b in plan])
  for layout in ("one per row", "packed"):
    slots = np.mean([b[layout].tokens.size for b in plan])
    shapes = sorted({b[layout].tokens.shape for b in plan})
    print(f"{layout:12s}: mean {slots:.0f} slots for {real:.0f} real tokens; shapes {shapes}")
  med = {k: statistics.median(v) for k, v in times.items()}
  base = med[("one per row", "scanned")]
  for key, v in med.items():
    print(
      f"{key[0]:12s} {key[1]:9s}: median {v * 1e3:.1f} ms/step over {args.steps}, "
      f"speed-up {base / v:.2f}x; first loss {first_loss[key]:.6f}"
    )
  if max(first_loss.values()) - min(first_loss.values()) > 1e-4:
    raise SystemExit(f"the variants' losses differ ({first_loss}): they must give the same update")
