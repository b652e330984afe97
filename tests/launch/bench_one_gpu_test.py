"""launch/bench_one_gpu.sh: each part under what is left of the budget, its log in the folder."""

import os
import pathlib
import subprocess
import sys

import pytest

from tests import helpers

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "launch" / "bench_one_gpu.sh"


def _run(out: pathlib.Path, budget: int, **args) -> str:
  env = dict(
    os.environ,
    PYTHON=sys.executable,
    JAX_PLATFORMS="cpu",
    XLA_FLAGS="--xla_force_host_platform_device_count=1",
    SCORE_TUNIX_PYTHON=str(out / "no-tunix" / "python"),  # tunix sides skipped, ours run
    # The parts share shapes: a persistent compilation cache compiles each program once.
    **helpers.compilation_cache_env(out / "xla_cache"),
    **args,
  )
  proc = subprocess.run(
    ["bash", str(SCRIPT), str(out), str(budget)],
    capture_output=True,
    text=True,
    env=env,
    cwd=REPO,
    timeout=budget + 120,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc.stdout


def test_no_time_left_skips_every_part_but_the_environment(tmp_path):
  stdout = _run(tmp_path, 25)
  assert "devices [CpuDevice" in (tmp_path / "env.txt").read_text()
  skipped = [line for line in stdout.splitlines() if line.endswith("s left") and "SKIPPED" in line]
  assert len(skipped) == 6, stdout
  assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".log") == []


@pytest.mark.slow
def test_tiny_parts_all_run_and_leave_their_logs(tmp_path):
  tiny = "--batch=4 --prompt_len=16 --gen_len=8 --instr_len=8 --repeats=1"
  stdout = _run(
    tmp_path,
    600,
    LAYOUT_ARGS=tiny,
    SAMPLER_ARGS=tiny,
    RL_ARGS="--prompts=2 --samples=2 --prompt_len=16 --gen_len=4 --instr_len=4 --repeats=1 "
    "--warmup=1 --remat=full",
    TRAIN_ARGS="--width=64 --layers=1 --vocab=512 --batch=8 --seq=32 --steps=1 --peak_n=256",
  )
  assert "SKIPPED" not in stdout.replace("tunix side SKIPPED", ""), stdout
  logs = {p.name: p.read_text() for p in tmp_path.iterdir() if p.suffix == ".log"}
  assert set(logs) == {
    "sampler_layout_off.log",
    "sampler_layout_on.log",
    "sampler_f32_weights.log",
    "rl_step.log",
    "train_step.log",
    "sampler.log",
  }
  assert "decode_layout=False" in logs["sampler_layout_off.log"]
  assert "decode_layout=True" in logs["sampler_layout_on.log"]
  assert "weights=float32" in logs["sampler_f32_weights.log"]
  assert "two-turn/single-turn (ours)" in logs["rl_step.log"]
  assert "remat=full" in logs["rl_step.log"]
  assert "MFU" in logs["train_step.log"]
  assert (tmp_path / "rl_step.json").exists()
  assert "== done after" in stdout
