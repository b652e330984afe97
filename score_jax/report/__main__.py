"""`python -m score_jax.report WORKDIR... [--out=DIR]`: the paper's tables from finished runs.

Each argument is a workdir (a directory with config.json) or a folder of workdirs. Writes
results.md, results.json and the figures into --out (default: next to the workdirs: the first
argument's parent + /report, or the first argument + /report when it is a folder of workdirs),
prints the missing / unfinished workdirs and the path of results.md. Exits 1 when no argument
holds a finished workdir (nothing is written then).
"""

import os
import sys

from absl import app, flags

from score_jax import storage
from score_jax.report import build, workdirs

_OUT = flags.DEFINE_string("out", "", "output folder (default: see the module docstring)")
_RESAMPLES = flags.DEFINE_integer(
  "num_resamples", 10_000, "bootstrap resamples per interval (>= 100)", lower_bound=100
)


def default_out(first: str) -> str:
  """Beside the runs: a folder of workdirs gets its own report/, a workdir its parent's.

  The report is written locally: for gs:// workdirs the default is ./report (or --out).
  """
  if storage.is_remote(first):
    return os.path.abspath("report")
  first = os.path.abspath(first)
  if os.path.isdir(first) and not os.path.isfile(os.path.join(first, workdirs.CONFIG_FILE)):
    return os.path.join(first, "report")
  return os.path.join(os.path.dirname(first), "report")


def _print_missing(missing: list[workdirs.Missing]) -> None:
  if missing:
    print(f"missing / unfinished ({len(missing)}):")
    for m in missing:
      print(f"  {m.path}: {m.reason}")


def main(argv: list[str]) -> int:
  paths = argv[1:]
  if not paths:
    raise app.UsageError("usage: python -m score_jax.report WORKDIR... [--out=DIR]")
  out = _OUT.value or default_out(paths[0])
  runs, missing = build.collect(paths, out)
  if not runs:
    _print_missing(missing)
    print(f"report: no finished workdir (config.json + eval/final.json) in {' '.join(paths)}",
          file=sys.stderr)  # fmt: skip
    return 1
  report = build.write(runs, missing, out, num_resamples=_RESAMPLES.value)
  rows = sum(len(s.groups) for s in report.sections)
  print(
    f"{len(report.runs)} finished workdir(s) in {rows} row(s) of {len(report.sections)} table(s)"
  )
  _print_missing(report.missing)
  for file, info in report.figures.items():
    if not info["written"]:
      print(f"{file} not written: {info['why']}")
  print(f"report: {report.markdown_path}")
  return 0


if __name__ == "__main__":
  app.run(main)
