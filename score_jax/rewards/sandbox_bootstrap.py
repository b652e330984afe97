"""Layers 1 and 2 of the code sandbox: the bootstrap and the confined child (`sandbox_harness`).

Standard library only, imported outside the package with the harness (`sandbox_harness`
documents every layer, the exit codes and the timing protocol). The bootstrap (root, outside)
ties itself to the worker, enters new namespaces with a size-capped tmpfs on the work dir, forks
the child, enforces the time limit and relays the child's status. The child (pid 1 of the
new pid namespace) sets rlimits, drops to the run's uid, arms no_new_privs and Landlock, reaches
the stdlib through pre-opened directory fds, and hands over to the harness.
"""

import _signal as signal  # the `signal` module costs ~9 ms of enum imports per run
import os
import resource  # noqa: F401 - os.wait4 imports it for its rusage: import it before any clock
import select
import sys
import time

# Exit codes of a run (meanings in `sandbox_harness`); only the bootstrap may use 97 and 124.
EXIT_ASSERT, EXIT_PROGRAM, EXIT_EXITED, EXIT_TESTS, EXIT_TAMPER, EXIT_RESERVED = 1, 2, 3, 4, 5, 6
EXIT_SETUP, EXIT_TIMEOUT = 97, 124
_POLL_S = 0.005  # exit polling interval where pidfds are unavailable (Linux < 5.3)
_MIN_WAIT_S = 0.001  # own time this close to the limit counts as reaching it
_CPU_LIMIT_SLACK_S = 0.25

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_PRIVATE = 2, 4, 0x4000, 0x40000
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38
_NR_LANDLOCK = (444, 445, 446)  # create_ruleset, add_rule, restrict_self (x86_64 and arm64)
_LL_READ = 1 | 4 | 8  # EXECUTE | READ_FILE | READ_DIR
_LL_FILE = 2 | 4 | (1 << 14)  # WRITE_FILE | READ_FILE | TRUNCATE (TRUNCATE from ABI 3)

_LIBC = []


def fail_setup(msg: str) -> None:
  os.write(2, f"sandbox setup failed: {msg}\n".encode())
  os._exit(EXIT_SETUP)


