"""Code reward: run a program against its tests in a confined, fresh sandbox process.

Owns the parent side of the sandbox: validating and rewriting the tests, starting the sandbox
(`sandbox_harness` is the child side and documents the layers), feeding it over stdin, enforcing
the time limit and the output caps, and deciding pass/fail. The sandbox starts as a fresh
`python -I -S` (one-shot, the default for single calls) or as a fork of a pre-warmed `Zygote`
(what the reward pool uses: ~2x less CPU per program); both run the same bootstrap and layers.

Verdicts do not depend on timing. The program's limit starts when the sandbox has finished its
setup: the confined child then writes `S` on a status pipe and closes it before the program's
first bytecode (so `S` precedes any output, and the program cannot write it).
No `S` means the program never ran, so whatever happened is the checker's ERROR (setup failed,
or took longer than `SETUP_LIMIT_S`); after `S`, a run killed by the limit at any moment is
TIMEOUT, and exit statuses the program could forge (97 "setup failed", 124 "timeout") are
relayed as failures by the bootstrap. The limit counts the program's own time: wall time less the
time it sat runnable waiting for a CPU, so a host loaded by sampling or other sandboxes does not
turn a correct program into a TIMEOUT (up to `WALL_BACKSTOP` x the limit in wall time). A wait
the program causes itself does not count for it: its own time is also at least the CPU time of
its whole process tree (all its processes' CPU seconds; at most the wall time), so forked CPU
burners cannot stretch the limit.

A run passes only if the harness's own end marker (a fresh secret per run, never in the program
text, command line or any file) appears on stdout AND the process exits 0. The harness prints it
after every assert ran, so `exit(0)` before the tests, a crash, or a killed harness cannot pass.
Asserts are rewritten (`assert_rewrite`) into calls that compare builtin values type-strictly,
so an object whose `__eq__` always returns True cannot satisfy `assert f(x) == 3`.

Root (CI, TPU VMs): each run gets its own unprivileged uid from a dedicated range (RLIMIT_NPROC
counts per uid and does not bind root; the uid also keeps the program out of root's files).
Not root: no uid drop and no process-count limit; namespaces are tried through a user namespace.
"""

import dataclasses
import functools
import itertools
import marshal
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence

from score_jax.rewards.assert_rewrite import rewrite_tests
from score_jax.rewards.outcome import Outcome, Verdict
from score_jax.rewards.zygote import Zygote, ZygoteRun

# Dedicated uid range for sandboxes: BASE + (pid % 2**22) * 16 + slot (no passwd entries needed).
SANDBOX_UID_BASE = 1 << 30
SANDBOX_UID_SPAN = 1 << 26
_READ_ONLY_SYSTEM = ("/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache", "/etc/localtime")
_LOADER = "import sys;sys.path.insert(0,{!r});__import__('sandbox_harness').main()"
_EXIT_SETUP, _EXIT_TIMEOUT = 97, 124
# Setup (namespaces, tmpfs, Landlock, uid drop) takes milliseconds; this bounds a host so loaded
# that it takes longer, which is then the checker's ERROR, never a program's timeout.
SETUP_LIMIT_S = 30.0
_GRACE_S = 5.0  # parent backstop beyond the bootstrap's own deadline (a descheduled bootstrap)
# The time limit counts the program's own time, not time it waited for a CPU; this many times the
# limit in wall time ends a run whatever its waits (a host loaded by others far beyond its CPUs).
WALL_BACKSTOP = 4.0
_slots = itertools.count()
_STATUS_OUTCOME = {
  "passed": Outcome.CORRECT,
  "failed": Outcome.WRONG,
  "timeout": Outcome.TIMEOUT,
  "error": Outcome.ERROR,
}


