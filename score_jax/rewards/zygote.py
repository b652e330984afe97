"""Parent side of the sandbox zygote: start it, launch runs through it, recover when it dies.

A `Zygote` is owned by one process (a reward worker) and used for one run at a time. It replaces
`subprocess.Popen` of a fresh interpreter (~15 ms of CPU start-up per program) by a fork of a
pre-warmed, trusted parent (`sandbox_zygote`, the child side, documents the protocol and what runs
share). `launch()` returns a `ZygoteRun`, which offers the subset of the `Popen` interface that
`code_reward` uses (stdin/stdout/stderr pipes, pid, poll, wait), plus the status pipe (the
bootstrap's `S` when the program's clock starts) and `kill_group`.

The zygote dies with its owner (parent-death signal); if it dies first, the run in flight reports
`lost` (its sandbox dies with it: the bootstrap's own parent-death signal) and the next `launch()`
starts a fresh zygote.
"""

import os
import signal
import socket
import subprocess
import sys

_LOADER = "import sys;sys.path.insert(0,{!r});__import__('sandbox_zygote').serve({},{})"
_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # runs add their own HOME and TMPDIR
_REPLY_TIMEOUT_S = 30.0  # start-up and fork replies on a heavily loaded host


class ZygoteError(RuntimeError):
  """The zygote could not be started or could not launch a run (the checker's failure)."""


class _Lost(Exception):
  pass


class Zygote:
  """A pre-warmed sandbox parent; started on first use, restarted after it dies."""

  def __init__(self):
    self._proc: subprocess.Popen | None = None
    self._sock: socket.socket | None = None
    self.starts = 0  # zygotes started so far (1 + restarts)

  @property
  def pid(self) -> int | None:
    return self._proc.pid if self._proc else None

  def _start(self) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    loader = _LOADER.format(
      os.path.dirname(os.path.abspath(__file__)), theirs.fileno(), os.getpid()
    )
    # stderr is inherited: a crashing zygote's traceback lands in the worker's log.
    self._proc = subprocess.Popen(
      [sys.executable, "-I", "-S", "-c", loader],
      stdin=subprocess.DEVNULL,
      stdout=subprocess.DEVNULL,
      env=_ENV,
      cwd="/",
      start_new_session=True,
      pass_fds=(theirs.fileno(),),
    )
    theirs.close()
    self._sock = ours
    self.starts += 1
    try:
      self._recv(1)
    except _Lost:
      code = self._discard()
      raise ZygoteError(f"sandbox zygote failed to start (exit code {code})") from None

  def _recv(self, n: int, timeout: float | None = _REPLY_TIMEOUT_S) -> bytes:
    """Reads an n-byte reply; TimeoutError if none began within `timeout`; _Lost on EOF."""
    self._sock.settimeout(timeout)
    data = b""
    while len(data) < n:
      try:
        chunk = self._sock.recv(n - len(data))
      except BlockingIOError:  # timeout 0 (a poll)
        raise TimeoutError from None
      except ConnectionError:
        chunk = b""
      if not chunk:
        raise _Lost
      data += chunk
      self._sock.settimeout(_REPLY_TIMEOUT_S)  # a reply that began completes promptly
    return data

  def _discard(self) -> int | None:
    """Forgets a dead or broken zygote (killing it if needed); -> its exit code."""
    proc, self._proc = self._proc, None
    if self._sock is not None:
      self._sock.close()
      self._sock = None
    if proc is None:
      return None
    if proc.poll() is None:
      proc.kill()
    return proc.wait()

  def launch(self) -> "ZygoteRun":
    """Forks one sandbox bootstrap on fresh pipes; it reads its configuration from stdin.

    Raises:
      ZygoteError: no zygote could be started, or two in a row died before forking.
    """
    for attempt in range(2):
      if self._sock is None:
        self._start()
      in_r, in_w = os.pipe()
      out_r, out_w = os.pipe()
      err_r, err_w = os.pipe()
      status_r, status_w = os.pipe()
      try:
        socket.send_fds(self._sock, [b"L"], [in_r, out_w, err_w, status_w])
        pid = int.from_bytes(self._recv(4), "little")
      except (OSError, _Lost):  # died while idle (nothing of a run is lost): start afresh
        for fd in (in_w, out_r, err_r, status_r):
          os.close(fd)
        code = self._discard()
        if attempt:
          raise ZygoteError(f"sandbox zygote died before forking (exit code {code})") from None
        continue
      finally:
        for fd in (in_r, out_w, err_w, status_w):
          os.close(fd)
      streams = (open(in_w, "wb"), open(out_r, "rb"), open(err_r, "rb"), open(status_r, "rb"))
      return ZygoteRun(self, pid, *streams)
    raise AssertionError("unreachable")

  def close(self) -> None:
    """Stops the zygote (it reaps its last run on EOF); kills it after 5 s. Idempotent."""
    if self._sock is not None:
      self._sock.close()
      self._sock = None
    if self._proc is not None:
      try:
        self._proc.wait(5.0)
      except subprocess.TimeoutExpired:
        self._proc.kill()
        self._proc.wait()
      self._proc = None

  def __enter__(self) -> "Zygote":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


class ZygoteRun:
  """One run forked by a zygote, with the part of the `Popen` interface `code_reward` uses."""

  STATUS_FD = 3  # where the run's bootstrap finds its status pipe (`sandbox_zygote._child`)

  def __init__(self, zygote: Zygote, pid: int, stdin, stdout, stderr, status):
    self._zygote = zygote
    self.pid, self.stdin, self.stdout, self.stderr = pid, stdin, stdout, stderr
    self.status = status  # read end of the bootstrap's status pipe
    self.returncode: int | None = None
    self.lost = False  # the zygote died before reporting this run's exit

  def poll(self) -> int | None:
    if self.returncode is None and not self.lost:
      try:
        self.wait(0.0)
      except subprocess.TimeoutExpired:
        pass
    return self.returncode

  def wait(self, timeout: float | None = None) -> int | None:
    if self.returncode is not None or self.lost:
      return self.returncode
    try:
      code = self._zygote._recv(4, timeout)
    except TimeoutError:
      raise subprocess.TimeoutExpired(f"sandbox {self.pid}", timeout) from None
    except _Lost:
      self.lost = True
      self._zygote._discard()
      return None
    self.returncode = int.from_bytes(code, "little", signed=True)
    return self.returncode

  def kill_group(self) -> None:
    """SIGKILLs the run's process group and waits for its exit status."""
    if self.poll() is None and not self.lost:
      # Safe from pid reuse: a live zygote keeps the run unreaped until our next request.
      for kill in (os.killpg, os.kill):
        try:
          kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
          pass
      self.wait()
