"""`python -m score_jax.benchmarks rewards` runs end to end and prints a figure for every workload."""

import re

from score_jax.benchmarks import rewards as rewards_bench


def test_every_workload_prints_its_throughput_and_outcomes(capsys):
  rewards_bench.main(
    ["rewards", "--programs=20", "--rounds=1", "--math=5", "--timeout_s=0.5", "--workers=2"]
  )
  out = capsys.readouterr().out
  rows = {
    m.group(1).strip(): (int(m.group(2)), float(m.group(4)), m.group(5))
    for m in re.finditer(r"^(\S.{39}) +(\d+) +([\d.]+) +([\d.]+)  (.*)$", out, re.M)
  }
  assert rows["benign programs, one-shot"][2] == "correct=20", out
  assert rows["benign programs, zygote"][2] == "correct=20", out
  assert rows["MATH500 checks"][2] == "correct=5", out
  # Every tenth of the 20 never finishes: 2 timeouts, the other 18 correct.
  for name in ("hang", "burners"):
    n, per_s, outcomes = rows[f"programs, 10% {name} (0.5s), zygote"]
    assert n == 20 and per_s > 0 and outcomes == "correct=18 timeout=2", out
  assert re.search(r"benign throughput zygote / one-shot: [\d.]+x", out), out
