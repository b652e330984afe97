"""launch/tpu_vm.py: the exact gcloud commands for a v5e-16 slice, --dry-run, and bad input."""

import shlex
import subprocess

import pytest

from launch import commands, tpu_vm

REPO_URL = "https://github.com/example/score_jax.git"
SLICE = tpu_vm.make_slice("score-v5e", "us-west4-a", "v5e-16", "my-proj")
WHERE = ["score-v5e", "--zone=us-west4-a", "--project=my-proj"]
QR = ["gcloud", "compute", "tpus", "queued-resources"]
SSH = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", *WHERE]
MAIN = (
  "python -m score_jax.main --config=experiments/score_math.py --workdir=gs://bucket/score_math "
  "--config.distributed.enabled=True --config.model.checkpoint=../gemma-2-2b-it "
  "'--config.rollout.gen_buckets=(1024,)'"
)
FETCH = "gcloud storage cp -r gs://bucket/gemma-2-2b-it ~/"
OVERRIDES = ["--config.model.checkpoint=../gemma-2-2b-it", "--config.rollout.gen_buckets=(1024,)"]


def test_v5e_16_is_four_hosts_of_v5litepod_16():
  t = SLICE.target
  assert (t.accelerator_type, t.chip.runtime_version, t.num_hosts) == (
    "v5litepod-16",
    "v2-alpha-tpuv5-lite",
    4,
  )


@pytest.mark.parametrize(
  "provisioning, flags", [("on-demand", []), ("spot", ["--spot"]), ("reserved", ["--reserved"])]
)
def test_create_queued_resource(provisioning, flags):
  assert tpu_vm.create_command(SLICE, provisioning) == [
    *QR, "create", *WHERE, "--node-id=score-v5e", "--accelerator-type=v5litepod-16",
    "--runtime-version=v2-alpha-tpuv5-lite", *flags,
  ]  # fmt: skip


def test_describe_and_delete():
  assert tpu_vm.describe_command(SLICE) == [*QR, "describe", *WHERE, "--format=value(state.state)"]
  assert tpu_vm.delete_command(SLICE) == [*QR, "delete", *WHERE, "--force", "--quiet"]


def test_setup_installs_the_git_ref_with_the_tpu_extra_on_every_worker():
  argv = tpu_vm.setup_command(SLICE, REPO_URL, "v0.3.1")
  assert argv[:-1] == [*SSH, "--worker=all"]
  steps = argv[-1].removeprefix("--command=").split(" && ")
  assert steps[:4] == [
    f"if [ ! -d score_jax/.git ]; then git clone --quiet {REPO_URL} score_jax; fi",
    "cd score_jax",
    "git fetch --quiet origin v0.3.1",
    "git checkout --quiet --detach FETCH_HEAD",
  ]
  assert ". .venv/bin/activate" in steps and "pip install --quiet -e '.[tpu]'" in steps
  assert "--python 3.11 .venv" in argv[-1]  # jax 0.10.2 needs it; TPU VM images ship 3.10


def test_run_starts_the_main_command_detached_on_every_worker():
  argv = tpu_vm.run_command(SLICE, "experiments/score_math.py", "gs://bucket/score_math", OVERRIDES)
  assert argv[:-1] == [*SSH, "--worker=all"]
  script = argv[-1].removeprefix("--command=")
  assert (
    f"{{ setsid nohup {MAIN} >> {commands.LOG} 2>&1 < /dev/null & echo $! > {commands.PID}; }}"
    in script
  )
  assert script.startswith("cd score_jax && . .venv/bin/activate && ")


def test_worker_setup_runs_last_in_the_checkout_and_exec_runs_anything():
  argv = tpu_vm.setup_command(SLICE, REPO_URL, "main", worker_setup=FETCH)
  assert argv[-1].endswith(f'installed" && {FETCH}')
  assert tpu_vm.ssh_command(SLICE, "pgrep -a python", "3") == [
    *SSH, "--worker=3", "--command=pgrep -a python"
  ]  # fmt: skip


def test_logs_follow_worker_0_and_stop_signals_every_worker():
  assert tpu_vm.logs_command(SLICE) == [
    *SSH, "--worker=0",
    '--command=tail -n 100 -f --pid="$(cat "$HOME/score_jax.pid")" "$HOME/score_jax.log"'
  ]  # fmt: skip
  assert tpu_vm.stop_command(SLICE)[-2:] == ["--worker=all", f"--command={commands.stop_script()}"]


