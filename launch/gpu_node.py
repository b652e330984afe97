"""One GPU node, this machine or one reached over ssh: set up, run, follow, stop.

  python launch/gpu_node.py setup --host=gpu-box --repo=https://github.com/OWNER/score_jax.git
  python launch/gpu_node.py run --host=gpu-box --config=experiments/score_math.py \
      --workdir=/data/score_math --config.model.checkpoint=/data/gemma-2-2b-it [--dry-run]

One process drives every GPU of the node (no jax.distributed). Over ssh the run is detached
(nohup, log in ~/score_jax.log) and `run` then follows the log until the run ends; `logs` and
`stop` reattach or send SIGTERM (the loop saves and exits). Without --host, `run` executes in the
foreground from the current directory, which must be the repo root with its venv active, and
`setup` clones into ./score_jax. A rerun on the same workdir resumes from the last checkpoint.
"""

import argparse
import os
import shlex
import sys

if __package__ in (None, ""):  # run as `python launch/gpu_node.py`: the repo root holds `launch`
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from launch import commands  # noqa: E402


def shell_on(host: str, script: str) -> list[str]:
  """`script` under bash on `host` (over ssh), or here when host is empty."""
  if not host:
    return ["bash", "-c", script]
  # ssh hands its words to the login shell, which may not be bash: name bash explicitly.
  return ["ssh", host, f"bash -c {shlex.quote(script)}"]


def setup_command(host: str, repo: str, ref: str, remote_dir: str = "score_jax") -> list[str]:
  return shell_on(host, commands.setup_script(repo, ref, "cuda", remote_dir))


def run_commands(
  host: str, config: str, workdir: str, overrides=(), remote_dir: str = "score_jax"
) -> list[list[str]]:
  """Here: the main command in the foreground. Over ssh: start it detached, then follow it."""
  argv = commands.with_env(commands.main_command(config, workdir, overrides), commands.GPU_ENV)
  if not host:
    return [argv]
  return [
    shell_on(host, commands.detached_run_script(argv, remote_dir)),
    shell_on(host, commands.follow_log_script()),
  ]


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  passes = "Every --config.<field>=<value> flag passes through to score_jax.main."
  parsers = {
    c: sub.add_parser(c, epilog=passes if c == "run" else None)
    for c in ("setup", "run", "logs", "stop")
  }
  for c, p in parsers.items():
    needs_host = c in ("logs", "stop")  # a local run is in the foreground: nothing to reattach
    p.add_argument("--host", default="", required=needs_host, help="ssh destination; '' = here")
    p.add_argument("--target", default="h100x8", help="the node: h100x8, h200x8, h100x4, ...")
    p.add_argument("--remote_dir", default="score_jax", help="checkout, under ~ on --host")
    commands.add_dry_run(p)
  parsers["setup"].add_argument("--repo", required=True, help="git URL to clone")
  parsers["setup"].add_argument("--ref", default="main", help="branch, tag or full commit hash")
  parsers["run"].add_argument("--config", required=True, help="experiments/<name>.py[:arg]")
  parsers["run"].add_argument("--workdir", required=True, help="outputs; a rerun resumes")
  return parser


def _plan(args, overrides) -> list[list[str]]:
  commands.parse_target(args.target, "cuda", "launch/tpu_vm.py")
  if args.command == "run":
    return run_commands(args.host, args.config, args.workdir, overrides, args.remote_dir)
  if overrides:
    commands.check_overrides(overrides)
    raise commands.LaunchError(f"{args.command} takes no --config.* overrides: {overrides}")
  if args.command == "setup":
    return [setup_command(args.host, args.repo, args.ref, args.remote_dir)]
  script = commands.follow_log_script() if args.command == "logs" else commands.stop_script()
  return [shell_on(args.host, script)]


def main(argv: list[str] | None = None) -> None:
  parser = _parser()
  args, overrides = parser.parse_known_args(argv)
  try:
    plan = _plan(args, overrides)
  except ValueError as e:  # LaunchError, or targets.parse naming the accepted forms
    parser.error(str(e))
  commands.execute(plan, args.dry_run)


if __name__ == "__main__":
  main()
