"""Child side of the code sandbox: confine this interpreter, run one program and its tests.

`main()` runs in a fresh `python -I -S -c <loader>` started by `code_reward.run_tests`, or in a
fork of a pre-warmed `sandbox_zygote` (same steps from here on). The parent writes one marshal
blob (program, rewritten tests, limits, environment, the run's secret end marker) to our stdin and
closes it. Standard library only: imported outside the package, before any confinement.

Layers, in order (each a no-op with a note when the kernel or the uid does not allow it):
1. bootstrap (root, outside): parent-death signal; new mount/net/pid/ipc/uts namespaces; a
   size-capped tmpfs on the work dir; fork. The bootstrap enforces the wall-clock limit, reaps
   the child and relays its status (124 when a time limit killed it).
2. child (pid 1 of the new pid namespace, so every process the program starts dies with it):
   rlimits; drop to the run's unprivileged uid/gid; parent-death signal; no_new_privs; Landlock
   (read-only system/stdlib paths, read-write work dir only, no TCP, no signals or abstract
   sockets outside the sandbox); stdlib reached through pre-opened directory fds.
3. harness: captures the builtins it needs, snapshots module state, arms an audit hook that
   blocks frame/gc/ctypes/trace introspection, runs the program, restores the modules, runs the
   setup and tests in a separate namespace with a pristine builtins dict and type-strict
   comparisons, then writes the marker to a private dup of stdout and `_exit(0)`s.

Exit codes: 0 passed (marker written); 1 an assert failed; 2 the program raised; 3 the program
exited before the tests; 4 the setup or tests raised; 5 tampering detected; 6 the program exited
with a status reserved for the checker; 97 sandbox setup failed (the checker's fault:
Outcome.ERROR); 124 a time limit killed the run.

Timing: the wall-clock and CPU limits are the program's, not the sandbox's. Just before the
program's first bytecode the confined child writes `S` on the parent's status pipe
(`cfg["status_fd"]`; so it precedes any output of the program) and `R` on a private pipe to the
bootstrap, and closes both: the program can reach neither. The bootstrap starts the wall clock on
`R`. Hence:
- a run whose child never reported ready is a setup failure (97), whatever killed it, and the
  parent, which saw no `S`, calls it an ERROR: the program never ran;
- after `S` the program's own exit status is relayed, except that 97 and 124 (which the program
  could `os._exit` with) become 6, so only the bootstrap can say "setup failed" or "timeout";
- the bootstrap waits on a pidfd with a timeout instead of a SIGALRM handler, so no handler can
  run between the child's exit and its reaping (the old race: a late alarm's `kill` of a reaped
  pid raised ProcessLookupError, which read as a setup failure).
"""

import _signal as signal  # the `signal` module costs ~9 ms of enum imports per run
import marshal
import os
import resource  # noqa: F401 - os.wait4 imports it for its rusage: import it before any clock
import select
import sys
import time

EXIT_ASSERT, EXIT_PROGRAM, EXIT_EXITED, EXIT_TESTS, EXIT_TAMPER, EXIT_RESERVED = 1, 2, 3, 4, 5, 6
EXIT_SETUP, EXIT_TIMEOUT = 97, 124
_POLL_S = 0.005  # exit polling interval where pidfds are unavailable (Linux < 5.3)

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_PRIVATE = 2, 4, 0x4000, 0x40000
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38
_NR_LANDLOCK = (444, 445, 446)  # create_ruleset, add_rule, restrict_self (x86_64 and arm64)
_LL_READ = 1 | 4 | 8  # EXECUTE | READ_FILE | READ_DIR
_LL_FILE = 2 | 4 | (1 << 14)  # WRITE_FILE | READ_FILE | TRUNCATE (TRUNCATE from ABI 3)

# Audit events the program may not raise once armed (PEP 578 hooks cannot be removed).
_BLOCKED = frozenset({
  "sys._getframe", "sys._current_frames", "sys._current_exceptions", "sys.settrace",
  "sys.setprofile", "sys.addaudithook", "gc.get_objects", "gc.get_referrers",
  "gc.get_referents",
})  # fmt: skip
# Attributes that lead to live frames, hence to the harness's locals (the marker among them).
_FRAME_ATTRS = frozenset({"tb_frame", "f_back", "gi_frame", "cr_frame", "ag_frame"})


