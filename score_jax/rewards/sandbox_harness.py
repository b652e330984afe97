"""Child side of the code sandbox: confine this interpreter, run one program and its tests.

`main()` runs in a fresh `python -I -S -c <loader>` started by `code_reward.run_tests`, or in a
fork of a pre-warmed `sandbox_zygote` (same steps from here on). The parent writes one marshal
blob (program, rewritten tests, limits, environment, the run's secret end marker) to our stdin and
closes it. Standard library only: imported outside the package, before any confinement.
Layers 1 and 2 live in `sandbox_bootstrap`, which hands the confined child over to this module.

Layers, in order (each a no-op with a note when the kernel or the uid does not allow it):
1. bootstrap (root, outside): parent-death signal; new mount/net/pid/ipc/uts namespaces; a
   size-capped tmpfs on the work dir; fork. The bootstrap enforces the time limit, reaps
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

Timing: the time and CPU limits are the program's, not the sandbox's. Just before the
program's first bytecode the confined child writes `S` on the parent's status pipe
(`cfg["status_fd"]`; so it precedes any output of the program) and `R` on a private pipe to the
bootstrap, and closes both: the program can reach neither. The bootstrap starts the clock on `R`;
the clock counts the child's own time (wall time less its run delay, the time it sat runnable
waiting for a CPU, from /proc/<pid>/schedstat; but at least the CPU time of all its processes
together, up to the wall time, so that processes it forked cannot stretch it), bounded by
`cfg["wall_s"]` of wall time. Hence:
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
import sys

import sandbox_bootstrap as bootstrap
from sandbox_bootstrap import (
  EXIT_ASSERT,
  EXIT_EXITED,
  EXIT_PROGRAM,
  EXIT_TAMPER,
  EXIT_TESTS,
)

# Audit events the program may not raise once armed (PEP 578 hooks cannot be removed).
_BLOCKED = frozenset({
  "sys._getframe", "sys._current_frames", "sys._current_exceptions", "sys.settrace",
  "sys.setprofile", "sys.addaudithook", "gc.get_objects", "gc.get_referrers",
  "gc.get_referents",
})  # fmt: skip
# Attributes that lead to live frames, hence to the harness's locals (the marker among them).
_FRAME_ATTRS = frozenset({"tb_frame", "f_back", "gi_frame", "cr_frame", "ag_frame"})
# The rewritten asserts' comparison operators (by ast class name), applied to normalised values.
_COMPARISONS = {
  "Eq": lambda a, b: a == b, "NotEq": lambda a, b: not a == b, "Lt": lambda a, b: a < b,
  "LtE": lambda a, b: a <= b, "Gt": lambda a, b: a > b, "GtE": lambda a, b: a >= b,
  "In": lambda a, b: a in b, "NotIn": lambda a, b: a not in b,
}  # fmt: skip


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

  hook = _audit_hook(type_, std_prefixes)
  restore_modules = _restore_modules  # bound now: the program runs before it is called
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
  restore_modules(modules, snapshot, missing=_sbx)
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


def _audit_hook(type_, std_prefixes: tuple[str, ...]):
  """The PEP 578 hook armed just before the program runs (it can never be removed)."""

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

  return hook


def _restore_modules(modules: dict, snapshot: dict, missing: object) -> None:
  """Puts sys.modules and every snapshotted module dict back as they were before the program.

  `missing` is an object no module holds, so a key the program deleted is always restored.
  """
  for name in list(modules):
    if name not in snapshot:
      del modules[name]
  for name, (mod, attrs) in snapshot.items():
    modules[name] = mod
    current = mod.__dict__
    for key in [k for k in current if k not in attrs]:
      del current[key]
    for key, value in attrs.items():
      if current.get(key, missing) is not value:
        current[key] = value


def _strict_helpers(type_, pristine: dict) -> dict:
  """Assert helpers that compare builtin VALUES, so overridden __eq__/__bool__ cannot pass."""
  scalars = (int, float, complex, str, bytes, bool, type_(None), type_(...))
  to_scalar = {int: int.__index__, float: float.__float__, complex: complex.__complex__,
               str: str.__str__, bytes: bytes.__bytes__}  # fmt: skip
  issub, ident, len_ = pristine["issubclass"], pristine["id"], pristine["len"]
  ops = _COMPARISONS  # bound now, like every helper here, before the program runs

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
  for name in (__name__, "sandbox_bootstrap"):  # keep our globals out of the program's reach
    sys.modules.pop(name, None)
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
    bootstrap.bootstrap(cfg, _harness)
  except BaseException as e:  # noqa: BLE001 - any failure before the program runs is ours
    bootstrap.fail_setup(f"{type(e).__name__}: {e}")
