"""Reward pool: score a batch of math and code attempts in worker processes, each with a timeout.

Owns parallel reward computation for the training loop. Construct the pool at the top of `main`,
BEFORE JAX touches any device: workers are started with 'spawn' (never fork a process that holds
an initialised XLA runtime or TPU/GPU handles), and they import only the checkers, not JAX.

Items are `(kind, payload)`: `('math', (response, gold))` or `('code', (program, tests[, setup]))`.
Code items run in sandboxes forked from a per-worker `Zygote` (a trusted, pre-warmed sandbox
parent: no interpreter start-up per program; same isolation layers as a one-shot `run_tests`);
`zygote=False` starts a fresh interpreter per program instead. A zygote that dies is restarted by
its worker (the run it was serving is ERROR).
Each item has a deadline enforced by the pool itself: a worker still busy at its deadline is
killed (its zygote and sandbox die with it: parent-death signals) and replaced, and the item is
TIMEOUT.
A checker that raises, or a worker that dies, makes the item ERROR: counted and logged, never a
silent 0. Results keep the order of `items`.
"""

import dataclasses
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Sequence
from multiprocessing import connection

import numpy as np
from absl import logging

from score_jax.rewards import code_reward
from score_jax.rewards.outcome import Outcome, Verdict

KINDS = ("math", "code")
_POOL_GRACE_S = 10.0  # beyond a code item's own worst case (`code_reward.worst_case_s`)


@dataclasses.dataclass(frozen=True)
class PoolResult:
  """Scores of one batch, in item order.

  Attributes:
    rewards: float32 [n], 1.0 for CORRECT else 0.0.
    outcomes: int8 [n] of `Outcome` codes.
    counts: outcome name -> number of items ('correct', 'wrong', 'timeout', 'error').
    details: per-item explanation (extracted answer, failed assert, error message).
  """

  rewards: np.ndarray
  outcomes: np.ndarray
  counts: dict[str, int]
  details: list[str]


def _check(kind: str, payload: tuple, opts: dict, zygote) -> Verdict:
  if kind == "math":
    from score_jax.rewards import math_reward  # lazy: sympy only in workers that need it

    return math_reward.verify(*payload, timeout_s=opts["math_timeout_s"])
  return code_reward.verify(
    *payload, timeout_s=opts["code_timeout_s"], zygote=zygote, **opts["code_kwargs"]
  )


def _worker(conn: connection.Connection, opts: dict, warm: tuple[str, ...], root: str) -> None:
  """Worker loop: (index, kind, payload) in, (index, outcome, detail) out; None to stop."""
  opts["code_kwargs"].setdefault("work_root", root)
  if "math" in warm:
    from score_jax.rewards import math_reward  # noqa: F401
  zygote = None
  if opts["zygote"]:
    from score_jax.rewards.zygote import Zygote

    zygote = Zygote()  # started on the first code item, restarted if it dies
  try:
    conn.send("ready")  # deadlines count from dispatch: keep worker start-up out of them
    while True:
      task = conn.recv()
      if task is None:
        return
      index, kind, payload = task
      # A preemption SIGTERMs every process of the VM: the trainer finishes its step and saves,
      # so the item in hand must still get its verdict, not a spurious ERROR (a 0 reward the
      # resumed run would not reproduce). Idle, the default applies and the worker just exits.
      previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
      try:
        verdict = _check(kind, payload, opts, zygote)
        conn.send((index, int(verdict.outcome), verdict.detail))
      except Exception as e:  # the checker's failure: reported as ERROR with the reason
        detail = f"{type(e).__name__}: {e} | " + traceback.format_exc(limit=3)[-800:]
        conn.send((index, int(Outcome.ERROR), detail))
      finally:
        signal.signal(signal.SIGTERM, previous)
  finally:
    if zygote is not None:
      zygote.close()