_LIBC = []


def _fail_setup(msg: str) -> None:
  os.write(2, f"sandbox setup failed: {msg}\n".encode())
  os._exit(EXIT_SETUP)


def _libc():
  """A few libc calls through `_ctypes` directly: importing `ctypes` costs ~5 ms per run."""
  if _LIBC:
    return _LIBC[0]  # built once by the zygote, inherited by every run it forks
  import _ctypes

  class C:  # the subset of the ctypes namespace used here
    Structure, byref, get_errno = _ctypes.Structure, _ctypes.byref, _ctypes.get_errno

  for name, code in [("c_long", "l"), ("c_size_t", "L"), ("c_uint32", "I"), ("c_int32", "i"),
                     ("c_uint64", "Q"), ("c_char_p", "z")]:  # fmt: skip
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
    _fail_setup(f"{what}: {os.strerror(ctypes.get_errno())}")


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


def _bootstrap(cfg: dict) -> None:
  """Namespaces and the tmpfs (as root), then forks the confined child and waits for it."""
  ctypes, libc = _libc()
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
    _child(cfg, ctypes, libc, layers, alive_r)
  os.close(alive_r)
  os.close(ready_w)
  os.close(cfg["status_fd"])  # the child tells the parent itself, before any program output
  # Setup: the child confines itself, then writes b"R" and closes its end; EOF means it died.
  if not _readable(ready_r, cfg["setup_s"]):
    os.kill(pid, signal.SIGKILL)  # safe: not reaped yet, so the pid cannot have been reused
    os.waitpid(pid, 0)
    _fail_setup(f"the confined child was not ready after {cfg['setup_s']:g} s")
  if os.read(ready_r, 1) != b"R":
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != EXIT_SETUP:  # the child's own _fail_setup already said why
      _fail_setup(f"the confined child died during setup (exit status {code})")
    os._exit(EXIT_SETUP)
  timed_out = not _exits_within(pid, cfg["timeout_s"])
  if timed_out:
    os.kill(pid, signal.SIGKILL)  # it may have exited just now: killing a zombie is harmless
  _, status, usage = os.wait4(pid, 0)
  cpu = usage.ru_utime + usage.ru_stime
  if timed_out or (os.WIFSIGNALED(status) and cpu >= cfg["cpu_s"] - 0.05):
    os._exit(EXIT_TIMEOUT)
  code = os.waitstatus_to_exitcode(status) % 256
  os._exit(EXIT_RESERVED if code in (EXIT_SETUP, EXIT_TIMEOUT) else code)


def _readable(fd: int, timeout_s: float) -> bool:
  poller = select.poll()
  poller.register(fd, select.POLLIN)
  return bool(poller.poll(timeout_s * 1000.0))  # PEP 475: EINTR retries with the time left


def _exits_within(pid: int, timeout_s: float) -> bool:
  """Whether child `pid` exits within `timeout_s`; leaves it unreaped either way."""
  try:
    pidfd = os.pidfd_open(pid)
  except (AttributeError, OSError):
    pidfd = -1
  if pidfd >= 0:
    exited = _readable(pidfd, timeout_s)
    os.close(pidfd)
    return exited
  deadline = time.monotonic() + timeout_s
  while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
    if time.monotonic() >= deadline:
      return False
    time.sleep(_POLL_S)
  return True


def _child(cfg: dict, ctypes, libc, layers: list, alive_r: int) -> None:
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
  _harness(cfg)