@dataclasses.dataclass(frozen=True)
class TestResult:
  """What one sandboxed run did.

  Attributes:
    status: 'passed' | 'failed' | 'timeout' | 'error' (error: the sandbox itself failed).
    stdout: the program's captured stdout (capped; the end marker removed).
    stderr: captured stderr (capped), including the harness's reason for a failure.
    duration_s: wall-clock seconds from start to reaping.
    returncode: the sandbox's exit status (None if the parent had to kill it).
    detail: one line on why (failed assert line, cap exceeded, ...).
    layers: the confinement layers that applied, as reported by the child.
  """

  __test__ = False  # not a pytest class

  status: str
  stdout: str
  stderr: str
  duration_s: float
  returncode: int | None
  detail: str = ""
  layers: str = ""

  @property
  def verdict(self) -> Verdict:
    return Verdict(_STATUS_OUTCOME[self.status], self.detail)


def _sandbox_uid() -> int | None:
  if os.geteuid() != 0:
    return None
  return SANDBOX_UID_BASE + (os.getpid() % (1 << 22)) * 16 + next(_slots) % 16


@functools.cache
def _stdlib_paths() -> tuple[str, ...]:
  stdlib = sysconfig.get_paths()["stdlib"]
  return tuple(p for p in (stdlib, os.path.join(stdlib, "lib-dynload")) if os.path.isdir(p))


