"""RewardPool: order, counts, timeouts, checker crashes as ERROR, worker/zygote replacement,
cleanup."""

import os
import signal
import threading
import time

import numpy as np
import pytest

from score_jax.rewards import code_reward, pool
from score_jax.rewards.outcome import Outcome

ADD = "def add(a, b):\n  return a + b\n"
WRONG = "def add(a, b):\n  return a - b\n"
TESTS = ["assert add(2, 3) == 5"]
MATH_OK = "Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct."


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/status") as f:
      return "State:\tZ" not in f.read()
  except FileNotFoundError:
    return False


@pytest.fixture(scope="module")
def reward_pool():
  # Warm and generous on math: a worker's first math check imports the LaTeX parser, which on a
  # starved 2-core machine took over 5 s and turned a correct answer into a timeout. These
  # tests are about order and outcomes; the math deadline has its own tests.
  with pool.RewardPool(2, code_timeout_s=1.0, math_timeout_s=30.0, warm=("math",)) as p:
    yield p


def test_order_counts_and_dtypes(reward_pool):
  items = [
    ("code", (ADD, TESTS)),
    ("math", (MATH_OK, "0.5")),
    ("code", (WRONG, TESTS)),
    ("code", ("while True: pass", TESTS)),
    ("math", ("The answer is \\boxed{3}", "4")),
    ("code", (ADD, TESTS, "")),
  ]
  r = reward_pool.score(items)
  want = [Outcome.CORRECT, Outcome.CORRECT, Outcome.WRONG, Outcome.TIMEOUT, Outcome.WRONG, 0]
  np.testing.assert_array_equal(r.outcomes, np.array(want, np.int8))
  assert r.outcomes.dtype == np.int8 and r.rewards.dtype == np.float32
  np.testing.assert_array_equal(r.rewards, [1, 1, 0, 0, 0, 1])
  assert r.counts == {"correct": 3, "wrong": 2, "timeout": 1, "error": 0}


def test_many_items_keep_their_order(reward_pool):
  items = [("code", (f"def f():\n  return {i}", f"assert f() == {i if i % 3 else -1}"))
           for i in range(12)]  # fmt: skip
  r = reward_pool.score(items)
  np.testing.assert_array_equal(r.rewards, [float(i % 3 != 0) for i in range(12)])


def test_checker_crash_is_error_and_logged(reward_pool, caplog):
  items = [("code", (ADD, "assert )")), ("code", (ADD, TESTS))]
  with caplog.at_level("WARNING"):
    r = reward_pool.score(items)
  assert list(r.outcomes) == [Outcome.ERROR, Outcome.CORRECT]
  assert r.counts["error"] == 1 and "tests: line 1" in r.details[0]
  assert "reward item 0 (code) ERROR" in caplog.text


def test_bad_items_are_rejected_before_any_work(reward_pool):
  with pytest.raises(ValueError, match=r"items\[1\]: expected \(kind, payload\)"):
    reward_pool.score([("code", (ADD, TESTS)), ("sql", ("x",))])
  with pytest.raises(ValueError, match=r"items\[0\]: math payload must be a tuple of \(2,\)"):
    reward_pool.score([("math", ("a", "b", "c"))])


def test_dead_idle_worker_is_replaced(reward_pool):
  victim = reward_pool.pids()[0]
  os.kill(victim, signal.SIGKILL)
  time.sleep(0.2)
  r = reward_pool.score([("code", (ADD, TESTS))] * 3)
  assert r.counts["correct"] == 3
  assert victim not in reward_pool.pids()


def _children(parents: list[int], cmd_part: str) -> list[int]:
  """Live children of `parents` whose command line contains `cmd_part`."""
  found = []
  for entry in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{entry}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
      with open(f"/proc/{entry}/cmdline", "rb") as f:
        cmd = f.read().decode("utf-8", "replace")
    except (OSError, IndexError):
      continue
    if ppid in parents and cmd_part in cmd and _alive(int(entry)):
      found.append(int(entry))
  return found


def _no_sandboxes_of(owners: list[int]) -> bool:
  deadline = time.monotonic() + 3.0
  while code_reward.sandbox_processes(owners) and time.monotonic() < deadline:
    time.sleep(0.05)
  return code_reward.sandbox_processes(owners) == []


