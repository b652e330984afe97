"""RewardPool: order, counts, timeouts, checker crashes as ERROR, worker replacement, cleanup."""

import glob
import os
import signal
import tempfile
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
  with pool.RewardPool(2, code_timeout_s=1.0, math_timeout_s=5.0) as p:
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


def _work_dirs() -> set[str]:
  tmp = tempfile.gettempdir()
  return set(glob.glob(f"{tmp}/score_sbx_*") + glob.glob(f"{tmp}/score_pool_*"))


def test_hung_worker_is_killed_at_the_pool_deadline():
  # The pool's deadline (0.5 s) is shorter than the sandbox's own (5 s): the pool must act.
  dirs_before = _work_dirs()
  with pool.RewardPool(1, code_timeout_s=5.0, deadline_s={"code": 0.5}) as p:
    start = time.monotonic()
    r = p.score([("code", ("import time\ntime.sleep(60)", TESTS))])
    assert time.monotonic() - start < 4.0
    assert list(r.outcomes) == [Outcome.TIMEOUT] and p.replaced == 1
    workers = p.pids()
    assert p.score([("code", (ADD, TESTS))]).counts["correct"] == 1
  assert not any(_alive(pid) for pid in workers)
  deadline = time.monotonic() + 3.0
  while code_reward.sandbox_processes() and time.monotonic() < deadline:
    time.sleep(0.05)
  assert code_reward.sandbox_processes() == []
  assert _work_dirs() <= dirs_before  # the killed worker's sandbox dir went with its pool


def test_close_is_clean_and_idempotent():
  p = pool.RewardPool(2)
  workers = p.pids()
  p.close()
  p.close()
  assert not any(_alive(pid) for pid in workers)
  with pytest.raises(RuntimeError, match="after close"):
    p.score([])
  with pytest.raises(ValueError, match="num_workers must be >= 1"):
    pool.RewardPool(0)
