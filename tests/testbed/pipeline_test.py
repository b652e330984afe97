"""The testbed job end to end (`experiments/testbed.py:quick`, what CI runs) and its resume."""

import json
import os

import pytest

from experiments import testbed as testbed_exp
from score_jax import configs
from score_jax.testbed import pipeline
from tests import helpers


def _main(workdir, *flags):
  return helpers.run_main("experiments/testbed.py:quick", workdir, *flags, timeout=900)


def test_config_is_validated_up_front():
  c = testbed_exp.get_config("quick")
  configs.validate(c)
  c.testbed.mixture.check += 0.3  # the three shares no longer sum to 1
  with pytest.raises(configs.ConfigError, match="config.testbed.mixture: copy \\+ resolve"):
    configs.validate(c)
  c = testbed_exp.get_config("quick")
  c.testbed.mixture.fast_form = "essay"
  with pytest.raises(configs.ConfigError, match="config.testbed.mixture.fast_form"):
    configs.validate(c)
  c = testbed_exp.get_config("quick")
  c.testbed.methods = ("score", "dance")  # not a row of the paper's tables
  with pytest.raises(configs.ConfigError, match="config.testbed.methods"):
    configs.validate(c)
  with pytest.raises(ValueError, match="unknown argument 'huge'"):
    testbed_exp.get_config("huge")


def test_a_workdir_refuses_another_config(tmp_path):
  c = testbed_exp.get_config("quick")
  pipeline.check_workdir_config(c, str(tmp_path))
  pipeline.check_workdir_config(testbed_exp.get_config("quick"), str(tmp_path))  # same: fine
  c.stage2.alpha = 1.0
  with pytest.raises(configs.ConfigError, match="config.stage2.alpha"):
    pipeline.check_workdir_config(c, str(tmp_path))


def test_a_workdir_takes_more_seeds_and_methods(tmp_path):
  # Each RL run is cached under its own name: adding seeds reuses the base model and runs done.
  c = testbed_exp.get_config("quick")
  pipeline.check_workdir_config(c, str(tmp_path))
  c.testbed.rl_seeds = (0, 1, 2)
  c.testbed.methods = ("score",)
  pipeline.check_workdir_config(c, str(tmp_path))
  c.testbed.pretrain_steps += 1  # but not a different base model
  with pytest.raises(configs.ConfigError, match="config.testbed.pretrain_steps"):
    pipeline.check_workdir_config(c, str(tmp_path))


@pytest.mark.slow
def test_quick_testbed_runs_every_phase_then_resumes_from_cache(tmp_path):
  workdir = tmp_path / "tb"
  first = _main(workdir)
  assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
  for phase in ("tokenizer:", "pretraining", "base_seed0:", "score_seed0:", "naive_seed0:"):
    assert f"[testbed] {phase}" in first.stdout, phase
  files = set(os.listdir(workdir / "report"))
  assert {
    "results.md",
    "results.json",
    "accuracy_curves.png",
    "flips.png",
    "edit_ratios.png",
  } <= files
  results = json.loads((workdir / "report" / "results.json").read_text())
  assert [r["method"] for r in results["rows"]] == ["base", "score", "naive"]
  by = {r["method"]: r for r in results["runs"]}
  assert by["score"]["metrics"]["num_examples"] == 100
  assert [p["phase"] for p in by["score"]["curve"]][-1] == "stage2"
  assert {p["phase"] for p in by["naive"]["curve"]} == {"naive_multiturn"}
  timings = json.loads((workdir / "timings.json").read_text())
  assert {"tokenizer", "pretrain", "eval/base_seed0", "rl/score_seed0", "rl/naive_seed0"} <= set(
    timings
  )
  # The same runs as the paper's tables (python -m score_jax.report over runs/).
  paper_md = (workdir / "report" / "paper" / "results.md").read_text()
  assert "Table 4: ablations" in paper_md and "SCoRe" in paper_md
  # The Stage II run really trained with the SCoRe objective, the baseline with the naive one.
  score_cfg = json.loads((workdir / "runs" / "score_seed0" / "config.json").read_text())
  naive_cfg = json.loads((workdir / "runs" / "naive_seed0" / "config.json").read_text())
  assert score_cfg["rl"]["method"] == "score" and naive_cfg["rl"]["method"] == "naive_multiturn"
  # Rerun: every phase is cached, the same table comes out.
  second = _main(workdir)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "[testbed] tokenizer: cached" in second.stdout
  assert "[testbed] score_seed0: cached" in second.stdout
  assert json.loads((workdir / "report" / "results.json").read_text())["rows"] == results["rows"]