def load_libc():
  """A few libc calls through `_ctypes` directly: importing `ctypes` costs ~5 ms per run."""
  if _LIBC:
    return _LIBC[0]  # built once by the zygote, inherited by every run it forks
  import _ctypes

  class C:  # the subset of the ctypes namespace used here
    Structure, byref, get_errno = _ctypes.Structure, _ctypes.byref, _ctypes.get_errno

  for name, code in [
    ("c_long", "l"),
    ("c_size_t", "L"),
    ("c_uint32", "I"),
    ("c_int32", "i"),
    ("c_uint64", "Q"),
    ("c_char_p", "z"),
  ]:
    setattr(C, name, type(name, (_ctypes._SimpleCData,), {"_type_": code}))

  class Rlimit(C.Structure):
    _fields_ = [("cur", C.c_uint64), ("max", C.c_uint64)]

  class LandlockAttr(C.Structure):
    _fields_ = [("fs", C.c_uint64), ("net", C.c_uint64), ("scoped", C.c_uint64)]

  class LandlockBeneath(C.Structure):
    _pack_ = 1
    _fields_ = [("allowed", C.c_uint64), ("fd", C.c_int32)]

  C.Rlimit, C.LandlockAttr, C.LandlockBeneath = Rlimit, LandlockAttr, LandlockBeneath

  class Fn(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = C.c_long

  class Libc:
    _handle = _ctypes.dlopen(None, 0)

    def __getattr__(self, name):
      fn = Fn((name, self))
      setattr(self, name, fn)
      return fn

  libc = Libc()
  for name in ("prctl", "syscall", "setrlimit", "unshare", "mount"):
    getattr(libc, name)
  _LIBC.append((C, libc))
  return _LIBC[0]


def _setrlimit(ctypes, libc, which: int, value: int) -> None:
  limit = ctypes.Rlimit(value, value)
  _check(ctypes, libc.setrlimit(which, ctypes.byref(limit)), f"setrlimit({which})")


def _check(ctypes, ret: int, what: str) -> None:
  if ret < 0:
    fail_setup(f"{what}: {os.strerror(ctypes.get_errno())}")


def _landlock_ruleset(ctypes, libc, cfg: dict) -> tuple[int, int]:
  """Builds the Landlock ruleset while still root (paths under /root are openable); -> (fd, abi)."""
  abi = libc.syscall(_NR_LANDLOCK[0], None, ctypes.c_size_t(0), ctypes.c_uint32(1))
  if abi < 1:
    return -1, 0
  fs_all = (1 << (13 if abi == 1 else 14 if abi == 2 else 15 if abi < 5 else 16)) - 1
  # Handling net (ABI 4) and scopes (ABI 6) with no rules denies TCP bind/connect, and signals
  # and abstract unix sockets towards anything outside this sandbox.
  attr = ctypes.LandlockAttr(fs_all, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
  size = 8 if abi < 4 else 16 if abi < 6 else 24
  rs = libc.syscall(_NR_LANDLOCK[0], ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
  _check(ctypes, rs, "landlock_create_ruleset")
  rules = [(p, _LL_READ) for p in cfg["read_paths"]]
  rules += [(cfg["workdir"], fs_all), ("/dev/null", _LL_FILE), ("/dev/urandom", 4)]
  for path, access in rules:
    try:
      fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
      continue
    if not os.path.isdir(path):
      access &= 1 | 2 | 4 | (1 << 14) | (1 << 15)  # only file rights apply to a file
    rule = ctypes.LandlockBeneath(access & fs_all, fd)
    ret = libc.syscall(_NR_LANDLOCK[1], rs, 1, ctypes.byref(rule), 0)
    os.close(fd)
    _check(ctypes, ret, f"landlock_add_rule({path})")
  return rs, abi


def _landlock_restrict(ctypes, libc, rs: int, abi: int) -> str:
  _check(ctypes, libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
  if rs < 0:
    return "no-landlock"
  _check(ctypes, libc.syscall(_NR_LANDLOCK[2], rs, 0), "landlock_restrict_self")
  os.close(rs)
  return f"landlock-v{abi}"


def bootstrap(cfg: dict, harness) -> None:
  """Namespaces and the tmpfs (as root), then forks the confined child and waits for it.

  The child confines itself and then calls `harness(cfg)`, which must never return.
  """
  ctypes, libc = load_libc()
  libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
  if os.getppid() != cfg["ppid"]:
    os._exit(EXIT_SETUP)  # the worker died before we could tie ourselves to it
  layers = ["zygote"] if cfg["zygote"] else []
  root = os.geteuid() == 0
  flags = _CLONE_NEWNET | _CLONE_NEWPID | _CLONE_NEWIPC | _CLONE_NEWUTS
  flags |= _CLONE_NEWNS if root else _CLONE_NEWUSER
  if cfg["namespaces"] and libc.unshare(flags) == 0:
    layers.append("netns+pidns")
    if root:
      _check(ctypes, libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "mount private")
      opts = f"size={cfg['disk_mb']}m,mode=0700,uid={cfg['uid']},gid={cfg['uid']}".encode()
      ret = libc.mount(b"tmpfs", cfg["workdir"].encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, opts)
      _check(ctypes, ret, "mount tmpfs")
      layers.append(f"tmpfs-{cfg['disk_mb']}m")
  elif cfg["namespaces"]:
    layers.append("no-namespaces")
  alive_r, alive_w = os.pipe()  # EOF in the child: the bootstrap is gone
  ready_r, ready_w = os.pipe()  # the child's one byte: the program starts now
  pid = os.fork()
  if pid == 0:
    os.close(alive_w)
    os.close(ready_r)
    cfg["ready_fd"] = ready_w
    _child(cfg, ctypes, libc, layers, alive_r, harness)
  os.close(alive_r)
  os.close(ready_w)
  os.close(cfg["status_fd"])  # the child tells the parent itself, before any program output
  # Setup: the child confines itself, then writes b"R" and closes its end; EOF means it died.
  if not _readable(ready_r, cfg["setup_s"]):
    os.kill(pid, signal.SIGKILL)  # safe: not reaped yet, so the pid cannot have been reused
    os.waitpid(pid, 0)
    fail_setup(f"the confined child was not ready after {cfg['setup_s']:g} s")
  if os.read(ready_r, 1) != b"R":
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != EXIT_SETUP:  # the child's own fail_setup already said why
      fail_setup(f"the confined child died during setup (exit status {code})")
    os._exit(EXIT_SETUP)
  timed_out = not _exits_within(pid, cfg["timeout_s"], cfg["wall_s"])
  if timed_out:
    os.kill(pid, signal.SIGKILL)  # it may have exited just now: killing a zombie is harmless
  _, status, usage = os.wait4(pid, 0)
  cpu = usage.ru_utime + usage.ru_stime
  # The CPU limit's kill: rusage can read a few percent under the time the kernel's limit counts
  # (0.94 s at a 1 s limit on a loaded host).
  if timed_out or (os.WIFSIGNALED(status) and cpu >= cfg["cpu_s"] - _CPU_LIMIT_SLACK_S):
    os._exit(EXIT_TIMEOUT)
  code = os.waitstatus_to_exitcode(status) % 256
  os._exit(EXIT_RESERVED if code in (EXIT_SETUP, EXIT_TIMEOUT) else code)


def _readable(fd: int, timeout_s: float) -> bool:
  poller = select.poll()
  poller.register(fd, select.POLLIN)
  return bool(poller.poll(timeout_s * 1000.0))  # PEP 475: EINTR retries with the time left


def _exits_within(pid: int, timeout_s: float, wall_s: float) -> bool:
  """Whether child `pid` exits before its own time reaches `timeout_s`; leaves it unreaped.

  Its own time is the wall time less the time it sat runnable waiting for a CPU (the kernel's
  run delay, /proc/<pid>/schedstat): on a loaded host a benign program is not timed out for the
  host's load, while one that loops or sleeps still is. `wall_s` bounds the wall time whatever
  the delays. Where the run delay cannot be read the limit is plain wall time.

  The child's run delay may be of its own making: processes it forked that keep the CPUs busy
  (CPU burners beside a main loop that waits its turn). So its own time is also at least the
  CPU time of its whole process tree, its processes' CPU seconds added up (`_TreeCpu`), and at
  most the wall time: for a single process the tree's time is at most the time it ran, so it
  changes nothing, and a program computing in parallel is held to the wall time, as under a
  plain wall-clock limit. (Divided by the CPU count instead, the tree's time let burners on a
  loaded host with many CPUs still reach the wall backstop.)
  """
  wait = _exit_waiter(pid)
  # Another pid namespace's /proc would name some other process: read it only if it is ours.
  ours = _parent_of(pid) == os.getpid()
  delay, tree = _RunDelay(pid, ours), _TreeCpu(pid, ours)
  start = time.monotonic()
  own = elapsed = 0.0
  while True:
    left = min(timeout_s - own, wall_s - elapsed)
    if left <= _MIN_WAIT_S:
      return False
    if wait(left):
      return True
    elapsed = time.monotonic() - start
    own = min(elapsed, max(elapsed - delay.since_start(), tree.since_start()))


class _RunDelay:
  """Seconds child `pid` has waited for a CPU since construction (0.0 where not readable or not
  `ours`)."""

  def __init__(self, pid: int, ours: bool):
    self._path = f"/proc/{pid}/schedstat"
    self._start = self._read() if ours else None

  def _read(self) -> float | None:
    try:
      with open(self._path, "rb") as f:
        return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
      return None

  def since_start(self) -> float:
    now = None if self._start is None else self._read()
    return 0.0 if now is None else max(0.0, now - self._start)


class _TreeCpu:
  """CPU seconds child `pid` and every process under it have used since construction, added
  up (0.0 where /proc cannot be read or is not `ours`).

  Read at construction (the baseline: the child alone, ~20 us) and then only when the time
  limit would otherwise have been reached, so a program that finishes in time never pays for a
  walk over its processes. Live descendants are found through
  /proc/<pid>/task/<tid>/children (orphans re-parent to the child, pid 1 of its namespace);
  reaped ones are in their parent's cutime/cstime. A process that exits between two reads is
  missed, never counted twice: the count errs towards more time for the program.
  """

  _MAX_PROCESSES = 4096  # a fork bomb without RLIMIT_NPROC (not root) bounds the walk

  def __init__(self, pid: int, ours: bool):
    self._pid = pid
    self._tick = os.sysconf("SC_CLK_TCK")
    self._start = self._read() if ours else None

  def _read(self) -> float:
    ticks, todo, seen = 0, [self._pid], set()
    while todo and len(seen) < self._MAX_PROCESSES:
      pid = todo.pop()
      if pid in seen:
        continue
      seen.add(pid)
      fields = _stat_fields(pid)
      if fields is None:
        continue
      ticks += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
      todo.extend(_children(pid))
    return ticks / self._tick

  def since_start(self) -> float:
    return 0.0 if self._start is None else max(0.0, self._read() - self._start)


def _stat_fields(pid: int) -> list | None:
  """/proc/<pid>/stat's fields after the command name (field 3, the state, is index 0)."""
  try:
    with open(f"/proc/{pid}/stat", "rb") as f:
      return f.read().rpartition(b")")[2].split()
  except OSError:
    return None


def _children(pid: int) -> list:
  out = []
  try:
    tids = os.listdir(f"/proc/{pid}/task")
  except OSError:
    return out
  for tid in tids:
    try:
      with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
        out.extend(int(c) for c in f.read().split())
    except (OSError, ValueError):
      continue
  return out


def _parent_of(pid: int) -> int | None:
  fields = _stat_fields(pid)
  try:
    return None if fields is None else int(fields[1])
  except (ValueError, IndexError):
    return None


def _exit_waiter(pid: int):
  """wait(t): whether child `pid` has exited within t seconds (a pidfd, else polling)."""
  try:
    pidfd = os.pidfd_open(pid)  # closed when the bootstrap exits, a moment after the verdict
  except (AttributeError, OSError):
    pidfd = -1
  if pidfd >= 0:
    return lambda t: _readable(pidfd, t)

  def poll(t: float) -> bool:
    deadline = time.monotonic() + t
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
      if time.monotonic() >= deadline:
        return False
      time.sleep(_POLL_S)
    return True

  return poll


def _child(cfg: dict, ctypes, libc, layers: list, alive_r: int, harness) -> None:
  """Limits, uid drop, Landlock; then the harness. Never returns."""
  os.chdir(cfg["workdir"])
  std_fds = [os.open(p, os.O_RDONLY | os.O_DIRECTORY) for p in cfg["std_paths"]]
  rs, abi = _landlock_ruleset(ctypes, libc, cfg)
  mb = 1024 * 1024
  # Linux RLIMIT_* numbers (asm-generic): AS 9, CPU 0, FSIZE 1, NOFILE 7, CORE 4, NPROC 6.
  limits = [(9, cfg["memory_mb"] * mb), (0, cfg["cpu_s"]), (1, cfg["fsize_mb"] * mb)]
  limits += [(7, cfg["nofile"]), (4, 0)]
  if cfg["uid"] is not None:  # RLIMIT_NPROC counts per real uid: only meaningful once dropped
    limits.append((6, cfg["nproc"]))
  for which, value in limits:
    _setrlimit(ctypes, libc, which, value)
  if cfg["uid"] is not None:
    os.setgroups([])
    os.setresgid(cfg["uid"], cfg["uid"], cfg["uid"])
    os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
    layers.append("uid")
  # The uid change cleared the parent-death signal; re-arm it, then check the bootstrap is alive.
  libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
  os.set_blocking(alive_r, False)
  try:
    if os.read(alive_r, 1) == b"":  # EOF: the bootstrap is already gone
      os._exit(EXIT_SETUP)
  except BlockingIOError:
    pass
  os.close(alive_r)
  layers.append(_landlock_restrict(ctypes, libc, rs, abi))
  # Stdlib dirs may sit under a root-only home (pyenv in /root): reach them via fds opened as root.
  sys.path[:] = [f"/proc/self/fd/{fd}" for fd in std_fds]
  sys.path_importer_cache.clear()
  del ctypes, libc
  os.write(cfg["err_fd"], f"[sandbox layers: {' '.join(layers)}]\n".encode())
  harness(cfg)
