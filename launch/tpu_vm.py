"""Cloud TPU VM slices: create, set up, run on every worker, follow, stop, delete.

  python launch/tpu_vm.py up --name=score-v5e --zone=us-west4-a --target=v5e-16 --spot \
      --repo=https://github.com/OWNER/score_jax.git --ref=main \
      --worker_setup='gcloud storage cp -r gs://BUCKET/gemma-2-2b-it ~/' \
      --config=experiments/score_math.py --workdir=gs://BUCKET/runs/score_math \
      --config.model.checkpoint=../gemma-2-2b-it [--delete_after] [--dry-run]

Sub-commands: `create` (a queued resource: on-demand, --spot or --reserved), `setup` (clone the
git ref and `pip install -e '.[tpu]'` on every worker, then --worker_setup), `run` (the main
command on every worker, detached, from the checkout, with --config.distributed.enabled=True on
multi-host slices), `logs` (follow worker 0 until its run ends), `stop` (SIGTERM: save and
exit), `exec` (any shell command on every worker), `delete`, and `up` = create, wait until
ACTIVE, setup, run, logs (then delete with --delete_after). Multi-host runs are plain multi-
controller JAX (no Pathways): every worker runs the same command and `jax.distributed` finds the
others from the TPU metadata. Their workdir must be gs://, which every worker sees and which
outlives a preempted slice: relaunching `run` (after `up` again, if the slice was reclaimed)
resumes from the last checkpoint.
"""

import argparse
import dataclasses
import os
import shlex
import subprocess
import sys
import time

if __package__ in (None, ""):  # run as `python launch/tpu_vm.py`: the repo root holds `launch`
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from launch import commands  # noqa: E402
from score_jax.parallel import targets  # noqa: E402

PROVISIONING = ("on-demand", "spot", "reserved")
POLL_S = 30
# Queued-resource states after which waiting is pointless (the request will not become ACTIVE).
DEAD_STATES = ("FAILED", "SUSPENDED", "SUSPENDING", "DELETING")


@dataclasses.dataclass(frozen=True)
class Slice:
  """One queued resource holding one TPU VM slice of the same name."""

  name: str
  zone: str
  target: targets.Target
  project: str = ""

  def gcloud(self, *args: str) -> list[str]:
    """`gcloud compute tpus ARGS NAME --zone=Z [--project=P]`."""
    project = [f"--project={self.project}"] if self.project else []
    return ["gcloud", "compute", "tpus", *args, self.name, f"--zone={self.zone}", *project]


def make_slice(name: str, zone: str, target: str, project: str = "") -> Slice:
  """Validates the names and the target (a TPU slice name such as v5e-16)."""
  if not name or not zone:
    raise commands.LaunchError("--name and --zone are required")
  parsed = commands.parse_target(target, "tpu", "launch/gpu_node.py or launch/slurm.py")
  return Slice(name, zone, parsed, project)


def create_command(s: Slice, provisioning: str = "on-demand") -> list[str]:
  """The queued-resource request for the whole slice (one node named like the resource)."""
  if provisioning not in PROVISIONING:
    raise commands.LaunchError(f"provisioning {provisioning!r}: one of {PROVISIONING}")
  argv = s.gcloud("queued-resources", "create") + [
    f"--node-id={s.name}",
    f"--accelerator-type={s.target.accelerator_type}",
    f"--runtime-version={s.target.chip.runtime_version}",
  ]
  return argv + ([f"--{provisioning}"] if provisioning != "on-demand" else [])


def describe_command(s: Slice) -> list[str]:
  """Prints the queued resource's state: WAITING_FOR_RESOURCES, PROVISIONING, ACTIVE, ..."""
  return s.gcloud("queued-resources", "describe") + ["--format=value(state.state)"]


def delete_command(s: Slice) -> list[str]:
  """Deletes the queued resource and its TPU VMs (--force), without a prompt."""
  return s.gcloud("queued-resources", "delete") + ["--force", "--quiet"]


def ssh_command(s: Slice, script: str, worker: str = "all") -> list[str]:
  """`script` on `worker` ("all" runs it on every worker concurrently)."""
  return s.gcloud("tpu-vm", "ssh") + [f"--worker={worker}", f"--command={script}"]


def setup_command(
  s: Slice, repo: str, ref: str, remote_dir: str = "score_jax", worker_setup: str = ""
) -> list[str]:
  """Install on every worker; `worker_setup` then runs in each checkout (e.g. fetch a model)."""
  return ssh_command(s, commands.setup_script(repo, ref, "tpu", remote_dir, then=worker_setup))


def check_workdir(s: Slice, workdir: str) -> None:
  """Multi-host: every worker must read and write the same checkpoints, so gs:// only."""
  if s.target.num_hosts > 1 and not workdir.startswith("gs://"):
    raise commands.LaunchError(
      f"--workdir={workdir!r}: a {s.target.name} slice has {s.target.num_hosts} hosts, which "
      f"must share one workdir that survives preemption; use gs://BUCKET/PATH"
    )


def run_command(
  s: Slice, config: str, workdir: str, overrides=(), remote_dir: str = "score_jax"
) -> list[str]:
  """The main command on every worker, detached; `--config.distributed.enabled` when multi-host."""
  check_workdir(s, workdir)
  argv = commands.main_command(config, workdir, overrides, distributed=s.target.num_hosts > 1)
  return ssh_command(s, commands.detached_run_script(argv, remote_dir))