def _harness(cfg: dict) -> None:
  """Runs the program, then the tests; writes the marker only if every assert ran and held."""
  import builtins
  import types  # noqa: F401 - its import reads a traceback's tb_frame, which the hook forbids

  out_fd, err_fd = os.dup(1), cfg["err_fd"]
  write, exit_, type_ = os.write, os._exit, type
  modules, pristine = sys.modules, dict(builtins.__dict__)

  def no_signals(*args, **kwargs):
    raise PermissionError("sandbox: signal handlers are not available")

  # A handler receives the interrupted frame, which may be ours: no handlers for the program.
  signal.signal = no_signals
  snapshot = {n: (m, dict(m.__dict__)) for n, m in list(modules.items()) if hasattr(m, "__dict__")}
  marker = cfg.pop("marker").encode()
  # Tests and setup arrive compiled (asserts rewritten by the parent); the program as source.
  program, setup_code, tests_code = cfg.pop("program"), cfg.pop("setup"), cfg.pop("tests")
  _sbx = _strict_helpers(type_, pristine)
  import _thread

  thread_count = _thread._count
  std_prefixes = tuple(p + "/" for p in sys.path)

  def report(code: int, msg: str) -> None:
    write(err_fd, msg.encode("utf-8", "replace")[-4000:] + b"\n")
    exit_(code)

  def describe(e: BaseException) -> str:
    tb, line = e.__traceback__, "?"
    while tb is not None:  # tb_lineno/tb_next are not audited; tb_frame is
      line, tb = tb.tb_lineno, tb.tb_next
    try:
      return f"line {line}: {type_(e).__name__}: {e}"
    except BaseException:  # a hostile __str__ must not turn a failure into a harness crash
      return f"line {line}: {type_(e).__name__}"

  def hook(event, args):
    # The exception types mimic "not available", which stdlib callers already handle
    # (namedtuple and typing fall back when sys._getframe raises ValueError).
    if event == "object.__getattr__" and args[1] in _FRAME_ATTRS:
      raise AttributeError(f"sandbox: reading {args[1]} is not allowed")
    if event == "sys._getframe":
      raise ValueError("sandbox: sys._getframe is not allowed")
    if event in _BLOCKED or event.startswith("ctypes."):
      raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "object.__setattr__" and args[1] == "__code__":
      raise RuntimeError("sandbox: replacing __code__ is not allowed")
    if event == "open":  # Landlock already denies /proc; this layer also covers no-Landlock
      path = args[0].decode("utf-8", "replace") if type_(args[0]) is bytes else str(args[0])
      if path.startswith("/proc") and not path.startswith(std_prefixes):
        raise PermissionError(f"sandbox: {path} is not readable")

  main = type_(sys)("__main__")
  modules["__main__"] = main
  program_ns = main.__dict__
  program_ns["__builtins__"] = builtins
  # Setup is over: the program's time starts now. `S` to the parent precedes any output of the
  # program; closed, neither pipe is within the program's reach.
  for fd, byte in ((cfg.pop("status_fd"), b"S"), (cfg.pop("ready_fd"), b"R")):
    write(fd, byte)
    os.close(fd)
  sys.addaudithook(hook)
  try:
    exec(compile(program, "<program>", "exec"), program_ns)
  except SystemExit:
    report(EXIT_EXITED, "program exited before the tests ran")
  except BaseException as e:  # the program's own error: a failed attempt, never a pass
    report(EXIT_PROGRAM, "program raised: " + describe(e))
  # Undo module patches (builtins.isinstance = ..., math.isclose = ...) before the tests.
  for name in list(modules):
    if name not in snapshot:
      del modules[name]
  for name, (mod, attrs) in snapshot.items():
    modules[name] = mod
    current = mod.__dict__
    for key in [k for k in current if k not in attrs]:
      del current[key]
    for key, value in attrs.items():
      if current.get(key, _sbx) is not value:
        current[key] = value
  test_ns = dict(program_ns)
  test_ns.update(_sbx, __builtins__=dict(pristine), __name__="__tests__")
  try:
    exec(setup_code, test_ns)
    exec(tests_code, test_ns)
  except _sbx["_sbx_Failure"] as e:
    report(EXIT_ASSERT, f"assertion failed: {e.args[0]}")
  except SystemExit:
    report(EXIT_EXITED, "exit() called during the tests")
  except BaseException as e:
    report(EXIT_TESTS, "tests raised: " + describe(e))
  if thread_count() != 0:
    report(EXIT_TAMPER, "program left threads running")
  for stream in (sys.__stdout__, sys.__stderr__):
    if stream is not None:
      stream.flush()
  write(out_fd, b"\n" + marker + b"\n")
  exit_(0)


