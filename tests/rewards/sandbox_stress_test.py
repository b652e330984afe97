"""Sandbox verdicts do not depend on timing: hostile and benign programs on a loaded machine.

Each program has one right verdict whatever the timeout and the load: loops, sleeps and forks
that never finish are TIMEOUT (never ERROR, which means the checker broke), correct programs are
CORRECT, wrong or self-exiting ones WRONG. They run through the real reward pool (zygote sandboxes)
and one-shot sandboxes, with timeouts from 0.2 to 2 s, while busy loops keep every core loaded.
The default run is a small sample (two of the limits); `-m slow` runs a few hundred programs.
"""

import collections
import contextlib
import os
import random
import subprocess
import sys
import time

import pytest

from score_jax.rewards import code_reward, pool
from score_jax.rewards.outcome import Outcome

ADD = "def add(a, b):\n  return a + b\n"
TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"
# Two whole-second limits (where the CPU limit and the time limit once raced). A program that
# never finishes holds its sandbox for the whole limit: a third whole second (3 s), tested here
# until 2026-12-05, made these tests ~45% longer for one more point of the same kind.
TIMEOUTS_S = (0.2, 0.5, 1.0, 2.0)
# name -> (program, expected outcome)
PROGRAMS = {
  "correct": (ADD, Outcome.CORRECT),
  "correct_prints": (ADD + "print('x' * 1000)", Outcome.CORRECT),
  "wrong": ("def add(a, b):\n  return a - b\n", Outcome.WRONG),
  "raises": ("1 / 0", Outcome.WRONG),
  "memory_hog": ("x = bytearray(1 << 34)", Outcome.WRONG),
  "exits_early": ("import sys\nsys.exit(0)", Outcome.WRONG),
  "output_flood": (ADD + "print('x' * (2 << 20))", Outcome.WRONG),  # over the 1 MiB cap
  # Statuses that belong to the checker: the program must not be able to claim them.
  "forges_setup_failure": ("import os\nos._exit(97)", Outcome.WRONG),
  "forges_timeout": ("import os\nos._exit(124)", Outcome.WRONG),
  "loop_top_level": ("while True: pass", Outcome.TIMEOUT),
  "loop_after_def": (ADD + "while True: pass", Outcome.TIMEOUT),
  "loop_in_tests": ("def add(a, b):\n  while True: pass", Outcome.TIMEOUT),
  "sleep": ("import time\ntime.sleep(60)", Outcome.TIMEOUT),
  "sleep_in_tests": ("import time\ndef add(a, b):\n  time.sleep(60)", Outcome.TIMEOUT),
  "fork_and_loop": ("import os\nos.fork()\nwhile True: pass", Outcome.TIMEOUT),
  "fork_bomb_loop": (
    "import os\nfor _ in range(4):\n  os.fork()\nwhile True: pass",
    Outcome.TIMEOUT,
  ),
}
if os.geteuid() == 0:  # pid namespace: the lingering child dies with the finished run
  PROGRAMS["forked_child_lingers"] = (
    "import os, time\nif os.fork() == 0:\n  time.sleep(60)\n" + ADD,
    Outcome.CORRECT,
  )


@contextlib.contextmanager
def loaded_machine(per_core: int = 1, own_sessions: bool = False):
  """`per_core` busy loops per core for the duration (the sandboxes compete with them).

  Each sandbox leads its own session, which the kernel's autogroup scheduling (where enabled)
  shares the CPUs with as a whole against ours: `own_sessions` gives every loop its own session
  too, so that the sandbox gets no more than any one of them.
  """
  burners = [
    subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=own_sessions)
    for _ in range(per_core * os.cpu_count())
  ]
  try:
    yield
  finally:
    for p in burners:
      p.kill()
      p.wait()


