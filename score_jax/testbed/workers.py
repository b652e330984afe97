"""Several processes on one grid: units of work claimed through file locks in DIR/claims/.

A grid is ~100 independent units (a base, a tuning run, a confirmatory run with its test
evaluations). On a 2-core CPU one process leaves a core partly idle (the sampler's decode loop
is dispatch-bound), and two processes finish ~1.5x the runs per hour (BUILD_NOTES.md, testbed
v2 sizing). `testbed.workers = N` starts N-1 more processes of the same grid (`python -m
score_jax.testbed.worker_main DIR i`, the config pickled in DIR/workers/); every process walks
the same units in the same order and runs each one it can claim:

- a claim is an exclusive `flock` on DIR/claims/<unit>.lock, held while the unit runs; the OS
  releases it when its process exits or is killed, so a dead worker's unit is simply claimed
  again (and resumes from its checkpoints, as any rerun does); there are no stale claims;
- a unit is done when DIR/claims/<unit>.done exists (written after it returns);
- a process that finds every remaining unit claimed waits for them (polling), so each phase
  ends together, and what comes next (the selection, the report) reads finished units only.

Every unit writes only under its own name, and the grid's choices depend only on finished units'
results, so the outcome does not depend on the number of workers or on who ran what.
Workers must share one filesystem that honours flock (a local disk).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence

POLL_SECONDS = 2.0


def _path(workdir: str, unit: str, ext: str) -> str:
  path = os.path.join(workdir, "claims", f"{unit}.{ext}")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  return path


def done(workdir: str, unit: str) -> bool:
  return os.path.exists(_path(workdir, unit, "done"))


@contextlib.contextmanager
def claim(workdir: str, unit: str) -> Iterator[bool]:
  """Yields True while this process holds `unit`'s lock (False: another process holds it)."""
  fd = os.open(_path(workdir, unit, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      yield False
      return
    try:
      yield True
    finally:
      fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)


def try_run(workdir: str, unit: str, fn: Callable[[], object]) -> bool | None:
  """Runs `unit` if it is neither done nor claimed: True ran (or found done), None claimed."""
  if done(workdir, unit):
    return True
  with claim(workdir, unit) as mine:
    if not mine:
      return None
    if not done(workdir, unit):  # finished between the check and the claim
      fn()
      with open(_path(workdir, unit, "done"), "w") as f:
        f.write(f"{os.getpid()}\n")
  return True


def run_all(
  workdir: str, units: Sequence[tuple[str, Callable[[], object]]], poll: float = POLL_SECONDS
) -> None:
  """Runs every unit not done, in order, skipping those another process holds; returns when all
  are done (waiting for the others' units; a unit whose process died is run here)."""
  pending = list(units)
  while pending:
    ran = False
    for unit, fn in pending:
      if try_run(workdir, unit, fn):
        pending = [u for u in pending if u[0] != unit]
        ran = True
        break  # back to the first pending unit: keep the order
    if pending and not ran:
      time.sleep(poll)


def wait_for(workdir: str, unit: str, fn: Callable[[], object], poll: float = POLL_SECONDS):
  """Runs `unit` here, or waits until the process holding it finishes it (or dies: then here)."""
  while not try_run(workdir, unit, fn):
    time.sleep(poll)


def held_elsewhere(workdir: str, unit: str) -> bool:
  """True while another process holds `unit`'s lock (it is running)."""
  if done(workdir, unit):
    return False
  with claim(workdir, unit) as mine:
    return not mine


def spawn(config, workdir: str, count: int) -> list[subprocess.Popen]:
  """Starts workers 1..count-1 on `config`'s grid in `workdir`; output in DIR/workers/w<i>.out."""
  folder = os.path.join(workdir, "workers")
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "config.pkl"), "wb") as f:
    pickle.dump(config, f)
  procs = []
  for i in range(1, count):
    out = open(os.path.join(folder, f"w{i}.out"), "a")  # noqa: SIM115 (the child owns it)
    cmd = [sys.executable, "-m", "score_jax.testbed.worker_main", workdir, str(i)]
    procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT))
    out.close()
  return procs


def finish(procs: list[subprocess.Popen]) -> None:
  """Waits for the spawned workers; a worker that failed is an error (its output named)."""
  for i, p in enumerate(procs, start=1):
    if p.wait() != 0:
      where = f"DIR/workers/w{i}.out"
      raise RuntimeError(f"grid worker {i} exited with status {p.returncode}: see {where}")


def stop(procs: list[subprocess.Popen]) -> None:
  """Terminates spawned workers (the grid stopped with an error: they would run on alone)."""
  for p in procs:
    if p.poll() is None:
      p.terminate()
  for p in procs:
    with contextlib.suppress(subprocess.TimeoutExpired):
      p.wait(timeout=30)
