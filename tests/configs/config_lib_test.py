"""Experiment configs: every file loads and validates; bad values and typos fail naming the field."""

import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from score_jax.configs import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPERIMENTS = sorted(glob.glob(os.path.join(REPO, "experiments", "*.py")))


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_there_are_experiments():
  assert EXPERIMENTS, "experiments/ holds no config files"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
@pytest.mark.parametrize("arg", ["", "tiny"])
def test_experiment_loads_and_validates(path, arg):
  config = _load(path).get_config(arg)
  config_lib.validate(config, num_devices=8)


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
  config = config_lib.base_config()
  section, _, field = path.rpartition(".")
  (config[section] if section else config)[field] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(config)


def test_mesh_must_divide_devices():
  config = config_lib.base_config()
  config.mesh.tensor = 3
  with pytest.raises(config_lib.ConfigError, match=r"config\.mesh.*does not divide the 8 devices"):
    config_lib.validate(config, num_devices=8)
  config.mesh.tensor, config.mesh.data = -1, -1
  with pytest.raises(config_lib.ConfigError, match="at most one axis may be -1"):
    config_lib.validate(config, num_devices=8)
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, -1, 2
  assert config_lib.mesh_shape(config, 8) == (2, 2, 2)


def test_save_writes_resolved_config(tmp_path):
  config = config_lib.base_config()
  config_lib.save(config, str(tmp_path))
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["model"]["preset"] == config.model.preset
  assert saved["generate"]["max_new_tokens"] == config.generate.max_new_tokens


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
