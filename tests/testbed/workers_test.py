"""Grid workers: file-lock claims across real processes, dead workers' units taken over, and the
bases drawn side by side only where the in-order selection may need them."""

import os
import subprocess
import sys

import ml_collections

from score_jax.testbed import grid, workers

# A process that claims `unit` in `workdir`, says so, and holds it until killed.
HOLD = """
import sys, time
from score_jax.testbed import workers
with workers.claim(sys.argv[1], sys.argv[2]) as mine:
  print("held" if mine else "busy", flush=True)
  time.sleep(600)
"""

# A worker that runs every unit of a shared list, each recording which process ran it.
RUN_ALL = """
import os, sys, time
from score_jax.testbed import workers
workdir = sys.argv[1]
def unit(i):
  time.sleep(0.3)
  with open(os.path.join(workdir, f"ran{i}.{os.getpid()}"), "w"):
    pass
workers.run_all(workdir, [(f"u/{i}", lambda i=i: unit(i)) for i in range(8)], poll=0.1)
"""


def _holder(workdir, unit) -> subprocess.Popen:
  proc = subprocess.Popen(
    [sys.executable, "-c", HOLD, str(workdir), unit], stdout=subprocess.PIPE, text=True
  )
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_a_claimed_unit_is_skipped_and_a_dead_workers_unit_is_run_again(tmp_path):
  ran = []
  proc = _holder(tmp_path, "run/score/p0_s0")
  try:
    assert workers.held_elsewhere(str(tmp_path), "run/score/p0_s0")
    assert workers.try_run(str(tmp_path), "run/score/p0_s0", lambda: ran.append(1)) is None
  finally:
    proc.kill()
    proc.wait()
  # The OS released the dead process's lock: no stale claim to clean up.
  assert not workers.held_elsewhere(str(tmp_path), "run/score/p0_s0")
  assert workers.try_run(str(tmp_path), "run/score/p0_s0", lambda: ran.append(1))
  assert ran == [1] and workers.done(str(tmp_path), "run/score/p0_s0")
  # Done is done: a second worker does not run it again.
  assert workers.try_run(str(tmp_path), "run/score/p0_s0", lambda: ran.append(2))
  assert ran == [1]


def test_two_processes_run_every_unit_exactly_once(tmp_path):
  procs = [
    subprocess.Popen([sys.executable, "-c", RUN_ALL, str(tmp_path)], stderr=subprocess.PIPE)
    for _ in range(2)
  ]
  for p in procs:
    assert p.wait(timeout=120) == 0, p.stderr.read().decode()[-2000:]
  ran = [f for f in os.listdir(tmp_path) if f.startswith("ran")]
  units = sorted(int(f.split(".")[0][3:]) for f in ran)
  assert units == list(range(8)), ran  # each unit once
  assert len({f.split(".")[1] for f in ran}) == 2  # and both processes took part


def _config(num_bases):
  c = ml_collections.ConfigDict()
  c.testbed = ml_collections.ConfigDict(
    {"pretrain_seeds": (0, 1, 2, 3, 4), "num_bases": num_bases,
     "base_gate": {"min_forced_fix": 0.65}}
  )  # fmt: skip
  return c


def test_bases_are_drawn_ahead_only_while_the_order_may_need_them(tmp_path):
  workdir = str(tmp_path)
  fixes = {0: 0.9, 1: 0.7, 2: 0.3, 3: 0.8, 4: 0.9}
  drawn = []

  def gate(p):
    if not workers.done(workdir, grid._base_unit(p)):
      drawn.append(p)
    return {"forced_fix_rate": fixes[p]}

  workers.try_run(workdir, grid._base_unit(0), lambda: gate(0))  # seed 0: passed
  proc = _holder(tmp_path, grid._base_unit(1))  # seed 1: being drawn by another worker
  try:
    grid._draw_ahead(_config(2), workdir, gate)
    assert drawn == [0]  # seed 0 passed, seed 1 may pass: two bases, nothing more to draw
    grid._draw_ahead(_config(3), workdir, gate)
    # Seed 2 fails the gate, so seed 3 is needed too (if seed 1 passes); seed 4 is not.
    assert drawn == [0, 2, 3]
  finally:
    proc.kill()
    proc.wait()
  # Seed 1's worker died: a draw-ahead takes it over, and then three bases have passed.
  grid._draw_ahead(_config(3), workdir, gate)
  assert drawn == [0, 2, 3, 1]


def test_worker_processes_start_and_a_failed_one_is_an_error(tmp_path):
  # A worker on a workdir without the grid's pickled config fails; `finish` names its output.
  folder = tmp_path / "workers"
  folder.mkdir()
  cmd = [sys.executable, "-m", "score_jax.testbed.worker_main", str(tmp_path / "missing"), "1"]
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    workers.finish([proc])
  except RuntimeError as e:
    assert "grid worker 1 exited with status" in str(e) and "w1.out" in str(e)
  else:
    raise AssertionError("a failed worker passed")
