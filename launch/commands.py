"""The commands every launcher shares: install from a git ref, the main command, detached runs.

Pure functions build argv lists and shell snippets; `execute` is the one place that runs them
(or, with --dry-run, prints each exact command, shell-quoted, one per line). Nothing here imports
JAX (score_jax.parallel.targets is pure data): the launchers run from a plain checkout on a
workstation or login node that has only Python and gcloud / ssh / sbatch.
"""

import argparse
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence

from score_jax.parallel import targets

# What the remote side keeps in the home directory: one log (appended across relaunches) and the
# pid of the run in flight, so `logs` and `stop` find it and `run` refuses to start a second one.
LOG = '"$HOME/score_jax.log"'
PID = '"$HOME/score_jax.pid"'
# jax 0.10.2 needs Python >= 3.11; TPU VM and many GPU images ship 3.10, so set-up creates the
# venv with uv, which fetches a standalone interpreter when the system has none of that version.
PYTHON = "3.11"
UV = "uv==0.13.8"
# XLA preallocates 75% of GPU memory by default; the preflight's usable-memory figures assume 90%.
GPU_ENV = {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.9"}


class LaunchError(ValueError):
  """Bad launcher input; the message names the flag."""


def parse_target(name: str, platform: str, use_instead: str) -> targets.Target:
  """targets.parse(name), its ValueError prefixed with the flag; the platform must match."""
  try:
    target = targets.parse(name)
  except ValueError as e:
    raise LaunchError(f"--target={name}: {e}") from None
  if target.chip.platform != platform:
    raise LaunchError(f"--target={name} is not a {platform.upper()} target; use {use_instead}")
  return target


def check_overrides(overrides: Sequence[str]) -> list[str]:
  """Pass-through `--config.a.b=value` flags; anything else is an error naming it."""
  for flag in overrides:
    name = flag.split("=", 1)[0]
    if not name.startswith("--config.") or "=" not in flag:
      raise LaunchError(
        f"unrecognised argument {flag!r}: only --config.<field>=<value> overrides pass through "
        f"to score_jax.main (write them with '=')"
      )
  return list(overrides)


def main_command(
  config: str, workdir: str, overrides: Sequence[str] = (), distributed: bool = False
) -> list[str]:
  """`python -m score_jax.main ...`, the one entry point, as an argv list."""
  if not config:
    raise LaunchError("--config is required: experiments/<name>.py[:arg]")
  if not workdir:
    raise LaunchError("--workdir is required (a rerun on the same workdir resumes)")
  argv = ["python", "-m", "score_jax.main", f"--config={config}", f"--workdir={workdir}"]
  if distributed:
    argv.append("--config.distributed.enabled=True")
  return argv + check_overrides(overrides)


def with_env(argv: Sequence[str], env: dict[str, str]) -> list[str]:
  """`env K=V ... argv`: the variables travel with the command through ssh and nohup."""
  return ["env", *(f"{k}={v}" for k, v in env.items()), *argv] if env else list(argv)


def setup_script(repo: str, ref: str, extra: str, remote_dir: str, then: str = "") -> str:
  """Clone (or update) `repo` at `ref` into ~/`remote_dir` and install it with `[extra]`.

  Idempotent: a second run fetches the ref again and reinstalls into the same venv. `ref` is a
  branch, a tag or a full commit hash (fetched by name, then checked out detached). `then`, if
  given, runs last, in the checkout (e.g. copying a model checkpoint from gs:// to local disk).
  """
  if not repo or not ref:
    raise LaunchError("--repo and --ref are required: the git URL and branch / tag / commit")
  d = shlex.quote(remote_dir)
  steps = [
    f"if [ ! -d {d}/.git ]; then git clone --quiet {shlex.quote(repo)} {d}; fi",
    f"cd {d}",
    f"git fetch --quiet origin {shlex.quote(ref)}",
    "git checkout --quiet --detach FETCH_HEAD",
    f"python3 -m pip install --quiet --user {UV}",
    "if [ ! -x .venv/bin/python ]; then "
    f"~/.local/bin/uv venv --quiet --seed --python {PYTHON} .venv; fi",
    ". .venv/bin/activate",
    "pip install --quiet --upgrade pip",
    f"pip install --quiet -e {shlex.quote(f'.[{extra}]')}",
    'echo "$(hostname): score_jax at $(git rev-parse HEAD) installed"',
  ]
  return " && ".join(steps + ([then] if then else []))


def detached_run_script(argv: Sequence[str], remote_dir: str) -> str:
  """Starts `argv` in ~/`remote_dir`'s venv, detached from the ssh session, logging to ~.

  setsid + nohup: neither a dropped ssh connection nor its SIGHUP ends the run. A run still alive
  (per the pid file) makes this fail instead of starting a second one on the same accelerators.
  """
  d = shlex.quote(remote_dir)
  return " && ".join(
    [
      f"cd {d}",
      ". .venv/bin/activate",
      f'if [ -f {PID} ] && kill -0 "$(cat {PID})" 2>/dev/null; then '
      f'echo "$(hostname): a run is in flight (pid $(cat {PID})); stop it first" >&2; exit 1; fi',
      f'echo "=== $(date -u +%FT%TZ) launch: $(git rev-parse HEAD) ===" >> {LOG}',
      f"{{ setsid nohup {shlex.join(argv)} >> {LOG} 2>&1 < /dev/null & echo $! > {PID}; }}",
      f'echo "$(hostname): started pid $(cat {PID}), log ~/score_jax.log"',
    ]
  )


def follow_log_script() -> str:
  """Prints the log's tail and follows it until the run (per the pid file) ends."""
  return f'tail -n 100 -f --pid="$(cat {PID})" {LOG}'


def stop_script() -> str:
  """SIGTERM to the run: the loop saves a checkpoint at its next step boundary and exits."""
  return f'kill -TERM "$(cat {PID})" && echo "$(hostname): sent SIGTERM to pid $(cat {PID})"'


def add_dry_run(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--dry-run",
    "--dry_run",
    dest="dry_run",
    action="store_true",
    help="print the exact commands, one per line, and run nothing",
  )


def execute(
  commands: Sequence[Sequence[str]],
  dry_run: bool,
  run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> None:
  """Runs each argv in order, stopping at the first failure; with dry_run only prints them."""
  for argv in commands:
    if dry_run:
      print(shlex.join(argv))
      continue
    print(f"+ {shlex.join(argv)}", file=sys.stderr, flush=True)
    try:
      result = run(list(argv))
    except FileNotFoundError as e:
      raise SystemExit(f"{argv[0]}: not found on PATH ({e})") from None
    if result.returncode:
      raise SystemExit(f"command failed with exit status {result.returncode}: {shlex.join(argv)}")
