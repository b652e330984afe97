"""launch/commands.py's shell snippets, run for real under bash in a throw-away HOME.

The snippets run on TPU VM workers and GPU nodes; here the "run" is a small Python program that,
like score_jax.main, exits 0 on SIGTERM.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from launch import commands

CHILD = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (print("saved, exiting", flush=True), sys.exit(0)))
print("training", flush=True)
while True:
  time.sleep(0.05)
"""


def _bash(script: str, home) -> subprocess.CompletedProcess:
  env = dict(os.environ, HOME=str(home))
  return subprocess.run(
    ["bash", "-c", script], cwd=home, env=env, capture_output=True, text=True, timeout=30
  )


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  return not open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] == "Z"


@pytest.fixture
def home(tmp_path):
  (tmp_path / "checkout" / ".venv" / "bin").mkdir(parents=True)
  (tmp_path / "checkout" / ".venv" / "bin" / "activate").write_text("")
  yield tmp_path
  pid_file = tmp_path / "score_jax.pid"
  if pid_file.exists() and _alive(pid := int(pid_file.read_text())):
    os.kill(pid, signal.SIGKILL)  # the detached child this test started


def _wait_for(predicate, what: str, timeout_s: float = 20.0) -> None:
  deadline = time.monotonic() + timeout_s
  while not predicate():
    assert time.monotonic() < deadline, what
    time.sleep(0.02)


def test_detached_run_outlives_its_shell_refuses_a_second_and_stops_on_sigterm(home):
  run = commands.detached_run_script([sys.executable, "-c", CHILD], "checkout")
  res = _bash(run, home)
  assert res.returncode == 0 and "started pid" in res.stdout, res.stderr
  pid = int((home / "score_jax.pid").read_text())
  log = home / "score_jax.log"
  _wait_for(lambda: "training" in log.read_text(), "the run never logged")
  assert _alive(pid)  # the shell that started it is gone
  again = _bash(run, home)
  assert again.returncode == 1 and "a run is in flight" in again.stderr
  follow = subprocess.Popen(["bash", "-c", commands.follow_log_script()], cwd=home,
                            env=dict(os.environ, HOME=str(home)),
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
  time.sleep(0.3)
  assert follow.poll() is None  # follows while the run lives
  stop = _bash(commands.stop_script(), home)
  assert stop.returncode == 0 and f"sent SIGTERM to pid {pid}" in stop.stdout
  out, _ = follow.communicate(timeout=20)  # ... and ends with it
  assert "saved, exiting" in out and "launch:" in out
  _wait_for(lambda: not _alive(pid), "the run ignored SIGTERM")
  # A relaunch after the run ended (a crash, a stop) starts again and appends to the same log.
  assert _bash(run, home).returncode == 0
  _wait_for(lambda: log.read_text().count("training") == 2, "the relaunch never logged")
  assert log.read_text().count("launch:") == 2


def test_setup_script_is_valid_shell_and_quotes_its_inputs():
  script = commands.setup_script("https://h/o r.git", "feature/x;rm -rf ~", "tpu", "my dir")
  res = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
  assert res.returncode == 0, res.stderr
  assert "git clone --quiet 'https://h/o r.git' 'my dir'" in script
  assert "git fetch --quiet origin 'feature/x;rm -rf ~'" in script


@pytest.mark.parametrize(
  "call, message",
  [
    (lambda: commands.main_command("", "/w"), "--config is required"),
    (lambda: commands.main_command("c.py", ""), "--workdir is required"),
    (lambda: commands.setup_script("", "main", "tpu", "d"), "--repo and --ref are required"),
    (lambda: commands.check_overrides(["--config.a"]), "unrecognised argument '--config.a'"),
  ],
)
def test_errors_name_the_flag(call, message):
  with pytest.raises(commands.LaunchError, match=message):
    call()