def logs_command(s: Slice, worker: str = "0") -> list[str]:
  return ssh_command(s, commands.follow_log_script(), worker=worker)


def stop_command(s: Slice) -> list[str]:
  return ssh_command(s, commands.stop_script())


def wait_until_active(s: Slice, timeout_s: float, poll_s: float = POLL_S) -> None:
  """Polls the queued resource until ACTIVE; raises on a dead state or the timeout."""
  deadline = time.monotonic() + timeout_s
  while True:
    out = subprocess.run(describe_command(s), capture_output=True, text=True)
    state = out.stdout.strip()
    print(f"{s.name}: {state or out.stderr.strip()}", file=sys.stderr, flush=True)
    if state == "ACTIVE":
      return
    if state in DEAD_STATES:
      raise SystemExit(f"{s.name} is {state}: `delete` it and `create` again")
    if time.monotonic() > deadline:
      raise SystemExit(f"{s.name} not ACTIVE after {timeout_s:.0f} s (--wait_timeout_s)")
    time.sleep(poll_s)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  passes = "Every --config.<field>=<value> flag passes through to score_jax.main."
  parsers = {
    c: sub.add_parser(c, epilog=passes if c in ("run", "up") else None)
    for c in ("create", "setup", "run", "logs", "stop", "delete", "exec", "up")
  }
  for p in parsers.values():
    p.add_argument("--name", required=True, help="queued resource and TPU VM name")
    p.add_argument("--zone", required=True, help="e.g. us-west4-a (v5e)")
    p.add_argument("--project", default="", help="GCP project; default: gcloud's core/project")
    p.add_argument("--target", default="v5e-16", help="slice: v5e-16, v5p-32, v6e-16, ...")
    commands.add_dry_run(p)
  for c in ("create", "up"):
    mode = parsers[c].add_mutually_exclusive_group()
    mode.add_argument("--spot", action="store_true", help="spot capacity (preemptible)")
    mode.add_argument("--reserved", action="store_true", help="your reservation's capacity")
  for c in ("setup", "run", "up"):
    parsers[c].add_argument("--remote_dir", default="score_jax", help="checkout, under ~")
  for c in ("setup", "up"):
    parsers[c].add_argument("--repo", required=True, help="git URL every worker clones")
    parsers[c].add_argument("--ref", default="main", help="branch, tag or full commit hash")
    parsers[c].add_argument(
      "--worker_setup", default="", help="shell command each worker runs after the install"
    )
  for c in ("run", "up"):
    parsers[c].add_argument("--config", required=True, help="experiments/<name>.py[:arg]")
    parsers[c].add_argument("--workdir", required=True, help="gs://BUCKET/PATH; reruns resume")
  parsers["logs"].add_argument("--worker", default="0", help="which worker's log to follow")
  parsers["exec"].add_argument("--command", dest="remote_command", required=True, help="shell")
  parsers["exec"].add_argument("--worker", default="all", help="all, or a worker index")
  parsers["up"].add_argument("--delete_after", action="store_true", help="delete when run ends")
  parsers["up"].add_argument("--wait_timeout_s", type=float, default=24 * 3600)
  return parser


def _plan(args, overrides) -> tuple[Slice, list[list[str]]]:
  """The slice and every command of the sub-command, in order (`up`'s wait is not a command)."""
  s = make_slice(args.name, args.zone, args.target, args.project)
  mode = "spot" if getattr(args, "spot", False) else "on-demand"
  mode = "reserved" if getattr(args, "reserved", False) else mode
  remote_dir = getattr(args, "remote_dir", "score_jax")
  if args.command in ("run", "up"):
    run = run_command(s, args.config, args.workdir, overrides, remote_dir)
  elif overrides:
    commands.check_overrides(overrides)
    raise commands.LaunchError(f"{args.command} takes no --config.* overrides: {overrides}")
  plans = {
    "create": lambda: [create_command(s, mode)],
    "setup": lambda: [setup_command(s, args.repo, args.ref, remote_dir, args.worker_setup)],
    "run": lambda: [run],
    "logs": lambda: [logs_command(s, args.worker)],
    "stop": lambda: [stop_command(s)],
    "delete": lambda: [delete_command(s)],
    "exec": lambda: [ssh_command(s, args.remote_command, args.worker)],
    "up": lambda: (
      [
        create_command(s, mode),
        setup_command(s, args.repo, args.ref, remote_dir, args.worker_setup),
        run,
        logs_command(s),
      ]
      + ([delete_command(s)] if args.delete_after else [])
    ),
  }
  return s, plans[args.command]()


def main(argv: list[str] | None = None) -> None:
  parser = _parser()
  args, overrides = parser.parse_known_args(argv)
  try:
    s, plan = _plan(args, overrides)
  except ValueError as e:  # LaunchError, or targets.parse naming the accepted forms
    parser.error(str(e))
  if args.command != "up":
    commands.execute(plan, args.dry_run)
    return
  commands.execute(plan[:1], args.dry_run)
  if args.dry_run:
    print(f"# repeat every {POLL_S} s until it prints ACTIVE:")
    print(shlex.join(describe_command(s)))
  else:
    wait_until_active(s, args.wait_timeout_s)
  # The delete runs only once the log follow ended with the run: a failed ssh or a Ctrl-C stops
  # here and leaves the slice (and a run that may still be going) alone.
  commands.execute(plan[1:], args.dry_run)


if __name__ == "__main__":
  main()