def _validate(items: Sequence) -> None:
  for i, item in enumerate(items):
    if not (isinstance(item, tuple | list) and len(item) == 2 and item[0] in KINDS):
      raise ValueError(
        f"items[{i}]: expected (kind, payload) with kind in {KINDS}, got {item!r:.80}"
      )
    kind, payload = item
    arity = (2,) if kind == "math" else (2, 3)
    if not isinstance(payload, tuple | list) or len(payload) not in arity:
      raise ValueError(f"items[{i}]: {kind} payload must be a tuple of {arity} fields")
    if not isinstance(payload[0], str):
      raise ValueError(
        f"items[{i}]: {kind} payload[0] must be str, got {type(payload[0]).__name__}"
      )


class RewardPool:
  """A fixed set of worker processes scoring reward items with per-item deadlines."""

  def __init__(
    self,
    num_workers: int,
    context: str = "spawn",
    *,
    math_timeout_s: float = 5.0,
    code_timeout_s: float = 10.0,
    code_kwargs: dict | None = None,
    warm: tuple[str, ...] = (),
    deadline_s: dict[str, float] | None = None,
    zygote: bool = True,
  ):
    """Starts `num_workers` workers.

    Args:
      num_workers: worker processes (about the number of host cores available for rewards).
      context: multiprocessing start method; keep 'spawn' in any process that uses JAX.
      math_timeout_s: the math checker's own limit; the pool kills a worker at 2x + 1 s.
      code_timeout_s: each program's sandbox limit (from the end of its setup); the pool kills
        a worker only past the sandbox's own worst case (`code_reward.worst_case_s`) + 10 s.
      code_kwargs: extra `code_reward.run_tests` arguments (memory_mb, output_cap_bytes, ...).
      warm: kinds whose checker is imported at worker start ('math' imports sympy: ~1 s).
      deadline_s: per-kind override of the pool's own kill deadline (seconds).
      zygote: fork code sandboxes from a pre-warmed zygote per worker (~2x less CPU per program)
        rather than starting a fresh interpreter for each.
    """
    if num_workers < 1:
      raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    self._ctx = multiprocessing.get_context(context)
    self._opts = {
      "math_timeout_s": math_timeout_s,
      "code_timeout_s": code_timeout_s,
      "code_kwargs": dict(code_kwargs or {}),
      "zygote": zygote,
    }
    code_limit = code_reward.worst_case_s(code_timeout_s) + _POOL_GRACE_S
    self._limits = {"math": 2 * math_timeout_s + 1.0, "code": code_limit}
    self._limits.update(deadline_s or {})
    self._warm = warm
    # Sandbox work dirs live under one private dir per worker: the pool removes a killed
    # worker's dir (its own cleanup never ran). 0o711: sandbox uids may traverse, not list.
    self._root = tempfile.mkdtemp(prefix="score_pool_")
    os.chmod(self._root, 0o711)
    self._spawned = 0
    self._workers = [self._spawn() for _ in range(num_workers)]
    for proc, conn in self._workers:
      self._await_ready(proc, conn)
    self.replaced = 0  # workers killed (deadline) or found dead and restarted

  def _worker_root(self, proc) -> str:
    return os.path.join(self._root, proc.name)

  def _spawn(self):
    parent, child = self._ctx.Pipe()
    self._spawned += 1
    name = f"reward-worker-{self._spawned}"
    root = os.path.join(self._root, name)
    os.mkdir(root, 0o711)
    args = (child, self._opts, self._warm, root)
    proc = self._ctx.Process(target=_worker, args=args, name=name, daemon=True)
    proc.start()
    child.close()
    return proc, parent

  @staticmethod
  def _await_ready(proc, conn) -> None:
    try:
      if conn.poll(120.0) and conn.recv() == "ready":
        return
    except EOFError:
      pass
    raise RuntimeError(f"reward worker {proc.pid} failed to start (exit code {proc.exitcode})")

  def _replace(self, slot: int) -> None:
    proc, conn = self._workers[slot]
    if proc.is_alive():
      proc.kill()
    proc.join()
    conn.close()
    shutil.rmtree(self._worker_root(proc))
    self._workers[slot] = self._spawn()
    self._await_ready(*self._workers[slot])
    self.replaced += 1

  def score(self, items: Sequence[tuple[str, tuple]]) -> PoolResult:
    """Scores `items` in parallel; see the module docstring for the item format."""
    if self._workers is None:
      raise RuntimeError("RewardPool.score called after close()")
    _validate(items)
    n = len(items)
    outcomes = np.full(n, -1, np.int8)
    details = [""] * n
    pending = list(range(n - 1, -1, -1))
    busy: dict[int, tuple[int, float]] = {}  # slot -> (item index, deadline)

    def finish(slot: int, index: int, outcome: Outcome, detail: str) -> None:
      outcomes[index], details[index] = outcome, detail
      del busy[slot]
      if outcome == Outcome.ERROR:
        logging.warning("reward item %d (%s) ERROR: %s", index, items[index][0], detail)

    while pending or busy:
      for slot in range(len(self._workers)):
        if slot not in busy and pending:
          index = pending.pop()
          kind, payload = items[index]
          try:
            self._workers[slot][1].send((index, kind, tuple(payload)))
          except (BrokenPipeError, EOFError, OSError):
            self._replace(slot)  # died while idle: retry the item on the fresh worker
            self._workers[slot][1].send((index, kind, tuple(payload)))
          busy[slot] = (index, time.monotonic() + self._limits[kind])
      waitables = {}
      for slot in busy:
        proc, conn = self._workers[slot]
        waitables[conn] = slot
        waitables[proc.sentinel] = slot
      timeout = max(0.0, min(d for _, d in busy.values()) - time.monotonic())
      for ready in connection.wait(list(waitables), timeout):
        slot = waitables[ready]
        if slot not in busy:
          continue  # both its pipe and sentinel fired in this round
        index = busy[slot][0]
        conn = self._workers[slot][1]
        try:
          got, code, detail = conn.recv() if ready is conn or conn.poll() else (None, 0, "")
        except (EOFError, OSError):
          got = None
        if got == index:
          finish(slot, index, Outcome(code), detail)
        else:
          code = self._workers[slot][0].exitcode
          finish(slot, index, Outcome.ERROR, f"reward worker died (exit code {code})")
          self._replace(slot)
      now = time.monotonic()
      for slot, (index, deadline) in list(busy.items()):
        if now >= deadline and not self._workers[slot][1].poll():  # a result waiting is on time
          kind = items[index][0]
          logging.warning("reward item %d (%s): worker killed at the pool deadline", index, kind)
          finish(slot, index, Outcome.TIMEOUT, f"pool deadline {self._limits[kind]:.0f}s")
          self._replace(slot)
    rewards = (outcomes == Outcome.CORRECT).astype(np.float32)
    counts = {o.name.lower(): int(np.sum(outcomes == o)) for o in Outcome}
    return PoolResult(rewards, outcomes, counts, details)

  @property
  def work_root(self) -> str:
    """The private dir holding the workers' sandbox dirs (removed by `close`)."""
    return self._root

  def pids(self) -> list[int]:
    """Worker process ids (for tests and monitoring)."""
    return [proc.pid for proc, _ in self._workers or []]

  def close(self) -> None:
    """Stops the workers; kills any that do not exit within 5 s. Idempotent."""
    if self._workers is None:
      return
    for _, conn in self._workers:
      try:
        conn.send(None)
      except (BrokenPipeError, OSError):
        pass
    for proc, conn in self._workers:
      proc.join(5.0)
      if proc.is_alive():
        proc.kill()
        proc.join()
      conn.close()
    shutil.rmtree(self._root)
    self._workers = None

  def __enter__(self) -> "RewardPool":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
