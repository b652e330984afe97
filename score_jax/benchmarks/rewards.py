"""Reward throughput: `python -m score_jax.benchmarks rewards [--workers=2 --programs=300 ...]`.

Prints, through the real RewardPool on this machine:
- benign programs/s (tiny correct functions + asserts: pure sandbox overhead) for both ways of
  starting a sandbox: one-shot (a fresh `python -I -S` per program) and zygote (a fork of a
  pre-warmed per-worker zygote, the pool's default), interleaved in rounds so that a change in
  the host's load hits both alike, and their ratio;
- the CPU one program costs through the pool (pool process + workers + zygotes + sandboxes,
  from /proc), plus the CPU of kernel threads meanwhile (network-namespace teardown runs there;
  host-wide, so other load on the host inflates it), and the CPU-bound ceiling this implies on
  this host's cores: the figure that does not depend on how loaded the host is (the target:
  >= 100 benign programs/s on 2 cores);
- MATH checks/s (MATH500 gold answers written in the paper's final-answer format);
- programs/s when 10% of the programs never terminate. A timeout holds its worker for the whole
  `timeout_s` (the sandbox waits out the time limit; on a loaded host up to 4x that in wall
  time, since the limit counts the program's own time), so with W workers a batch of n items,
  a fraction p of them hanging, costs about (n*p*timeout_s + n*(1-p)*t_benign) / W seconds:
  at p=0.1, timeout_s=1 s and W=2 that is ~50 ms per item, whatever the benign speed;
- the same when the 10% fork eight CPU burners beside their own loop: the limit counts the CPU
  time of all a program's processes, so they hold a worker about as long as a plain hang (until
  2026-12-06 the main loop's clock crawled behind its own burners, to the 4x wall backstop).
Also runnable as `python -m score_jax.benchmarks.rewards`.
"""

import argparse
import json
import os
import pathlib
import sys
import time

from score_jax.rewards import code_reward, pool

_MATH500 = pathlib.Path(__file__).resolve().parents[1] / "data" / "files" / "math500_test.jsonl"
_MODES = ("one-shot", "zygote")


def _benign(n: int, salt: int = 0) -> list:
  return [
    ("code", (f"def f(x):\n  return x + {i}\n", f"assert f(1) == {i + 1}"))
    for i in range(salt, salt + n)
  ]


_HANG = "while True: pass"
_BURNERS = (
  "import os\nfor _ in range(8):\n  if os.fork() == 0:\n    while True: pass\nwhile True: pass"
)


def _every_tenth(items: list, program: str) -> list:
  """`items` with every tenth replaced by `program` (which never finishes)."""
  return [("code", (program, "assert True")) if i % 10 == 0 else x for i, x in enumerate(items)]


def _math_items(n: int) -> list:
  if not _MATH500.exists():
    raise ValueError(f"{_MATH500}: MATH500 file not found (needed for the math benchmark)")
  rows = [json.loads(line) for line in _MATH500.read_text().splitlines() if line.strip()]
  fmt = "Final Answer: The final answer is ${}$. I hope it is correct."
  return [("math", (fmt.format(r["answer"]), r["answer"])) for r in rows[:n]]


def _timed(p: pool.RewardPool, items: list) -> tuple[float, dict]:
  start = time.perf_counter()
  result = p.score(items)
  return time.perf_counter() - start, result.counts


def _stat(pid: int) -> tuple[int, float]:
  """(parent pid, CPU seconds of the process and its reaped descendants)."""
  with open(f"/proc/{pid}/stat") as f:
    fields = f.read().rsplit(")", 1)[1].split()
  return int(fields[1]), sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _pool_cpu(p: pool.RewardPool) -> float:
  """CPU seconds used so far by the pool's workers and their zygotes (runs they reaped included)."""
  workers = set(p.pids())
  total = sum(_stat(pid)[1] for pid in workers)
  for entry in filter(str.isdigit, os.listdir("/proc")):
    try:
      ppid, cpu = _stat(int(entry))
    except (OSError, IndexError):
      continue  # exited while we looked
    total += cpu if ppid in workers else 0.0  # zygotes
  return total


def _kthread_cpu() -> float:
  """CPU seconds used so far by kernel threads (children of kthreadd, pid 2)."""
  total = 0.0
  for entry in filter(str.isdigit, os.listdir("/proc")):
    try:
      ppid, cpu = _stat(int(entry))
    except (OSError, IndexError):
      continue
    total += cpu if ppid == 2 else 0.0
  return total


