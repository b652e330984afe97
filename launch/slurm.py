"""A multi-node GPU job on SLURM: writes the sbatch script and submits it.

  python launch/slurm.py --nodes=2 --target=h100x8 --partition=gpu \
      --config=experiments/score_math.py --workdir=/shared/runs/score_math \
      --config.model.checkpoint=/shared/gemma-2-2b-it [--dry-run]

One task per node drives all of the node's GPUs; `srun` starts the same main command on every
node with --config.distributed.enabled=True and `jax.distributed` reads the SLURM variables.
The repo and its venv (`pip install -e '.[cuda]'`) live on a filesystem every node mounts
(--repo_dir, default: this checkout). Preemption and time limits: the job is --requeue'able and
its batch shell gets SIGTERM --signal_lead_s before the limit; it passes the SIGTERM to every
task (each saves its step and exits), then requeues the job, which reruns the script on the same
workdir and resumes. --dry-run prints the script as a `cat > FILE <<'EOF'` block and the sbatch
command: together, exactly what this runs.
"""

import argparse
import dataclasses
import os
import shlex
import subprocess
import sys

if __package__ in (None, ""):  # run as `python launch/slurm.py`: the repo root holds `launch`
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from launch import commands  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The batch shell's SIGTERM handler: ask every task to save (scancel signals all steps, not the
# batch shell), wait for them to exit, put the job back in the queue. The guard makes a second
# SIGTERM (the scheduler's own, when it preempts) a no-op.
_ON_TERM = """\
on_term() {
  [ -n "${terminating:-}" ] && return
  terminating=1
  echo "$(date -u +%FT%TZ) SIGTERM: every task saves its step, then the job is requeued"
  scancel --signal=TERM "$SLURM_JOB_ID" || true
  wait "$srun_pid" || true
  scontrol requeue "$SLURM_JOB_ID" || true
  exit 0
}
trap on_term TERM"""


@dataclasses.dataclass(frozen=True)
class Job:
  """What the sbatch header asks for; empty optional fields are left out."""

  nodes: int
  gpus_per_node: int
  time: str = "24:00:00"
  job_name: str = "score_jax"
  partition: str = ""
  account: str = ""
  cpus_per_task: int = 0  # 0: the cluster's default
  signal_lead_s: int = 300  # a step plus a save must fit in it

  def header(self) -> list[str]:
    lines = [
      f"--job-name={self.job_name}",
      f"--nodes={self.nodes}",
      "--ntasks-per-node=1",
      f"--gpus-per-node={self.gpus_per_node}",
      f"--time={self.time}",
    ]
    lines += [f"--partition={self.partition}"] if self.partition else []
    lines += [f"--account={self.account}"] if self.account else []
    lines += [f"--cpus-per-task={self.cpus_per_task}"] if self.cpus_per_task else []
    # A requeued job keeps its id: one output file, appended to by every restart.
    lines += ["--output=%x-%j.out", "--open-mode=append", "--requeue"]
    lines += [f"--signal=B:TERM@{self.signal_lead_s}"]
    return [f"#SBATCH {line}" for line in lines]


def make_job(nodes: int, target: str, **options) -> Job:
  """Checks the node count and that `target` (per node, e.g. h100x8) is a GPU node."""
  if nodes < 1:
    raise commands.LaunchError(f"--nodes={nodes}: a job needs at least one node")
  parsed = commands.parse_target(target, "cuda", "launch/tpu_vm.py")
  if options.get("signal_lead_s", 300) < 1:
    raise commands.LaunchError("--signal_lead_s must be positive")
  return Job(nodes, parsed.num_devices, **options)


def srun_command(job: Job, config: str, workdir: str, overrides=()) -> list[str]:
  """`srun python -m score_jax.main ... --config.distributed.enabled=True`."""
  if not (workdir.startswith("/") or "://" in workdir):
    raise commands.LaunchError(
      f"--workdir={workdir!r}: every node must see the same path; use an absolute path on the "
      f"shared filesystem or gs://BUCKET/PATH"
    )
  argv = commands.main_command(config, workdir, overrides, distributed=True)
  # One task failing (e.g. out of memory) ends the others instead of leaving them in collectives.
  return ["srun", "--kill-on-bad-exit=1", *argv]


def batch_script(job: Job, srun: list[str], repo_dir: str) -> str:
  """The whole sbatch file."""
  env = {
    **commands.GPU_ENV,
    # jax.distributed gives each SLURM task one GPU by default; this task drives all of them.
    "JAX_LOCAL_DEVICE_IDS": ",".join(str(i) for i in range(job.gpus_per_node)),
  }
  lines = ["#!/bin/bash", *job.header(), "set -euo pipefail", f"cd {shlex.quote(repo_dir)}"]
  lines += [". .venv/bin/activate"]
  lines += [f"export {k}={v}" for k, v in env.items()]
  lines += [
    'echo "=== $(date -u +%FT%TZ) job $SLURM_JOB_ID, restart ${SLURM_RESTART_COUNT:-0},'
    ' nodes $SLURM_JOB_NODELIST ==="',
    _ON_TERM,
    # In the background so the batch shell can take its SIGTERM while the tasks run.
    f"{shlex.join(srun)} &",
    "srun_pid=$!",
    'wait "$srun_pid"',
  ]
  return "\n".join(lines) + "\n"


def write_and_submit(script: str, path: str) -> str:
  """The shell transcript that --dry-run prints: write the file, then sbatch it."""
  return f"cat > {shlex.quote(path)} <<'EOF'\n{script}EOF\n{shlex.join(['sbatch', path])}"


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    description=__doc__.split("\n")[0],
    epilog="Every --config.<field>=<value> flag passes through to score_jax.main.",
  )
  p.add_argument("--nodes", type=int, required=True, help="how many nodes")
  p.add_argument("--target", default="h100x8", help="one node: h100x8, h200x8, h100x4, ...")
  p.add_argument("--config", required=True, help="experiments/<name>.py[:arg]")
  p.add_argument("--workdir", required=True, help="shared absolute path or gs://; reruns resume")
  p.add_argument("--repo_dir", default=REPO, help="the checkout with .venv, on a shared mount")
  p.add_argument("--time", default="24:00:00", help="time limit (the job requeues at it)")
  p.add_argument("--job_name", default="score_jax")
  p.add_argument("--partition", default="")
  p.add_argument("--account", default="")
  p.add_argument("--cpus_per_task", type=int, default=0, help="0: the cluster's default")
  p.add_argument("--signal_lead_s", type=int, default=300, help="SIGTERM this long before --time")
  p.add_argument("--script", default="", help="where to write the sbatch file; default JOB.sbatch")
  commands.add_dry_run(p)
  return p


def main(argv: list[str] | None = None) -> None:
  parser = _parser()
  args, overrides = parser.parse_known_args(argv)
  try:
    job = make_job(
      args.nodes,
      args.target,
      time=args.time,
      job_name=args.job_name,
      partition=args.partition,
      account=args.account,
      cpus_per_task=args.cpus_per_task,
      signal_lead_s=args.signal_lead_s,
    )
    script = batch_script(
      job, srun_command(job, args.config, args.workdir, overrides), args.repo_dir
    )
  except ValueError as e:  # LaunchError, or targets.parse naming the accepted forms
    parser.error(str(e))
  path = args.script or f"{args.job_name}.sbatch"
  if args.dry_run:
    print(write_and_submit(script, path))
    return
  with open(path, "w") as f:
    f.write(script)
  print(f"wrote {path}", file=sys.stderr)
  commands.execute([["sbatch", path]], dry_run=False, run=subprocess.run)


if __name__ == "__main__":
  main()
