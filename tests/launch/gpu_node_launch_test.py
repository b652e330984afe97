"""launch/gpu_node.py: one GPU node, here or over ssh; the exact commands, --dry-run, bad input."""

import shlex

import pytest

from launch import commands, gpu_node

MAIN = [
  "env", "XLA_PYTHON_CLIENT_MEM_FRACTION=0.9", "python", "-m", "score_jax.main",
  "--config=experiments/score_math.py", "--workdir=/data/score_math",
  "--config.model.checkpoint=/data/gemma-2-2b-it",
]  # fmt: skip
OVERRIDES = ["--config.model.checkpoint=/data/gemma-2-2b-it"]


def test_here_runs_the_main_command_in_the_foreground_one_process_all_gpus():
  argv = gpu_node.run_commands("", "experiments/score_math.py", "/data/score_math", OVERRIDES)
  assert argv == [MAIN]  # no jax.distributed: one process sees every GPU of the node


def test_over_ssh_starts_detached_then_follows_the_log():
  start, follow = gpu_node.run_commands(
    "me@gpu-box", "experiments/score_math.py", "/data/score_math", OVERRIDES
  )
  script = commands.detached_run_script(MAIN, "score_jax")
  assert start == ["ssh", "me@gpu-box", f"bash -c {shlex.quote(script)}"]
  assert follow == ["ssh", "me@gpu-box", f"bash -c {shlex.quote(commands.follow_log_script())}"]
  assert shlex.join(MAIN) in script


def test_setup_installs_the_git_ref_with_the_cuda_extra():
  argv = gpu_node.setup_command("gpu-box", "https://example.com/score_jax.git", "abc123", "sj")
  assert argv[:2] == ["ssh", "gpu-box"]
  script = shlex.split(argv[2])[2]  # bash -c SCRIPT
  assert "git fetch --quiet origin abc123 && git checkout --quiet --detach FETCH_HEAD" in script
  assert script.startswith(
    "if [ ! -d sj/.git ]; then git clone --quiet https://example.com/score_jax.git sj; fi && cd sj"
  )
  assert "pip install --quiet -e '.[cuda]'" in script


def test_dry_run_prints_and_runs_nothing(recording_tools, launcher):
  env, calls = recording_tools
  args = ["run", "--host=me@gpu-box", "--config=experiments/score_math.py"]
  res = launcher(
    "gpu_node.py", *args, "--workdir=/data/score_math", *OVERRIDES, "--dry-run", env=env
  )
  assert res.returncode == 0, res.stderr
  expected = gpu_node.run_commands(
    "me@gpu-box", "experiments/score_math.py", "/data/score_math", OVERRIDES
  )
  assert [shlex.split(line) for line in res.stdout.splitlines()] == expected
  assert not calls.exists()
  res = launcher("gpu_node.py", "run", "--config=c.py", "--workdir=/w", "--dry-run", env=env)
  assert res.stdout == (
    "env XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 python -m score_jax.main --config=c.py --workdir=/w\n"
  )


def test_stop_over_ssh_calls_ssh(recording_tools, launcher):
  env, calls = recording_tools
  res = launcher("gpu_node.py", "stop", "--host=gpu-box", env=env)
  assert res.returncode == 0, res.stderr
  assert calls.read_text() == f"ssh gpu-box bash -c {shlex.quote(commands.stop_script())}\n"


@pytest.mark.parametrize(
  "args, message",
  [
    (["run", "--target=v5e-16"], "--target=v5e-16 is not a CUDA target"),
    (["run", "--target=a100x8"], "--target=a100x8: unknown target 'a100x8'"),
    (["logs"], "the following arguments are required: --host"),
    (["setup", "--repo=u", "--config.x=1"], "setup takes no --config.* overrides"),
  ],
)
def test_bad_input_names_the_flag(recording_tools, launcher, args, message):
  env, calls = recording_tools
  run_flags = ["--config=c.py", "--workdir=/w"] if args[0] == "run" else []
  res = launcher("gpu_node.py", *args, *run_flags, "--dry-run", env=env)
  assert res.returncode == 2 and message in res.stderr, res.stderr
  assert not calls.exists() and not res.stdout