def _strict_helpers(type_, pristine: dict) -> dict:
  """Assert helpers that compare builtin VALUES, so overridden __eq__/__bool__ cannot pass."""
  scalars = (int, float, complex, str, bytes, bool, type_(None), type_(...))
  to_scalar = {int: int.__index__, float: float.__float__, complex: complex.__complex__,
               str: str.__str__, bytes: bytes.__bytes__}  # fmt: skip
  issub, ident, len_ = pristine["issubclass"], pristine["id"], pristine["len"]

  class Failure(BaseException):
    pass

  class Opaque:
    """Stands for a non-builtin object: equal only to itself, unordered, truthless."""

    __slots__ = ("obj",)

    def __init__(self, obj):
      self.obj = obj

    def __eq__(self, other):
      return type_(other) is Opaque and other.obj is self.obj

    def __hash__(self):
      return ident(self.obj)

  def norm(x, depth=0):
    t = type_(x)
    if t in scalars:
      return x
    if depth > 100:
      raise Failure("value nested deeper than 100 levels")
    if t is list or t is tuple:
      return t([norm(e, depth + 1) for e in x])
    if t is dict:
      return {norm(k, depth + 1): norm(v, depth + 1) for k, v in x.items()}
    if t is set or t is frozenset:
      return t(norm(e, depth + 1) for e in x)
    # Subclasses (bool cannot be subclassed): read the builtin value through the base type's own
    # slot, bypassing whatever the subclass overrides (Counter, namedtuple, numpy.float64 pass).
    for base, convert in to_scalar.items():
      if issub(t, base):
        return convert(x)
    if issub(t, dict):
      return {norm(k, depth + 1): norm(v, depth + 1) for k, v in dict.items(x)}
    for base in (list, tuple, set, frozenset):
      if issub(t, base):
        return base(norm(e, depth + 1) for e in base.__iter__(x))
    return Opaque(x)

  def truth(v):
    v = norm(v)
    if type_(v) is Opaque:
      raise Failure(f"truth value of a non-builtin {type_(v.obj).__name__} is not trusted")
    return True if v else False

  ops = {
    "Eq": lambda a, b: a == b, "NotEq": lambda a, b: not a == b, "Lt": lambda a, b: a < b,
    "LtE": lambda a, b: a <= b, "Gt": lambda a, b: a > b, "GtE": lambda a, b: a >= b,
    "In": lambda a, b: a in b, "NotIn": lambda a, b: a not in b,
  }  # fmt: skip

  def compare(operands, names):
    for i in range(len_(names)):
      a, b, name = operands[i], operands[i + 1], names[i]
      if name == "Is" or name == "IsNot":
        ok = (a is b) == (name == "Is")
      else:
        try:
          ok = ops[name](norm(a), norm(b))
        except TypeError:  # e.g. ordering an Opaque: not a pass
          ok = False
        ok = truth(ok)
      if not ok:
        return False
    return True

  def check(value, line):
    if not truth(value):
      raise Failure(f"test line {line}")

  return {"_sbx_compare": compare, "_sbx_truth": truth, "_sbx_assert": check,
          "_sbx_Failure": Failure}  # fmt: skip


def main() -> None:
  sys.modules.pop(__name__, None)  # keep this module's globals out of the program's reach
  chunks = []
  while chunk := os.read(0, 1 << 20):
    chunks.append(chunk)
  cfg = marshal.loads(b"".join(chunks))
  os.environ.clear()  # a zygote's fork inherits the zygote's environment, not the run's
  os.environ.update(cfg.pop("env"))
  devnull = os.open("/dev/null", os.O_RDONLY)
  os.dup2(devnull, 0)
  os.close(devnull)
  cfg["err_fd"] = os.dup(2)
  try:
    _bootstrap(cfg)
  except BaseException as e:  # noqa: BLE001 - any failure before the program runs is ours
    _fail_setup(f"{type(e).__name__}: {e}")
