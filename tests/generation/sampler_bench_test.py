"""`python -m score_jax.benchmarks sampler` at tiny sizes, our side alone: the header names the
weights' dtype, and every printed figure exists and is positive."""

import os
import pathlib
import re
import statistics
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
NUM = r"([0-9.]+)"


def test_float32_weights_with_bfloat16_compute_print_positive_figures(tmp_path):
  flags = os.environ.get("SCORE_NUMERICS_XLA_FLAGS", "")
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=1".strip(),
  )
  cmd = [sys.executable, "-m", "score_jax.benchmarks", "sampler", "--batch=4", "--prompt_len=16"]
  cmd += ["--gen_len=8", "--instr_len=8", "--repeats=1", "--dtype=bfloat16"]
  cmd += ["--param_dtype=float32", f"--tunix_python={tmp_path / 'no-tunix'}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
  out = proc.stdout
  assert proc.returncode == 0, out[-2000:] + proc.stderr[-4000:]
  assert "dtype=bfloat16 weights=float32" in out, out
  assert "tunix side SKIPPED" in out
  for turns in (1, 2):
    m = re.search(rf"{turns}-turn ours : median\s+{NUM} tok/s", out)
    assert m and float(m.group(1)) > 0, out
  # Eight tiny steps: beside the other test worker the differential can come out negative, which
  # the benchmark must say rather than print as a time (it once printed -0.23 ms).
  step = re.search(
    rf"decode step .*: (?:{NUM} ms wall|not measured) \(median of ([0-9./-]+)\W.*matmul floor "
    rf"{NUM} ms",
    out,
  )
  assert step and float(step.group(3)) > 0, out
  if step.group(1) is None:
    assert statistics.median(map(float, step.group(2).split("/"))) <= 0, out
  else:
    assert float(step.group(1)) > 0, out
  assert len(step.group(2).split("/")) == 5, out  # the differential pairs behind the median
  # The step's weight matmuls timed alone, or said to be unmeasurable, never a negative time.
  alone = re.search(rf"weight matmuls alone .*: (?:{NUM} ms at {NUM} GFLOP/s|not measured)", out)
  assert alone, out
  assert alone.group(1) is None or min(float(alone.group(1)), float(alone.group(2))) > 0, out
