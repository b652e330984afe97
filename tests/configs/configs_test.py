"""Experiment configs: every file loads and validates; bad values and typos fail naming the field;
jobs and task names are checked against their registries."""

import glob
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from score_jax import configs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Files starting with "_" are shared helpers of the experiment files, not experiments.
EXPERIMENTS = sorted(
  p for p in glob.glob(os.path.join(REPO, "experiments", "*.py")) if "/_" not in p
)
PAPER_TABLES = [p for p in EXPERIMENTS if os.path.basename(p).startswith("paper_table")]


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_there_are_experiments():
  assert EXPERIMENTS, "experiments/ holds no config files"


def _readme_configs() -> list[tuple[str, str]]:
  """Every `experiments/<file>.py:<arg>` README names beyond "" and "tiny", which every file is
  checked with below (templates like `<row>` left out)."""
  with open(os.path.join(REPO, "README.md")) as f:
    text = f.read()
  found = re.findall(r"experiments/(\w+\.py)(?::([\w,]+))?(?![\w<:])", text)
  return sorted({(name, arg) for name, arg in found if arg not in ("", "tiny")})


def test_readme_names_configs():
  assert ("testbed_v2.py", "one_seed") in _readme_configs()


# README's commands name arguments beyond "" and "tiny" (command 1 is `testbed_v2.py:one_seed`):
# each must load and validate as it is written there.
@pytest.mark.parametrize("name,arg", _readme_configs(), ids=lambda v: v or "default")
def test_every_config_readme_names_validates(name, arg):
  config = _load(os.path.join(REPO, "experiments", name)).get_config(arg)
  configs.validate(config, num_devices=8)


@pytest.mark.parametrize("path", sorted(set(EXPERIMENTS) - set(PAPER_TABLES)), ids=os.path.basename)
@pytest.mark.parametrize("arg", ["", "tiny"])
def test_experiment_loads_and_validates(path, arg):
  config = _load(path).get_config(arg)
  configs.validate(config, num_devices=8)


@pytest.mark.parametrize("path", PAPER_TABLES, ids=os.path.basename)
def test_every_paper_row_loads_and_validates(path):
  from score_jax.configs import paper

  table = os.path.basename(path)[len("paper_") : -len(".py")]
  module = _load(path)
  for row in paper.rows_of(table):
    for arg in (row.name, f"{row.name},tiny"):
      config = module.get_config(arg)
      assert (config.rl.method, config.report.row) == (row.method, row.name)
      if "repair" in config.eval.suite:  # built once per model by the repair_set job
        config.eval.repair_set = "/path/to/repair_set.jsonl"
      configs.validate(config, num_devices=8)
  with pytest.raises(ValueError, match="must name one row"):
    module.get_config("tiny")


@pytest.mark.parametrize(
  "path, value, match",
  [
    ("generate.temperature", -1.0, r"config\.generate\.temperature = -1\.0"),
    ("generate.top_p", 0.0, r"config\.generate\.top_p = 0\.0: expected a number in \(0, 1\]"),
    ("generate.max_new_tokens", 0, r"config\.generate\.max_new_tokens"),
    ("model.preset", "gemma-3b", r"config\.model\.preset = 'gemma-3b': unknown preset"),
    ("model.dtype", "float8", r"config\.model\.dtype"),
    ("job", "dance", r"config\.job"),
  ],
)
def test_bad_values_name_the_field(path, value, match):
  config = configs.base_config()
  section, _, field = path.rpartition(".")
  (config[section] if section else config)[field] = value
  with pytest.raises(configs.ConfigError, match=match):
    configs.validate(config)


def test_score_jobs_check_the_decode_layout():
  config = configs.base_config()
  config.job = "score"
  configs.validate(config)
  config.rollout.decode_layout = "fast"
  with pytest.raises(
    configs.ConfigError, match=r"config\.rollout\.decode_layout = 'fast': expected one of"
  ):
    configs.validate(config)


