"""Hostile programs against the code sandbox: none may be rewarded, leak, linger or leave files.

Every program below tries to pass `add` tests without a correct `add`, or to hurt the host.
They run through the real reward pool (2 workers, 2 s limit each; sandboxes forked from each
worker's zygote) and directly via run_tests, one-shot and zygote, where the captured output must
be inspected for leaks.
"""

import os
import secrets
import socket
import time

import pytest

from score_jax.rewards import code_reward, pool
from score_jax.rewards.outcome import Outcome

TESTS = ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"]
EXIT = "\nimport os\nos._exit(0)\n"
HOSTILE = {
  # Leaving before the tests.
  "sys_exit": "import sys\nsys.exit(0)",
  "os_exit": "import os\nos._exit(0)",
  "exit_builtin": "exit(0)",
  "raise_systemexit": "raise SystemExit(0)",
  "atexit_sys_exit": "import atexit, sys\natexit.register(lambda: sys.exit(0))\nsys.exit(0)",
  "atexit_os_exit": "import atexit, os\natexit.register(lambda: os._exit(0))\nraise ValueError",
  "exit_in_tests": "def add(a, b):\n  import os\n  os._exit(0)",
  # Signalling the parent or everyone.
  "kill_parent": "import os\nos.kill(os.getppid(), 9)\ndef add(a, b): return 0",
  "kill_pid_range": "import os\nfor p in range(1, 2000):\n"
  "  try: os.kill(p, 9)\n  except OSError: pass",
  "killpg_own": "import os\nos.killpg(os.getpgid(0), 9)",
  "kill_minus_one": "import os\nos.kill(-1, 9)",
  # Resource bombs.
  "fork_bomb": "import os\nwhile True:\n  try: os.fork()\n  except OSError: pass",
  "thread_bomb": "import threading, time\nwhile True:\n"
  "  threading.Thread(target=time.sleep, args=(60,)).start()",
  "memory_bomb": "x = []\nwhile True: x.append(bytearray(10**7))",
  "memory_one_shot": "x = bytearray(10**11)\ndef add(a, b): return a + b",
  "disk_one_file": "with open('big', 'wb') as f:\n  while True: f.write(b'x' * 10**6)",
  "disk_many_files": "i = 0\nwhile True:\n  open(f'f{i}', 'wb').write(b'x' * 10**6)\n  i += 1",
  "stdout_flood": "import sys\nwhile True: sys.stdout.write('x' * 65536)",
  "stderr_flood": "import os\nwhile True: os.write(2, b'y' * 65536)",
  "infinite_loop": "while True: pass",
  "sleep_forever": "import time\ntime.sleep(10**6)",
  "ignore_sigterm": "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
  "while True: pass",
  "deep_recursion": "import sys\nsys.setrecursionlimit(10**7)\ndef r(n): return r(n + 1)\nr(0)",
  "setsid_orphan": "import os, time\nif os.fork() == 0:\n  os.setsid()\n"
  "  time.sleep(300)\nos._exit(0)",
  "child_holds_stdout": "import os, time\nif os.fork() == 0:\n  time.sleep(300)\nos._exit(0)",
  # Lying objects.
  "eq_always_true": "class A:\n  def __eq__(self, o): return True\ndef add(a, b): return A()",
  "ne_always_false": "class A:\n  __eq__ = lambda s, o: True\n  __ne__ = lambda s, o: False\n"
  "  __hash__ = object.__hash__\ndef add(a, b): return A()",
  "int_subclass": "class I(int):\n  __eq__ = lambda s, o: True\n  __hash__ = int.__hash__\n"
  "def add(a, b): return I(7)",
  "str_subclass": "class S(str):\n  __eq__ = lambda s, o: True\n  __hash__ = str.__hash__\n"
  "def add(a, b): return S('no')",
  "list_subclass": "class L(list):\n  __eq__ = lambda s, o: True\ndef add(a, b): return L()",
  "fake_class_attr": "class A:\n  __class__ = int\n  __eq__ = lambda s, o: True\n"
  "def add(a, b): return A()",
  # Patching builtins and modules.
  "patch_isinstance": "import builtins\nbuiltins.isinstance = lambda *a: True\n"
  "def add(a, b): return 0",
  "patch_type": "import builtins\nbuiltins.type = lambda *a: int\ndef add(a, b): return 0",
  "patch_print": "import builtins\nbuiltins.print = lambda *a, **k: None\ndef add(a, b): return 0",
  "patch_assertionerror": "import builtins\nclass E(Exception): pass\n"
  "builtins.AssertionError = E\ndef add(a, b): return 0",
  "patch_import": "import builtins\nreal = builtins.__import__\n"
  "builtins.__import__ = lambda *a, **k: real('os')\ndef add(a, b): return 0",
  "thread_repatches": "import threading, builtins\ndef spin():\n  while True: builtins.len = len\n"
  "threading.Thread(target=spin, daemon=True).start()\ndef add(a, b): return 0",
  "settrace_skip": "import sys\ndef tr(f, e, a): return tr\nsys.settrace(tr)\n"
  "def add(a, b): return 0",
  # Going after the marker.
  "marker_guesses": "import secrets\nfor _ in range(2000): print(secrets.token_hex(16))" + EXIT,
  "read_cmdline": "print(open('/proc/self/cmdline').read())" + EXIT,
  "read_parent_cmdline": "import os\nprint(open(f'/proc/{os.getppid()}/cmdline').read())" + EXIT,
  "read_harness": "import glob\n"
  "for p in glob.glob('/work/**/sandbox_harness.py', recursive=True):\n"
  "  print(open(p).read())" + EXIT,
  "read_stdin": "import sys, os\nprint(sys.stdin.read(), os.read(0, 100000))" + EXIT,
  "close_fd1_then_write": "import os\nos.close(1)\nfd = os.open('out', os.O_WRONLY | os.O_CREAT)\n"
  "os.write(1, b'\\n' + b'0' * 32 + b'\\n')" + EXIT,
  "frames_via_traceback": "try:\n  raise ValueError\nexcept ValueError as e:\n"
  "  print(e.__traceback__.tb_frame.f_back.f_locals)" + EXIT,
  "sys_getframe": "import sys\nprint(sys._getframe(1).f_locals)" + EXIT,
  "gc_scan": "import gc\nprint([o for o in gc.get_objects() if isinstance(o, dict)])" + EXIT,
  "ctypes_peek": "import ctypes\nprint(ctypes.string_at(id(1), 64))" + EXIT,
  "replace_code": "def add(a, b): return a + b\nimport sys\n"
  "sys.modules['__main__'].add.__code__ = (lambda a, b: 0).__code__",
}


