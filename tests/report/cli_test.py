"""`python -m score_jax.report` as a user runs it: a subprocess, its output, its exit code."""

import os
import subprocess
import sys

import numpy as np

from score_jax.report import workdirs
from tests.report import fake_workdirs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _report(*args: str) -> subprocess.CompletedProcess:
  cmd = [sys.executable, "-m", "score_jax.report", *args, "--num_resamples=200"]
  env = os.environ | {"JAX_PLATFORMS": "cpu"}
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_cli_writes_the_report_and_names_what_is_missing(tmp_path):
  rng = np.random.default_rng(0)
  for seed in (0, 1):
    correct = fake_workdirs.correctness(rng, 60, 0.5, 0.2, 0.05)
    fake_workdirs.make(str(tmp_path), f"score_s{seed}", "score", "table2", seed, correct_ba=correct)
  fake_workdirs.write_config(str(tmp_path / "base_unfinished"), "base", "table2", 0)
  missing = str(tmp_path / "nope")
  got = _report(str(tmp_path / "score_s0"), str(tmp_path / "score_s1"),
                str(tmp_path / "base_unfinished"), missing)  # fmt: skip
  assert got.returncode == 0, got.stderr
  out = tmp_path / "report"  # default: beside the first workdir
  assert got.stdout.rstrip().endswith(f"report: {out / 'results.md'}")
  assert f"{missing}: does not exist" in got.stdout
  assert "base_unfinished: unfinished: no eval/final.json" in got.stdout
  assert "scaling.png not written" in got.stdout
  md = (out / "results.md").read_text()
  assert "| SCoRe |" in md and "| 2 |" in md and "nope" in md
  assert (out / "training_curves.png").stat().st_size > 0 and (out / "results.json").exists()


def test_cli_takes_a_folder_of_workdirs(tmp_path):
  correct = fake_workdirs.correctness(np.random.default_rng(2), 40, 0.5, 0.2, 0.05)
  fake_workdirs.make(str(tmp_path / "sweep"), "base", "base", "table2", 0, correct_ba=correct)
  out = tmp_path / "elsewhere"
  got = _report(str(tmp_path / "sweep"), f"--out={out}")
  assert got.returncode == 0, got.stderr
  assert "| Base model |" in (out / "results.md").read_text()


def test_cli_exits_1_when_nothing_is_finished(tmp_path):
  fake_workdirs.write_config(str(tmp_path / "run"), "score", "table2", 0)
  got = _report(str(tmp_path / "run"), str(tmp_path / "gone"), f"--out={tmp_path / 'out'}")
  assert got.returncode == 1
  assert "no finished workdir" in got.stderr
  assert "unfinished: no eval/final.json" in got.stdout and "gone: does not exist" in got.stdout
  assert not (tmp_path / "out").exists()


def test_discover_expands_folders_and_names_strays(tmp_path):
  fake_workdirs.write_config(str(tmp_path / "a"), "score", "table2", 0)
  (tmp_path / "junk").mkdir()
  (tmp_path / "report").mkdir()
  (tmp_path / "old_report").mkdir()
  for name in ("results.md", "results.json"):
    (tmp_path / "old_report" / name).write_text("")
  found, missing = workdirs.discover([str(tmp_path)], exclude=(str(tmp_path / "report"),))
  assert found == [str(tmp_path / "a")]
  assert [(m.path, m.reason) for m in missing] == [(str(tmp_path / "junk"), "no config.json")]