def test_score_jobs_check_the_weight_gather():
  config = configs.base_config()
  config.job = "score"
  assert config.rollout.weight_gather == "per_call"
  config.rollout.weight_gather = "per_step"
  configs.validate(config)
  config.rollout.weight_gather = "once"
  with pytest.raises(
    configs.ConfigError,
    match=r"config\.rollout\.weight_gather = 'once': expected one of \('per_call', 'per_step'\)",
  ):
    configs.validate(config)


def test_mesh_must_divide_devices():
  config = configs.base_config()
  config.mesh.tensor = 3
  with pytest.raises(configs.ConfigError, match=r"config\.mesh.*does not divide the 8 devices"):
    configs.validate(config, num_devices=8)
  config.mesh.tensor, config.mesh.data = -1, -1
  with pytest.raises(configs.ConfigError, match="at most one axis may be -1"):
    configs.validate(config, num_devices=8)
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, -1, 2
  assert configs.mesh_shape(config, 8) == (2, 2, 2)


def test_save_writes_resolved_config(tmp_path):
  config = configs.base_config()
  configs.save(config, str(tmp_path))
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["model"]["preset"] == config.model.preset
  assert saved["generate"]["max_new_tokens"] == config.generate.max_new_tokens


def test_jobs_are_registered_and_unknown_ones_say_how_to_register():
  assert {"generate", "score", "evaluate"} <= set(configs.job_names())
  assert configs.get_job("score").module == "score_jax.trainer.loop"
  config = configs.base_config()
  config.job = "dance"
  with pytest.raises(
    configs.ConfigError, match=r"config\.job = 'dance': expected one of .*register_job"
  ):
    configs.validate(config)


def test_a_registered_job_runs_its_own_validation():
  def check(config):
    if config.seed != 7:
      raise configs.ConfigError(f"config.seed = {config.seed}: the toy job needs 7.")

  configs.register_job(configs.Job("toy", "score_jax.generate", validate=check))
  try:
    config = configs.base_config()
    config.job = "toy"
    with pytest.raises(configs.ConfigError, match="the toy job needs 7"):
      configs.validate(config)
    config.seed = 7
    configs.validate(config)
    with pytest.raises(ValueError, match="already registered"):
      configs.register_job(configs.Job("toy", "score_jax.generate"))
  finally:
    configs.unregister_job("toy")


def test_task_names_are_checked_against_the_task_registry():
  config = configs.base_config()
  config.job = "score"
  config.data.task = "procedural:chain_sum"
  configs.validate(config)
  config.data.task = "nope"
  want = r"config\.data\.task = 'nope': expected one of .*'math'.*register"
  with pytest.raises(configs.ConfigError, match=want):
    configs.validate(config)
  config.data.task, config.data.eval_task = "math", "procedural:"
  with pytest.raises(configs.ConfigError, match=r"config\.data\.eval_task = 'procedural:'"):
    configs.validate(config)


def test_score_job_batch_must_split_over_the_mesh():
  config = configs.base_config()
  config.job = "score"
  config.train.global_batch, config.mesh.fsdp = 12, 8
  with pytest.raises(configs.ConfigError, match=r"must be divisible by the mesh's batch shards"):
    configs.validate(config, num_devices=8)


def _main(*flags):
  cmd = [sys.executable, "-m", "score_jax.main", *flags]
  return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)


def test_cli_rejects_typo_and_wrong_type(tmp_path):
  demo = "--config=experiments/generate_demo.py:tiny"
  typo = _main(demo, f"--workdir={tmp_path}", "--config.generate.max_new_tokenz=3")
  assert typo.returncode != 0 and "max_new_tokenz" in typo.stderr
  wrong_type = _main(demo, f"--workdir={tmp_path}", "--config.generate.max_new_tokens=many")
  assert wrong_type.returncode != 0 and "max_new_tokens" in wrong_type.stderr
  bad_value = _main(demo, f"--workdir={tmp_path}", "--config.generate.top_p=1.5")
  assert bad_value.returncode != 0 and "config.generate.top_p = 1.5" in bad_value.stderr
  assert not (tmp_path / "config.json").exists()  # nothing ran, nothing written
