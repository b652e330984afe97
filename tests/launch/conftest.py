"""Fixtures for the launcher tests: stand-ins for gcloud, ssh and sbatch that only record calls."""

import os
import stat
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def recording_tools(tmp_path):
  """PATH with gcloud / ssh / sbatch that append their argv to a file and succeed.

  Returns (env, calls_file): a dry run must leave calls_file absent.
  """
  bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
  bin_dir.mkdir()
  for tool in ("gcloud", "ssh", "sbatch"):
    path = bin_dir / tool
    path.write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  return env, calls


@pytest.fixture
def launcher():
  """Runs `python launch/<script> ARGS` as a user types it, from `cwd` (default: the repo root)."""

  def run(script: str, *args: str, env=None, cwd=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, os.path.join(REPO, "launch", script), *args]
    return subprocess.run(cmd, cwd=cwd or REPO, env=env, capture_output=True, text=True, timeout=60)

  return run