def _self_cpu() -> float:
  times = os.times()
  return times.user + times.system


def _load() -> str:
  return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(prog=argv[0], description=__doc__.splitlines()[0])
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--programs", type=int, default=300, help="benign programs per mode")
  parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per mode")
  parser.add_argument("--math", type=int, default=200)
  parser.add_argument("--timeout_s", type=float, default=1.0, help="sandbox limit, mixed run")
  args = parser.parse_args(argv[1:])
  print(f"host: {os.cpu_count()} cores, load average {_load()} (1/5/15 min), euid {os.geteuid()}")
  print(f"sandbox layers: {code_reward.run_tests('x = 1', '').layers}")
  per_round = max(1, args.programs // args.rounds)
  secs, cpu, kcpu = (dict.fromkeys(_MODES, 0.0) for _ in range(3))
  rows = []
  with (
    pool.RewardPool(args.workers, code_timeout_s=args.timeout_s, zygote=False) as one_shot,
    pool.RewardPool(args.workers, code_timeout_s=args.timeout_s, warm=("math",)) as zygote,
  ):
    pools = dict(zip(_MODES, (one_shot, zygote)))
    for p in pools.values():
      p.score(_benign(2 * args.workers))  # first-use costs (zygote start) out of the measurement
    for r in range(args.rounds):
      for mode, p in pools.items():
        items = _benign(per_round, salt=r * per_round)
        cpu_before, kcpu_before = _pool_cpu(p), _kthread_cpu()
        self_before = _self_cpu()
        s, counts = _timed(p, items)
        cpu[mode] += _self_cpu() - self_before + _pool_cpu(p) - cpu_before
        kcpu[mode] += _kthread_cpu() - kcpu_before
        secs[mode] += s
        if counts["correct"] != per_round:
          raise RuntimeError(f"benign programs ({mode}) were not all correct: {counts}")
    n = per_round * args.rounds
    for mode in _MODES:
      rows.append((f"benign programs, {mode}", n, secs[mode], {"correct": n}))
    load_after_benign = _load()
    s, counts = _timed(zygote, _math_items(args.math))
    rows.append(("MATH500 checks", args.math, s, counts))
    for name, program in (("hang", _HANG), ("burners", _BURNERS)):
      s, counts = _timed(zygote, _every_tenth(_benign(args.programs, salt=10_000), program))
      label = f"programs, 10% {name} ({args.timeout_s:g}s), zygote"
      rows.append((label, args.programs, s, counts))
  print(f"\n{'workload':40s} {'items':>6s} {'seconds':>8s} {'items/s':>8s}  outcomes")
  for name, n_items, s, counts in rows:
    shown = " ".join(f"{k}={v}" for k, v in counts.items() if v)
    print(f"{name:40s} {n_items:6d} {s:8.2f} {n_items / s:8.1f}  {shown}")
  print(f"load average after the benign rounds: {load_after_benign}")
  print(f"benign throughput zygote / one-shot: {secs['one-shot'] / secs['zygote']:.2f}x")
  ms = {mode: 1000 * cpu[mode] / n for mode in _MODES}
  kms = {mode: 1000 * kcpu[mode] / n for mode in _MODES}
  cores = os.cpu_count()
  print("\nCPU per benign program through the pool (pool + workers + zygotes + sandboxes), and")
  print(f"the CPU-bound ceiling it implies on {cores} cores (with kernel threads' CPU added):")
  for mode in _MODES:
    total = ms[mode] + kms[mode]
    print(
      f"  {mode:9s} {ms[mode]:5.1f} ms -> {1000 * cores / ms[mode]:4.0f}/s   (+ kernel threads"
      f" {kms[mode]:4.1f} ms -> {1000 * cores / total:4.0f}/s)"
    )
  print(f"  ratio     {ms['one-shot'] / ms['zygote']:5.2f}x less CPU with the zygote")
  hang = args.timeout_s * 0.1
  print(
    f"10% hangs: each hang holds a worker {args.timeout_s:g}s -> >= {hang / args.workers:.3f}"
    f" s per item with {args.workers} workers ({args.workers / hang:.0f}/s ceiling)"
  )


if __name__ == "__main__":
  main(sys.argv)