def test_single_host_slice_runs_without_jax_distributed():
  s = tpu_vm.make_slice("one", "us-west4-a", "v5e-8")
  argv = tpu_vm.run_command(s, "experiments/score_math.py:tiny", "/tmp/run")
  assert "--config.distributed.enabled" not in argv[-1] and "--workdir=/tmp/run" in argv[-1]
  assert tpu_vm.create_command(s)[-2:] == [
    "--accelerator-type=v5litepod-8",
    "--runtime-version=v2-alpha-tpuv5-lite",
  ]


def _fake_describe(monkeypatch, states):
  seen = []

  def run(argv, **kwargs):
    seen.append(argv)
    return subprocess.CompletedProcess(argv, 0, stdout=states[len(seen) - 1] + "\n", stderr="")

  monkeypatch.setattr(tpu_vm.subprocess, "run", run)
  return seen


def test_wait_polls_describe_until_active(monkeypatch):
  seen = _fake_describe(monkeypatch, ["WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"])
  tpu_vm.wait_until_active(SLICE, timeout_s=60, poll_s=0)
  assert seen == [tpu_vm.describe_command(SLICE)] * 3


def test_wait_gives_up_on_a_dead_queued_resource(monkeypatch):
  _fake_describe(monkeypatch, ["WAITING_FOR_RESOURCES", "FAILED"])
  with pytest.raises(SystemExit, match="score-v5e is FAILED: `delete` it and `create` again"):
    tpu_vm.wait_until_active(SLICE, timeout_s=60, poll_s=0)


UP = [
  "up", "--name=score-v5e", "--zone=us-west4-a", "--project=my-proj", "--target=v5e-16", "--spot",
  f"--repo={REPO_URL}", "--ref=v0.3.1", f"--worker_setup={FETCH}",
  "--config=experiments/score_math.py", "--workdir=gs://bucket/score_math", *OVERRIDES,
  "--delete_after", "--dry-run",
]  # fmt: skip


def test_up_dry_run_prints_every_command_and_runs_none(recording_tools, launcher):
  env, calls = recording_tools
  res = launcher("tpu_vm.py", *UP, env=env)
  assert res.returncode == 0, res.stderr
  expected = [
    tpu_vm.create_command(SLICE, "spot"),
    tpu_vm.describe_command(SLICE),
    tpu_vm.setup_command(SLICE, REPO_URL, "v0.3.1", worker_setup=FETCH),
    tpu_vm.run_command(SLICE, "experiments/score_math.py", "gs://bucket/score_math", OVERRIDES),
    tpu_vm.logs_command(SLICE),
    tpu_vm.delete_command(SLICE),
  ]
  lines = res.stdout.splitlines()
  assert lines[1] == "# repeat every 30 s until it prints ACTIVE:"
  assert [shlex.split(line) for line in lines[:1] + lines[2:]] == expected
  assert not calls.exists()


def test_sub_commands_without_dry_run_call_gcloud(recording_tools, launcher):
  env, calls = recording_tools
  res = launcher("tpu_vm.py", "delete", "--name=score-v5e", "--zone=us-west4-a", env=env)
  assert res.returncode == 0, res.stderr
  assert (
    calls.read_text()
    == "gcloud compute tpus queued-resources delete score-v5e --zone=us-west4-a --force --quiet\n"
  )


@pytest.mark.parametrize(
  "args, message",
  [
    (["create", "--spot", "--reserved"], "argument --reserved: not allowed with argument --spot"),
    (["create", "--target=v5e-12"], "--target=v5e-12: v5e-12: no v5e slice of 12 chips"),
    (["create", "--target=tpu9000"], "unknown target 'tpu9000'"),
    (["create", "--target=h100x8"], "--target=h100x8 is not a TPU target"),
    (
      ["run", "--config=c.py", "--workdir=/tmp/run"],
      "--workdir='/tmp/run': a v5e-16 slice has 4 hosts",
    ),  # fmt: skip
    (
      ["run", "--config=c.py", "--workdir=gs://b/r", "--steps=3"],
      "unrecognised argument '--steps=3'",
    ),  # fmt: skip
    (
      ["run", "--config=c.py", "--workdir=gs://b/r", "--config.x", "1"],
      "unrecognised argument '--config.x'",
    ),  # fmt: skip
    (["delete", "--config.x=1"], "delete takes no --config.* overrides"),
  ],
)
def test_bad_input_names_the_flag(recording_tools, launcher, args, message):
  env, calls = recording_tools
  res = launcher("tpu_vm.py", args[0], "--name=n", "--zone=z", *args[1:], "--dry-run", env=env)
  assert res.returncode == 2 and message in res.stderr, res.stderr
  assert not calls.exists() and not res.stdout