def _plan(copies: int, seed: int, timeouts_s: tuple = TIMEOUTS_S) -> list[tuple[float, str]]:
  rng = random.Random(seed)
  plan = [(t, name) for t in timeouts_s for name in PROGRAMS for _ in range(copies)]
  rng.shuffle(plan)
  return plan


def _run_through_pool(plan) -> tuple[list, float]:
  """(timeout, name, outcome, detail) per program, and the wall time; one pool per timeout."""
  seen = []
  start = time.monotonic()
  with loaded_machine():
    for timeout_s in sorted({t for t, _ in plan}):
      names = [name for t, name in plan if t == timeout_s]
      items = [("code", (PROGRAMS[name][0], TESTS)) for name in names]
      with pool.RewardPool(2, code_timeout_s=timeout_s) as p:
        result = p.score(items)
      for name, outcome, detail in zip(names, result.outcomes, result.details, strict=True):
        seen.append((timeout_s, name, Outcome(int(outcome)), detail))
  return seen, time.monotonic() - start


def _run_one_shot(plan) -> tuple[list, float]:
  seen = []
  start = time.monotonic()
  with loaded_machine():
    for timeout_s, name in plan:
      r = code_reward.run_tests(PROGRAMS[name][0], TESTS, timeout_s=timeout_s)
      seen.append((timeout_s, name, r.verdict.outcome, r.detail))
  return seen, time.monotonic() - start


def _check(seen, wall_s: float, label: str) -> None:
  counts = collections.Counter(outcome.name for _, _, outcome, _ in seen)
  limits = sorted({t for t, _, _, _ in seen})
  print(f"\n{label}: {len(seen)} programs, timeouts {limits} s, verdicts {dict(counts)}, "
        f"wall {wall_s:.1f} s")  # fmt: skip
  wrong = [(t, n, o.name, d) for t, n, o, d in seen if o != PROGRAMS[n][1]]
  assert not wrong, f"{len(wrong)} unexpected verdicts: {wrong[:10]}"
  assert counts["ERROR"] == 0


def test_verdicts_are_timing_independent_under_load():
  # The shortest limit (where a correct program is likeliest to be cut off) and one of 1 s:
  # a program that never finishes holds a sandbox for its whole limit while the busy loops
  # slow the other test worker, so all four limits are left to the slow tests (all five limits
  # of 2026-12-04 took 53 s in the default suite; these two, 10 s alone).
  seen, wall = _run_through_pool(_plan(copies=1, seed=0, timeouts_s=(0.2, 1.0)))
  _check(seen, wall, "pool (zygote)")


@pytest.mark.slow
def test_hundreds_of_programs_under_load_pool():
  seen, wall = _run_through_pool(_plan(copies=3, seed=1))
  _check(seen, wall, "pool (zygote)")


@pytest.mark.slow
def test_hundreds_of_programs_under_load_one_shot():
  seen, wall = _run_one_shot(_plan(copies=1, seed=2))
  _check(seen, wall, "one-shot")


@pytest.mark.slow
def test_cpu_and_wall_limits_firing_together_is_timeout():
  # With RLIMIT_CPU at ceil(timeout), a busy loop reached it at about the same instant as the
  # time limit when the timeout is whole: a SIGALRM-based bootstrap lost that race about once
  # in 30 runs (an ERROR: "ProcessLookupError"), and once the limit counted the program's own
  # time, the CPU limit's kill (with rusage reading 0.94 s) won it as a WRONG. The CPU limit now
  # sits a second above; no load here, on purpose.
  n = 60
  start = time.monotonic()
  with pool.RewardPool(2, code_timeout_s=1.0) as p:
    result = p.score([("code", ("while True: pass", TESTS))] * n)
  seen = [
    (1.0, "loop_top_level", Outcome(int(o)), d) for o, d in zip(result.outcomes, result.details)
  ]
  _check(seen, time.monotonic() - start, "pool, idle machine, whole-second limit")