def _no_sandbox_processes(owners: list[int]) -> bool:
  # Only our own sandboxes: other users of this machine may be running theirs.
  deadline = time.monotonic() + 3.0
  while code_reward.sandbox_processes(owners) and time.monotonic() < deadline:
    time.sleep(0.05)
  return not code_reward.sandbox_processes(owners)


@pytest.fixture(scope="module")
def hostile_results():
  items = [("code", (src, TESTS)) for src in HOSTILE.values()]
  items.append(("code", ("def add(a, b):\n  return a + b", TESTS)))  # the control
  with pool.RewardPool(2, code_timeout_s=2.0, code_kwargs={"memory_mb": 256}) as p:
    workers = p.pids()
    start = time.monotonic()
    result = p.score(items)
    elapsed = time.monotonic() - start
    workers += p.pids()
    root = p.work_root
  return result, elapsed, (workers, root)


@pytest.fixture(params=["one-shot", "zygote"])
def launch(request, tmp_path):
  """run_tests keyword arguments for one launch mode; checks that no work dir is left behind."""
  work = tmp_path / "work"
  work.mkdir()
  kw = {"timeout_s": 5, "work_root": str(work)}
  if request.param == "one-shot":
    yield kw
  else:
    with code_reward.Zygote() as z:  # started on first use, i.e. after the test's setenv
      yield {**kw, "zygote": z}
  assert not os.listdir(work)


def test_suite_is_large_enough():
  assert len(HOSTILE) >= 40


@pytest.mark.parametrize("index,name", list(enumerate(HOSTILE)))
def test_hostile_program_is_not_rewarded(hostile_results, index, name):
  result, _, _ = hostile_results
  assert result.outcomes[index] != Outcome.CORRECT, (name, result.details[index])
  assert result.rewards[index] == 0.0


def test_control_passes_and_host_stays_responsive(hostile_results):
  result, elapsed, _ = hostile_results
  assert result.outcomes[-1] == Outcome.CORRECT, result.details[-1]
  assert result.counts["error"] == 0, [d for d in result.details if "worker died" in d]
  assert elapsed < 60.0  # ~10 programs run to their 2 s limit, 2 at a time
  t0 = time.monotonic()
  assert code_reward.run_tests("x = 1", "assert x == 1").status == "passed"
  assert time.monotonic() - t0 < 5.0


def test_nothing_lingers(hostile_results):
  _, _, (workers, root) = hostile_results
  assert _no_sandbox_processes(workers), code_reward.sandbox_processes(workers)
  assert not os.path.exists(root)


def test_environment_secrets_do_not_reach_the_program(monkeypatch, launch):
  secret = "fake-secret-" + secrets.token_hex(8)
  monkeypatch.setenv("SCORE_FAKE_SECRET", secret)
  prog = "import os\nprint(dict(os.environ))\nprint(open('/proc/self/environ').read())"
  r = code_reward.run_tests(prog, "", **launch)
  assert secret not in r.stdout + r.stderr
  assert "SCORE_FAKE_SECRET" not in r.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="root-owned files are only protected from root")
def test_root_only_file_is_unreadable(tmp_path, launch):
  secret = "root-secret-" + secrets.token_hex(8)
  path = tmp_path / "secret.txt"
  path.write_text(secret)
  os.chmod(path, 0o600)
  for prog in [f"print(open({str(path)!r}).read())", "print(open('/etc/shadow').read())"]:
    r = code_reward.run_tests(prog + EXIT, "", **launch)
    assert secret not in r.stdout and r.status == "failed", r
    assert "PermissionError" in r.detail, r.detail


def test_writes_outside_the_work_dir_fail(launch):
  token = secrets.token_hex(6)
  targets = [f"/tmp/score_hostile_{token}", f"/dev/shm/score_hostile_{token}",
             f"/var/tmp/score_hostile_{token}",
             os.path.abspath(f"score_hostile_{token}")]  # fmt: skip
  prog = "".join(f"try:\n  open({t!r}, 'w').write('x')\nexcept OSError as e:\n  print(e)\n"
                 for t in targets)  # fmt: skip
  r = code_reward.run_tests(prog, "", **launch)
  assert r.stdout.count("Permission denied") == len(targets), r.stdout
  assert not any(os.path.exists(t) for t in targets)


def test_network_is_unreachable(launch):
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen(1)
  server.setblocking(False)
  port = server.getsockname()[1]
  prog = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
          "s.sendall(b'leak')\nprint('connected')")  # fmt: skip
  r = code_reward.run_tests(prog, "", **launch)
  assert "connected" not in r.stdout and r.status == "failed", r
  with pytest.raises(BlockingIOError):
    server.accept()
  server.close()
