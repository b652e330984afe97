"""Every row of the paper's Tables 1-4 runs end to end in its `tiny` form, with the evaluations
behind the figures (scaling, K attempts, fixed first attempts, pass@k, MBPP-R stand-in), and
`python -m score_jax.report` renders them all."""

import json
import os
import subprocess
import sys

import pytest

from score_jax import configs
from score_jax.configs import paper
from score_jax.trainer import loop
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROWS = [(t, r.name) for t in ("table1", "table2", "table3", "table4") for r in paper.rows_of(t)]


def _config(table: str, arg: str):
  return helpers.experiment_config(f"paper_{table}", arg)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  import jax

  # The rows of a table share shapes: the persistent cache compiles each program once.
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return tmp_path_factory.mktemp("paper")


@pytest.fixture(scope="module")
def repair_set(root):
  """Table 3's MBPP-R stand-in: the tiny base model's failing MBPP test programs."""
  c = _config("table3", "base,tiny")
  c.job = "repair_set"
  c.eval.repair_out = str(root / "repair_set.jsonl")
  configs.validate(c, num_devices=8)
  from score_jax.trainer import repair

  repair.build_repair_set(c, c.eval.repair_out)
  return c.eval.repair_out


@pytest.fixture(scope="module")
def runs(root, repair_set):
  """Every row of Tables 1-4 trained and evaluated in its `tiny` form: {(table, row): workdir}."""
  out = {}
  for table, row in ROWS:
    c = _config(table, f"{row},tiny")
    if table == "table3":
      c.eval.repair_set = repair_set
    configs.validate(c, num_devices=8)
    workdir = root / table / f"{row}_seed0"
    configs.save(c, str(workdir))
    loop.run(c, str(workdir))
    out[table, row] = (c, workdir)
  return out


@pytest.mark.slow
@pytest.mark.parametrize("table,row", ROWS)
def test_row_runs_in_tiny_form(runs, table, row):
  c, workdir = runs[table, row]
  assert c.report.table == table and c.report.row == row
  for name in c.eval.suite:
    assert (workdir / "eval" / f"{name}.json").exists(), name
  with open(workdir / "eval" / "final.json") as f:
    final = json.load(f)
  assert final["metrics"]["num_examples"] == c.eval.num_examples
  assert final["method"] == paper.get_row(row).method


@pytest.mark.slow
def test_report_renders_every_table(root, runs):
  out = root / "report"
  proc = subprocess.run(
    [sys.executable, "-m", "score_jax.report", *(str(w) for _, w in runs.values()), f"--out={out}"],
    capture_output=True,
    text=True,
    cwd=REPO,
  )
  assert proc.returncode == 0, proc.stdout + proc.stderr
  md = (out / "results.md").read_text()
  # Every row finished. A run is a row of each table that prints it (Tables 1, 2 and 4 share the
  # MATH base, STaR D+, Pair-SFT and SCoRe), so those tables' own runs of them are duplicates.
  assert "4 missing / unfinished" in md and md.count("duplicate of") == 4
  for table in ("table1", "table2", "table3", "table4"):
    for r in paper.rows_of(table):
      assert r.title in md, (table, r.title)
  for png in ("scaling.png", "attempts.png", "edit_distance.png"):
    assert (out / png).stat().st_size > 0