def sandbox_processes(owners: Sequence[int] | None = None) -> list[int]:
  """Pids of live processes (zombies included) whose real uid is in the sandbox range.

  Args:
    owners: only sandboxes started by these processes (pids that called `run_tests`); default
      all, including other users' of this machine.
  """
  slots = None if owners is None else {pid % (1 << 22) for pid in owners}
  pids = []
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/status") as f:
        uid_line = next(line for line in f if line.startswith("Uid:"))
    except (OSError, StopIteration):
      continue  # exited while we looked
    offset = int(uid_line.split()[1]) - SANDBOX_UID_BASE
    if 0 <= offset < SANDBOX_UID_SPAN and (slots is None or offset // 16 in slots):
      pids.append(int(entry))
  return pids


def run_tests(
  program: str,
  tests: Sequence[str] | str,
  timeout_s: float = 10.0,
  setup_code: str = "",
  memory_mb: int = 1024,
  output_cap_bytes: int = 1 << 20,
  *,
  nproc: int = 32,
  disk_mb: int = 64,
  namespaces: bool = True,
  work_root: str | None = None,
  zygote: Zygote | None = None,
) -> TestResult:
  """Runs `program`, then `setup_code`, then the asserts in `tests`, in a fresh sandbox.

  Args:
    program: untrusted source (a model's attempt). Its own errors make the run 'failed'.
    tests: trusted test source, or a list of statements (MBPP `test_list`) joined by newlines.
    timeout_s: time limit of the program and its tests, counted from the end of the sandbox's
      setup: wall time less the time it waited for a CPU (but at least the CPU time of all its
      processes together, up to the wall time), and at most `WALL_BACKSTOP` times this in wall
      time. A CPU-time limit a second above it, rounded up, is the backstop (the program's own
      time is at least its CPU time, so the time limit fires first).
    setup_code: trusted code run after the program, before the tests (MBPP `test_setup_code`).
    memory_mb: address-space limit of the interpreter.
    output_cap_bytes: per-stream capture cap; a program that writes more is killed and fails.
    nproc: process+thread limit of the sandbox uid (root only).
    disk_mb: size of the tmpfs work dir (root only; otherwise RLIMIT_FSIZE alone bounds writes).
    namespaces: try network/pid/mount namespaces (off only to measure their cost).
    work_root: where the private work dir is created (default: the system temp dir). The reward
      pool gives each worker its own, so a worker killed mid-run leaves nothing behind.
    zygote: fork the sandbox from this pre-warmed zygote instead of starting an interpreter
      (same layers; a zygote that dies mid-run makes the run 'error' and is restarted).

  Returns:
    TestResult; `.verdict` gives the Outcome.

  Raises:
    ValueError: a non-string program or unparsable tests/setup (bad input, not a bad attempt).
    ZygoteError: `zygote` could not be (re)started.
  """
  tests = _checked_inputs(program, tests, timeout_s, memory_mb, output_cap_bytes)
  tests_code, setup = rewrite_tests(tests, "tests"), rewrite_tests(setup_code, "setup_code")
  uid = _sandbox_uid()
  marker = secrets.token_hex(16)
  workdir = tempfile.mkdtemp(prefix="score_sbx_", dir=work_root)
  if uid is not None:
    os.chown(workdir, uid, uid)
  env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
  cfg = {
    "marker": marker, "program": program, "tests": tests_code, "setup": setup, "env": env,
    "uid": uid, "workdir": workdir, "namespaces": namespaces, "zygote": zygote is not None,
    "timeout_s": float(timeout_s), "cpu_s": math.ceil(timeout_s) + 1, "nproc": nproc,
    "memory_mb": memory_mb, "fsize_mb": disk_mb, "nofile": 64, "disk_mb": disk_mb,
    "setup_s": SETUP_LIMIT_S, "wall_s": WALL_BACKSTOP * float(timeout_s),
    "std_paths": _stdlib_paths(), "read_paths": _stdlib_paths() + _READ_ONLY_SYSTEM,
  }  # fmt: skip
  start = time.monotonic()
  try:
    proc, status = _launch(cfg, zygote)
    try:
      out, err, capped, killed, started = _communicate(
        proc, marshal.dumps(cfg), status, start, timeout_s, output_cap_bytes
      )
    finally:
      if proc.poll() is None:
        _kill_group(proc)
  finally:
    try:
      os.rmdir(workdir)  # empty on the host: the program wrote to its tmpfs, gone with the run
    except OSError:
      shutil.rmtree(workdir)  # no mount namespace: its files landed here
  duration = time.monotonic() - start
  if getattr(proc, "lost", False):  # not the program's doing: it cannot reach the zygote
    return TestResult("error", "", err.decode("utf-8", "replace"), duration, None,
                      "the sandbox zygote died during the run")  # fmt: skip
  return _result(proc.returncode, out, err, marker, capped, killed, started, duration)


def _checked_inputs(
  program, tests: Sequence[str] | str, timeout_s: float, memory_mb: int, output_cap_bytes: int
) -> str:
  """The tests as one source string; ValueError on a bad input (not a bad attempt)."""
  if not isinstance(program, str):
    raise ValueError(f"program must be str, got {type(program).__name__}")
  if not isinstance(tests, str):
    if not all(isinstance(t, str) for t in tests):
      raise ValueError(f"tests must be str or a sequence of str, got {tests!r:.80}")
    tests = "\n".join(tests)
  if not (timeout_s > 0 and memory_mb > 0 and output_cap_bytes > 0):
    raise ValueError(f"timeout_s={timeout_s}, memory_mb={memory_mb}, output_cap_bytes="
                     f"{output_cap_bytes}: all must be > 0")  # fmt: skip
  return tests


def _launch(cfg: dict, zygote: Zygote | None):
  """Starts the sandbox (a zygote fork, else a fresh interpreter) -> (process, status pipe).

  Records in `cfg` the parent the bootstrap must stay tied to and its status pipe's fd.
  """
  if zygote is not None:
    proc = zygote.launch()
    cfg["ppid"] = zygote.pid  # the bootstrap checks it is still tied to its parent
    cfg["status_fd"] = ZygoteRun.STATUS_FD
    return proc, proc.status
  loader = _LOADER.format(os.path.dirname(os.path.abspath(__file__)))
  status_r, status_w = os.pipe()
  try:
    proc = subprocess.Popen(
      [sys.executable, "-I", "-S", "-c", loader],
      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      env=cfg["env"], cwd=cfg["workdir"], start_new_session=True, close_fds=True,
      pass_fds=(status_w,),
    )  # fmt: skip
  except BaseException:
    os.close(status_r)
    raise
  finally:
    os.close(status_w)
  cfg["ppid"] = os.getpid()
  cfg["status_fd"] = status_w  # pass_fds keeps the number
  return proc, open(status_r, "rb")


def _communicate(proc, blob: bytes, status, start: float, timeout_s: float, cap: int):
  """Feeds stdin, reads both streams up to `cap` bytes each until exit or the deadline.

  The deadline is `SETUP_LIMIT_S` after `start` until the sandbox writes `S` on `status` (the
  program's clock started), then the wall backstop (`WALL_BACKSTOP` x `timeout_s`) + grace after
  that. Closes `status`.

  Returns:
    (stdout, stderr, capped reason, killed reason, whether the program started)
  """
  try:
    proc.stdin.write(blob)
    proc.stdin.close()
  except BrokenPipeError:
    pass  # the child died at startup; its status and stderr tell why
  bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
  sel = selectors.DefaultSelector()
  for stream in (*bufs, status):
    os.set_blocking(stream.fileno(), False)
    sel.register(stream, selectors.EVENT_READ)
  capped = killed = None
  started = False
  deadline = start + SETUP_LIMIT_S + _GRACE_S
  while sel.get_map():
    left = deadline - time.monotonic()
    if left <= 0:
      killed = "the sandbox outlived its deadline and was killed"
      if not started:
        killed = f"the sandbox did not finish its setup in {SETUP_LIMIT_S:g} s and was killed"
      break
    for key, _ in sel.select(min(left, 1.0)):
      chunk = os.read(key.fd, 65536)
      if key.fileobj is status:
        if chunk[:1] == b"S" and not started:
          started = True
          deadline = time.monotonic() + WALL_BACKSTOP * timeout_s + _GRACE_S
        if not chunk:
          sel.unregister(status)
        continue
      if not chunk:
        sel.unregister(key.fileobj)
        continue
      buf = bufs[key.fileobj]
      buf += chunk
      if len(buf) > cap:
        del buf[cap:]
        capped = f"{'stdout' if key.fileobj is proc.stdout else 'stderr'} exceeded {cap} bytes"
    if capped:
      break
  sel.close()
  if capped or killed:
    _kill_group(proc)
  else:
    try:
      proc.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      killed = "the sandbox closed its output but did not exit"
      _kill_group(proc)
  proc.stdout.close()
  proc.stderr.close()
  status.close()
  return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), capped, killed, started


