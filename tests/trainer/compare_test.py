"""The compare job: config checks (fast) and the real SmolLM2 `:tiny` run end to end (slow)."""

import importlib.util
import json
import os

import pytest

from score_jax import configs
from score_jax.configs import ConfigError
from score_jax.trainer import compare

_spec = importlib.util.spec_from_file_location(
  "smollm2_selfcorrect",
  os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "smollm2_selfcorrect.py"),
)
exp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(exp)


def test_config_validates_and_bad_fields_are_named():
  c = exp.get_config()
  configs.validate(c, num_devices=1)
  c.compare.methods = ("score", "nope")
  with pytest.raises(ConfigError, match="compare.methods"):
    configs.validate(c, num_devices=1)
  c = exp.get_config()
  c.compare.methods, c.compare.export_methods = ("score",), ("naive",)  # naive is not run
  with pytest.raises(ConfigError, match="compare.export_methods"):
    configs.validate(c, num_devices=1)
  with pytest.raises(ValueError, match="unknown argument"):
    exp.get_config("huge")


def test_rl_config_is_a_score_job_of_the_row():
  c = compare.rl_config(exp.get_config(), "naive", 3)
  assert c.job == "score" and c.seed == 3 and c.rl.method == "naive_multiturn"
  assert "compare" not in c


def test_workdir_of_another_config_is_refused(tmp_path):
  c = exp.get_config("tiny")
  from score_jax.trainer import method_runs

  method_runs.check_workdir_config(c, str(tmp_path), "compare", compare.RUN_SELECTION)
  c.compare.rl_seeds = (0, 1)  # run selection: fine
  method_runs.check_workdir_config(c, str(tmp_path), "compare", compare.RUN_SELECTION)
  c.optim.lr = 1.0
  with pytest.raises(ConfigError, match="optim.lr"):
    method_runs.check_workdir_config(c, str(tmp_path), "compare", compare.RUN_SELECTION)


@pytest.mark.slow
def test_tiny_runs_resumes_and_export_matches_transformers(tmp_path):
  from score_jax.models import fetch
  from score_jax.trainer import hf_check

  try:
    fetch.smollm2_gguf_path()
  except fetch.FetchError as e:
    if os.environ.get("CI"):
      raise
    pytest.skip(f"SmolLM2 GGUF not reachable: {e}")
  c = exp.get_config("tiny")
  rows = compare.run(c, str(tmp_path))
  assert [r["method"] for r in rows] == ["base", "score"]
  timings = json.loads((tmp_path / "timings.json").read_text())
  assert compare.run(c, str(tmp_path)) == rows  # a rerun resumes: every phase cached
  assert json.loads((tmp_path / "timings.json").read_text()) == timings
  parity = hf_check.check_export(str(tmp_path), "score_seed0", 16)
  assert parity.num_problems == 16 and parity.rate >= 15 / 16, parity.differing
