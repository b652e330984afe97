"""launch/slurm.py: the sbatch script of a 2-node x 8-GPU job, its SIGTERM -> requeue path,
--dry-run."""

import os
import signal
import stat
import subprocess
import time

import pytest

from launch import slurm

OVERRIDES = ["--config.model.checkpoint=/shared/gemma-2-2b-it"]
SRUN = (
  "srun --kill-on-bad-exit=1 python -m score_jax.main --config=experiments/score_math.py "
  "--workdir=/shared/runs/score_math --config.distributed.enabled=True "
  "--config.model.checkpoint=/shared/gemma-2-2b-it"
)
ARGS = [
  "--nodes=2", "--target=h100x8", "--partition=gpu", "--account=proj", "--time=12:00:00",
  "--config=experiments/score_math.py", "--workdir=/shared/runs/score_math",
  "--repo_dir=/shared/score_jax", *OVERRIDES,
]  # fmt: skip


def _script(repo_dir="/shared/score_jax", **options) -> str:
  job = slurm.make_job(2, "h100x8", partition="gpu", account="proj", time="12:00:00", **options)
  srun = slurm.srun_command(job, "experiments/score_math.py", "/shared/runs/score_math", OVERRIDES)
  return slurm.batch_script(job, srun, repo_dir)


def test_two_nodes_of_eight_gpus_header_and_srun_line():
  lines = _script().splitlines()
  assert lines[:12] == [
    "#!/bin/bash",
    "#SBATCH --job-name=score_jax",
    "#SBATCH --nodes=2",
    "#SBATCH --ntasks-per-node=1",
    "#SBATCH --gpus-per-node=8",
    "#SBATCH --time=12:00:00",
    "#SBATCH --partition=gpu",
    "#SBATCH --account=proj",
    "#SBATCH --output=%x-%j.out",
    "#SBATCH --open-mode=append",
    "#SBATCH --requeue",
    "#SBATCH --signal=B:TERM@300",
  ]
  assert lines[12:17] == [
    "set -euo pipefail",
    "cd /shared/score_jax",
    ". .venv/bin/activate",
    "export XLA_PYTHON_CLIENT_MEM_FRACTION=0.9",
    "export JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7",  # one task drives all 8 GPUs
  ]
  assert lines[-3:] == [f"{SRUN} &", "srun_pid=$!", 'wait "$srun_pid"']
  assert "trap on_term TERM" in lines


def test_optional_header_fields():
  job = slurm.make_job(1, "h200x4", cpus_per_task=32, signal_lead_s=600)
  assert job.header()[3:5] == ["#SBATCH --gpus-per-node=4", "#SBATCH --time=24:00:00"]
  assert "#SBATCH --cpus-per-task=32" in job.header()
  assert job.header()[-1] == "#SBATCH --signal=B:TERM@600"
  assert not [line for line in job.header() if "partition" in line or "account" in line]


def test_dry_run_prints_the_script_and_sbatch_and_runs_nothing(recording_tools, launcher, tmp_path):
  env, calls = recording_tools
  res = launcher("slurm.py", *ARGS, "--dry-run", env=env, cwd=tmp_path)
  assert res.returncode == 0, res.stderr
  assert res.stdout == f"cat > score_jax.sbatch <<'EOF'\n{_script()}EOF\nsbatch score_jax.sbatch\n"
  assert not calls.exists() and not (tmp_path / "score_jax.sbatch").exists()


def test_submit_writes_the_script_and_calls_sbatch(recording_tools, launcher, tmp_path):
  env, calls = recording_tools
  res = launcher("slurm.py", *ARGS, "--script=job.sbatch", env=env, cwd=tmp_path)
  assert res.returncode == 0, res.stderr
  assert (tmp_path / "job.sbatch").read_text() == _script()
  assert calls.read_text() == "sbatch job.sbatch\n"


@pytest.mark.parametrize(
  "args, message",
  [
    (["--nodes=0"], "--nodes=0: a job needs at least one node"),
    (["--target=v5e-16"], "--target=v5e-16 is not a CUDA target"),
    (["--target=h100x9"], "--target=h100x9: h100x9: one node holds 1-8 GPUs"),
    (["--workdir=runs/x"], "--workdir='runs/x': every node must see the same path"),
    (["--signal_lead_s=0"], "--signal_lead_s must be positive"),
    (["--config.model.checkpoint", "/x"], "unrecognised argument '--config.model.checkpoint'"),
  ],
)
def test_bad_input_names_the_flag(recording_tools, launcher, tmp_path, args, message):
  env, calls = recording_tools
  res = launcher("slurm.py", *ARGS, *args, "--dry-run", env=env, cwd=tmp_path)
  assert res.returncode == 2 and message in res.stderr, res.stderr
  assert not calls.exists() and not res.stdout


def _fake_slurm(tmp_path, task: str):
  """srun runs `task` (a bash body); scancel sends SIGTERM to it; every call is recorded."""
  bin_dir, calls, pid = tmp_path / "bin", tmp_path / "calls.txt", tmp_path / "srun.pid"
  bin_dir.mkdir()
  bodies = {
    "srun": f'echo "srun $*" >> {calls}\necho $$ > {pid}\n{task}',
    "scancel": f'echo "scancel $*" >> {calls}\nkill -TERM "$(cat {pid})"',
    "scontrol": f'echo "scontrol $*" >> {calls}',
  }
  for tool, body in bodies.items():
    (bin_dir / tool).write_text(f"#!/bin/bash\n{body}\n")
    (bin_dir / tool).chmod(0o755 | stat.S_IEXEC)
  repo = tmp_path / "repo"
  (repo / ".venv" / "bin").mkdir(parents=True)
  (repo / ".venv" / "bin" / "activate").write_text("")
  (tmp_path / "job.sbatch").write_text(_script(repo_dir=str(repo)))
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_ID="42")
  env["SLURM_JOB_NODELIST"] = "node[1-2]"
  return env, calls, pid


def test_sigterm_to_the_batch_shell_saves_every_task_then_requeues(tmp_path):
  # The task stands in for score_jax.main: SIGTERM -> save -> exit 0.
  task = (f'trap \'echo "task saved" >> {tmp_path}/calls.txt; exit 0\' TERM\n'
          'while true; do sleep 0.05; done')  # fmt: skip
  env, calls, pid = _fake_slurm(tmp_path, task)
  batch = subprocess.Popen(["bash", str(tmp_path / "job.sbatch")], env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
  deadline = time.monotonic() + 30
  while not pid.exists():
    assert batch.poll() is None and time.monotonic() < deadline, batch.communicate()
    time.sleep(0.02)
  time.sleep(0.2)  # the task's trap is set
  batch.send_signal(signal.SIGTERM)  # what --signal=B:TERM@300 does before the time limit
  out, err = batch.communicate(timeout=30)
  assert batch.returncode == 0, err
  assert calls.read_text().splitlines() == [
    SRUN,
    "scancel --signal=TERM 42",
    "task saved",
    "scontrol requeue 42",
  ]
  assert "job 42, restart 0, nodes node[1-2]" in out


def test_a_failed_run_is_not_requeued(tmp_path):
  env, calls, _ = _fake_slurm(tmp_path, "exit 3")
  res = subprocess.run(
    ["bash", str(tmp_path / "job.sbatch")], env=env, capture_output=True, text=True, timeout=30
  )
  assert res.returncode == 3
  assert calls.read_text().splitlines() == [SRUN]