def test_hung_worker_is_killed_at_the_pool_deadline():
  # The pool's deadline (0.5 s) is shorter than the sandbox's own (5 s): the pool must act.
  with pool.RewardPool(1, code_timeout_s=5.0, deadline_s={"code": 0.5}) as p:
    workers = p.pids()
    start = time.monotonic()
    r = p.score([("code", ("import time\ntime.sleep(60)", TESTS))])
    assert time.monotonic() - start < 4.0
    assert list(r.outcomes) == [Outcome.TIMEOUT] and p.replaced == 1
    workers += p.pids()
    assert p.score([("code", (ADD, TESTS))]).counts["correct"] == 1
    root = p.work_root
  assert not any(_alive(pid) for pid in workers)
  assert _no_sandboxes_of(workers)
  assert not os.path.exists(root)  # the killed worker's sandbox dir went with its pool


def test_zygote_killed_mid_run_is_error_and_restarted(caplog):
  with pool.RewardPool(1, code_timeout_s=20.0) as p:
    worker = p.pids()[0]
    assert p.score([("code", (ADD, TESTS))]).counts["correct"] == 1  # starts the zygote
    (zygote,) = _children([worker], "sandbox_zygote")

    def kill_when_busy():
      deadline = time.monotonic() + 10.0
      while not _children([zygote], "") and time.monotonic() < deadline:
        time.sleep(0.01)
      os.kill(zygote, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    start = time.monotonic()
    with caplog.at_level("WARNING"):
      r = p.score([("code", ("import time\ntime.sleep(15)", TESTS)), ("code", (ADD, TESTS))])
    killer.join()
    assert time.monotonic() - start < 8.0  # the sleeping sandbox died with its zygote
    assert list(r.outcomes) == [Outcome.ERROR, Outcome.CORRECT], r.details
    assert "zygote died during the run" in r.details[0] and "item 0 (code) ERROR" in caplog.text
    assert p.replaced == 0 and p.pids() == [worker]  # the worker restarted its zygote itself
    (fresh,) = _children([worker], "sandbox_zygote")
    assert fresh != zygote and not _alive(zygote)
    assert _no_sandboxes_of([worker])
    os.kill(fresh, signal.SIGKILL)  # dead while idle: nothing is lost, the next item just passes
    time.sleep(0.1)
    assert p.score([("code", (ADD, TESTS))]).counts == {"correct": 1, "wrong": 0, "timeout": 0,
                                                       "error": 0}  # fmt: skip
    (third,) = _children([worker], "sandbox_zygote")
  assert not any(_alive(pid) for pid in (fresh, third, worker))


def test_close_is_clean_and_idempotent():
  p = pool.RewardPool(2)
  workers = p.pids()
  assert p.score([("code", (ADD, TESTS))] * 4).counts["correct"] == 4
  zygotes = _children(workers, "sandbox_zygote")
  assert zygotes
  p.close()
  p.close()
  assert not any(_alive(pid) for pid in workers + zygotes)
  with pytest.raises(RuntimeError, match="after close"):
    p.score([])
  with pytest.raises(ValueError, match="num_workers must be >= 1"):
    pool.RewardPool(0)


def test_sigterm_to_a_busy_worker_keeps_its_verdict():
  """A preemption SIGTERMs every process: the item a worker holds still gets its real verdict
  (the trainer finishes the step and saves it), and the idle worker then exits as usual."""
  slow_add = "import time\ntime.sleep(1.5)\n" + ADD
  with pool.RewardPool(1, code_timeout_s=20.0) as p:
    worker = p.pids()[0]

    def sigterm_when_busy():
      deadline = time.monotonic() + 10.0
      while not _children([worker], "") and time.monotonic() < deadline:
        time.sleep(0.01)
      time.sleep(0.3)  # the sandbox is running the slow program
      os.kill(worker, signal.SIGTERM)

    sender = threading.Thread(target=sigterm_when_busy)
    sender.start()
    r = p.score([("code", (slow_add, TESTS))])
    sender.join()
    assert list(r.outcomes) == [Outcome.CORRECT], r.details
    assert p.replaced == 0 and p.pids() == [worker]
