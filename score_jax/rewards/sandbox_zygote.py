"""Sandbox zygote: a trusted, pre-warmed parent that forks one fresh sandbox per program.

Child side, standard library only (imported outside the package, like `sandbox_harness`). Started
once per reward worker by `zygote.Zygote` as `python -I -S -c <loader>` with a clean environment,
cwd `/`, its own session, and one end of a unix socket. It imports the harness and a few common
stdlib modules once, then serves runs one at a time:

  client: 1 byte + SCM_RIGHTS (stdin read end, stdout write end, stderr write end, status write
          end) of a run;
  zygote: fork; the child becomes its own session on those fds (as 0, 1, 2 and 3) and calls
          `sandbox_harness.main()`: the same bootstrap and confined child as the one-shot path
          (namespaces, tmpfs, rlimits, uid, pdeathsig, no_new_privs, Landlock, harness);
  zygote: sends the pid, waits for the exit WITHOUT reaping (so the pid and its process group stay
          reserved while the client may still kill them), sends the exit code, and reaps the
          zombie when the next request or EOF arrives.

The zygote never runs untrusted code and never sees a run's configuration (program, tests, secret
marker): the forked child reads it from its own stdin pipe. Nothing a run changes reaches the
zygote or a later run (fork copies memory; work dirs are per-run tmpfs). Shared by all runs of one
zygote: the str hash seed and the address-space layout. Modules in `PRELOAD` must not hold
per-process secrets or RNG state (hence no `random`, `tempfile`, `secrets`).
"""

import _socket
import os
import sys

import sandbox_bootstrap as bootstrap
import sandbox_harness as harness

# Imported once here instead of in every run (`typing` alone costs ~6 ms; HumanEval imports it).
PRELOAD = (
  "types",
  "typing",
  "collections",
  "re",
  "math",
  "itertools",
  "functools",
  "heapq",
  "bisect",
  "string",
)
_PR_SET_PDEATHSIG, _SIGKILL = 1, 9
_RUN_FDS = 4  # a run's stdin, stdout, stderr and status pipe (the bootstrap's `S`: clock started)


def serve(sock_fd: int, parent_pid: int) -> None:
  """The zygote's loop; never returns (exits when the client closes the socket)."""
  for name in (__name__, "sandbox_harness", "sandbox_bootstrap"):
    sys.modules.pop(name, None)  # out of the children's sys.modules, as in the one-shot path
  ctypes, libc = bootstrap.load_libc()
  libc.prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)  # die with the reward worker
  if os.getppid() != parent_pid:
    os._exit(1)
  for name in PRELOAD:
    __import__(name)
  del ctypes, libc
  import gc

  gc.freeze()  # a collection in a run would touch (copy-on-write) every inherited object
  sock = _socket.socket(fileno=sock_fd)
  try:
    sock.sendall(b"R")
    _loop(sock)
  except OSError:  # the client went away: nothing left to serve
    pass
  os._exit(0)


def _loop(sock) -> None:
  reap = None
  while True:
    msg, ancdata, _, _ = sock.recvmsg(1, _socket.CMSG_SPACE(_RUN_FDS * 4))
    if reap is not None:  # the client is done with the previous run: free its pid now
      os.waitpid(reap, 0)
      reap = None
    if not msg:
      return
    fds = [
      int.from_bytes(data[i : i + 4], sys.byteorder)
      for level, kind, data in ancdata
      if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS
      for i in range(0, len(data) - 3, 4)
    ]
    if len(fds) != _RUN_FDS:
      os.write(2, f"sandbox zygote: expected {_RUN_FDS} fds, got {len(fds)}\n".encode())
      os._exit(2)
    pid = os.fork()
    if pid == 0:
      _child(fds)
    for fd in fds:
      os.close(fd)
    sock.sendall(pid.to_bytes(4, "little"))
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
    sock.sendall(code.to_bytes(4, "little", signed=True))
    reap = pid


def _child(fds: list[int]) -> None:
  """The forked run: own session on the run's pipes, then the one-shot bootstrap; never returns."""
  try:
    os.setsid()  # its own process group: the client kills the run with killpg(pid)
    # Targets 0-2 are the zygote's own std fds, never a received one: no dup2 clobbers a source.
    for target, fd in enumerate(fds):
      os.dup2(fd, target)
    os.closerange(_RUN_FDS, 1 << 20)  # the socket and the fds' originals: nothing else inherited
    harness.main()
  finally:
    os._exit(bootstrap.EXIT_SETUP)