def _kill_group(proc: subprocess.Popen | ZygoteRun) -> None:
  # The bootstrap leads the session; killing it also kills the confined child (parent-death
  # signal), whose pid namespace then takes every process the program started with it.
  if isinstance(proc, ZygoteRun):
    proc.kill_group()
    return
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  proc.wait()


def _result(rc, out: bytes, err: bytes, marker: str, capped, killed, started, duration):
  stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
  layers = ""
  if stderr.startswith("[sandbox layers: "):
    head, _, stderr = stderr.partition("\n")
    layers = head[len("[sandbox layers: ") : -1]
  end = f"\n{marker}\n"
  seen = end in stdout
  stdout = stdout.replace(end, "")
  last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
  if not started:  # the program never ran: whatever happened is the sandbox's failure
    status, rc = "error", None if killed else rc
    detail = killed or last or f"the sandbox exited with status {rc} before the program started"
  elif capped:
    status, detail = "failed", capped
  elif killed:
    status, detail, rc = "timeout", killed, None
  elif rc == _EXIT_TIMEOUT:
    status, detail = "timeout", "time limit exceeded"
  elif rc == _EXIT_SETUP:
    status, detail = "error", last
  elif rc == 0 and seen:
    status, detail = "passed", ""
  else:
    status = "failed"
    detail = last if rc else "exited 0 without the harness's end marker"
  return TestResult(status, stdout, stderr, duration, rc, detail[:500], layers)


def worst_case_s(timeout_s: float) -> float:
  """The longest `run_tests` can take before its own backstop kills the sandbox."""
  return SETUP_LIMIT_S + WALL_BACKSTOP * timeout_s + _GRACE_S


def verify(program: str, tests: Sequence[str] | str, setup_code: str = "", **kw) -> Verdict:
  """The Verdict of `run_tests` (the reward pool's entry point for code items)."""
  return run_tests(program, tests, setup_code=setup_code, **kw).verdict