@pytest.mark.parametrize("use_zygote", [False, True])
def test_time_spent_waiting_for_a_cpu_is_not_the_programs(use_zygote):
  # 0.25 s of CPU under a 0.6 s limit while three busy loops per core compete: the program's
  # wall time is well over the limit (it prints it), its own time is not. Under a plain
  # wall-clock limit this correct program was a TIMEOUT on a loaded host.
  program = ADD + (
    "import time\nt0, c0 = time.monotonic(), time.process_time()\n"
    "while time.process_time() - c0 < 0.25: pass\nprint(time.monotonic() - t0)"
  )
  with contextlib.ExitStack() as stack:
    zygote = stack.enter_context(code_reward.Zygote()) if use_zygote else None
    stack.enter_context(loaded_machine(per_core=3, own_sessions=True))
    r = code_reward.run_tests(program, TESTS, timeout_s=0.6, zygote=zygote)
  assert r.verdict.outcome == Outcome.CORRECT, r
  assert float(r.stdout.split()[-1]) > 0.6, r.stdout  # it did wait past the limit


def test_a_sleeping_program_is_timed_out_at_the_limit_on_a_loaded_host():
  # Sleeping is the program's own time: no wait for a CPU extends it.
  with loaded_machine(per_core=3, own_sessions=True):
    r = code_reward.run_tests("import time\ntime.sleep(60)", TESTS, timeout_s=0.5)
  assert r.verdict.outcome == Outcome.TIMEOUT, r
  assert r.duration_s < 0.5 * code_reward.WALL_BACKSTOP, r


@pytest.mark.parametrize("use_zygote", [False, True])
def test_forked_cpu_burners_do_not_stretch_the_limit(use_zygote):
  # A main loop waiting its turn behind eight burners it forked itself: its run delay is of
  # its own making. Counted as not its own time, it held the sandbox until the wall backstop
  # (4x the limit: 4.07 s at 1 s, 2026-12-05); the CPU time of all its processes now ends it
  # near the limit. A plain loop just before and after calibrates for the host's load: the
  # burners' tree gets at least the CPU share the one loop gets, so it ends no later (here
  # under 1.5x, for noise), whatever the load; the backstop's 4x does not pass unless the host
  # is so loaded that the loop alone takes over 2.7x its limit.
  burners = (
    "import os\nfor _ in range(8):\n  if os.fork() == 0:\n    while True: pass\nwhile True: pass"
  )
  runs = {}
  with contextlib.ExitStack() as stack:
    zygote = stack.enter_context(code_reward.Zygote()) if use_zygote else None
    loop = "while True: pass"
    for name, program in (("loop", loop), ("burners", burners), ("loop again", loop)):
      r = code_reward.run_tests(program, TESTS, timeout_s=0.5, zygote=zygote)
      assert r.verdict.outcome == Outcome.TIMEOUT, (name, r)
      runs[name] = r.duration_s
  assert runs["burners"] < 1.5 * max(runs["loop"], runs["loop again"]), runs


def test_setup_failure_is_error_not_the_programs(monkeypatch):
  # A stdlib directory that cannot be opened fails the confined child's setup, before the
  # program could run: the checker's ERROR, with the reason, whatever the program is.
  monkeypatch.setattr(code_reward, "_stdlib_paths", lambda: ("/nonexistent-stdlib",))
  for program in (ADD, "while True: pass"):
    r = code_reward.run_tests(program, TESTS, timeout_s=0.5)
    assert r.status == "error" and r.verdict.outcome == Outcome.ERROR, r
    assert "sandbox setup failed" in r.detail and "nonexistent-stdlib" in r.detail, r.detail


def test_reserved_exit_statuses_are_failures_with_zygote():
  with code_reward.Zygote() as z:
    for code in (97, 124):
      r = code_reward.run_tests(f"import os\nos._exit({code})", TESTS, timeout_s=1.0, zygote=z)
      assert r.status == "failed" and r.returncode == 6, r
