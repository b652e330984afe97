"""Reward throughput: `python -m score_jax.bench rewards [--workers=2 --programs=300 ...]`.

Prints, through the real RewardPool on this machine:
- benign programs/s (tiny correct functions + asserts: pure sandbox overhead), and the CPU
  milliseconds one sandboxed run costs (measured sequentially, children included);
- MATH checks/s (MATH500 gold answers written in the paper's final-answer format);
- programs/s when 10% of the programs never terminate. A timeout holds its worker for the whole
  `timeout_s` (the sandbox waits out the wall-clock limit), so with W workers a batch of n items,
  a fraction p of them hanging, costs about (n*p*timeout_s + n*(1-p)*t_benign) / W seconds:
  at p=0.1, timeout_s=1 s and W=2 that is ~50 ms per item, whatever the benign speed.
Also runnable as `python -m score_jax.benchmarks.rewards`.
"""

import argparse
import json
import os
import pathlib
import resource
import sys
import time

from score_jax.rewards import code_reward, pool

_MATH500 = pathlib.Path(__file__).resolve().parents[1] / "data" / "files" / "math500_test.jsonl"


def _benign(n: int, salt: int = 0) -> list:
  return [("code", (f"def f(x):\n  return x + {i}\n", f"assert f(1) == {i + 1}"))
          for i in range(salt, salt + n)]  # fmt: skip


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


def _cpu_ms_per_run(n: int, **kw) -> float:
  def cpu():
    c, s = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    return c.ru_utime + c.ru_stime + s.ru_utime + s.ru_stime

  start = cpu()
  for i in range(n):
    code_reward.run_tests(f"def f():\n  return {i}", f"assert f() == {i}", **kw)
  return 1000 * (cpu() - start) / n


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(prog=argv[0], description=__doc__.splitlines()[0])
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--programs", type=int, default=300)
  parser.add_argument("--math", type=int, default=200)
  parser.add_argument("--timeout_s", type=float, default=1.0, help="sandbox limit, mixed run")
  args = parser.parse_args(argv[1:])
  print(f"host: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, euid {os.geteuid()}")
  print(f"sandbox layers: {code_reward.run_tests('x = 1', '').layers}")
  cpu_ms = _cpu_ms_per_run(30)
  cpu_ms_nons = _cpu_ms_per_run(30, namespaces=False)
  rows = []
  with pool.RewardPool(args.workers, code_timeout_s=args.timeout_s, warm=("math",)) as p:
    p.score(_benign(2 * args.workers))  # first-use costs out of the measurement
    secs, counts = _timed(p, _benign(args.programs))
    rows.append(("benign programs", args.programs, secs, counts))
    secs, counts = _timed(p, _math_items(args.math))
    rows.append(("MATH500 checks", args.math, secs, counts))
    mixed = _benign(args.programs, salt=10_000)
    for i in range(0, len(mixed), 10):
      mixed[i] = ("code", ("while True: pass", "assert True"))
    secs, counts = _timed(p, mixed)
    rows.append((f"programs, 10% hang ({args.timeout_s:g}s)", args.programs, secs, counts))
  print(f"\n{'workload':34s} {'items':>6s} {'seconds':>8s} {'items/s':>8s}  outcomes")
  for name, n, secs, counts in rows:
    shown = " ".join(f"{k}={v}" for k, v in counts.items() if v)
    print(f"{name:34s} {n:6d} {secs:8.2f} {n / secs:8.1f}  {shown}")
  print(f"\nCPU per sandboxed run: {cpu_ms:.1f} ms (no namespaces: {cpu_ms_nons:.1f} ms)")
  print(f"CPU-bound ceiling on {os.cpu_count()} cores: {1000 * os.cpu_count() / cpu_ms:.0f}/s")
  hang = args.timeout_s * 0.1
  print(
    f"10% hangs: each hang holds a worker {args.timeout_s:g}s -> >= {hang / args.workers:.3f}"
    f" s per item with {args.workers} workers ({args.workers / hang:.0f}/s ceiling)"
  )


if __name__ == "__main__":
  main(sys.argv)
