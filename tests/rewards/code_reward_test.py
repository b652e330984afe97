"""run_tests: statuses, type-strict asserts, setup code, output capture, limits, bad input."""

import os

import pytest

from score_jax.rewards import assert_rewrite, code_reward
from score_jax.rewards.outcome import Outcome

ADD = "def add(a, b):\n  return a + b\n"


def _run(program, tests, **kw):
  kw.setdefault("timeout_s", 5.0)
  return code_reward.run_tests(program, tests, **kw)


def test_pass_fail_and_verdicts():
  ok = _run(ADD + "print('hello')", ["assert add(2, 3) == 5", "assert add(1, 1) != 3"])
  assert ok.status == "passed" and ok.verdict.outcome == Outcome.CORRECT, ok
  assert ok.stdout == "hello\n" and ok.returncode == 0
  bad = _run(ADD, "assert add(2, 2) == 5")
  assert bad.status == "failed" and bad.verdict.outcome == Outcome.WRONG
  assert bad.detail == "assertion failed: test line 1"


@pytest.mark.skipif(os.geteuid() != 0, reason="uid drop and namespaces need root here")
def test_all_layers_apply_as_root():
  r = _run(ADD, "")
  for layer in ("netns+pidns", "tmpfs", "uid", "landlock"):
    assert layer in r.layers, r.layers


def test_program_errors_fail_with_a_reason():
  assert "SyntaxError" in _run("def add(:", "assert add(1, 2) == 3").detail
  assert "ZeroDivisionError" in _run("1 / 0", "").detail
  assert "NameError" in _run("", "assert add(1, 2) == 3").detail


def test_timeout_is_its_own_outcome():
  r = _run("while True: pass", "", timeout_s=1.0)
  assert r.status == "timeout" and r.verdict.outcome == Outcome.TIMEOUT
  assert r.duration_s < 4.0


@pytest.mark.parametrize(
  "program,test",
  [
    ("def f(): return 5.0", "assert f() == 5"),  # numeric tower as in Python
    ("def f(): return True", "assert f() == 1"),
    ("import collections\ndef f(): return collections.Counter('aab')",
     "assert f() == {'a': 2, 'b': 1}"),
    ("import collections\ndef f(): return collections.OrderedDict(a=1)", "assert f() == {'a': 1}"),
    ("import collections\nP = collections.namedtuple('P', 'x y')\ndef f(): return P(1, 2)",
     "assert f() == (1, 2)"),
    ("class F(float): pass\ndef f(): return F(0.5)", "assert abs(f() - 0.5) < 1e-9"),
    ("def f(): return [1, (2, {3})]", "assert f() == [1, (2, {3})]"),
    ("def f(): return 'ab'", "assert f() in ['ab', 'cd'] and not f() == 'x'"),
    ("def f(): return None", "assert f() is None"),
    ("def f(): return [3, 1]", "assert sorted(f()) == [1, 3]\nassert len(f()) == 2"),
    ("class N:\n  def __init__(s, v): s.v = v", "n = N(3)\nassert n == n and n.v == 3"),
  ],
)  # fmt: skip
def test_strict_asserts_accept_honest_values(program, test):
  r = _run(program, test)
  assert r.status == "passed", r


@pytest.mark.parametrize(
  "program,test",
  [
    ("def f(): return [1, 2]", "assert f() == (1, 2)"),  # list vs tuple, as in Python
    ("class B:\n  def __bool__(s): return True\ndef f(): return B()", "assert f()"),
    ("class B:\n  def __bool__(s): return False\ndef f(): return B()", "assert not f()"),
    ("class L:\n  __lt__ = lambda s, o: True\n  __sub__ = lambda s, o: s\n  __abs__ = lambda s: s\n"
     "def f(): return L()", "assert abs(f() - 0.5) < 1e-9"),
    ("class E(str):\n  __eq__ = lambda s, o: True\n  __hash__ = str.__hash__\n"
     "def f(): return [E('')]", "assert f() == ['x']"),
    ("class E:\n  __eq__ = lambda s, o: True\ndef f(): return E()", "assert f() in [1, 2]"),
  ],
)  # fmt: skip
def test_strict_asserts_reject_lying_values(program, test):
  r = _run(program, test)
  assert r.status == "failed", r


def test_setup_code_runs_after_program_before_tests():
  program = "class Node:\n  def __init__(self, v): self.v = v\ndef val(n): return n.v\n"
  r = _run(program, "assert val(root) == 7", setup_code="root = Node(7)")
  assert r.status == "passed", r


def test_output_cap_kills_and_fails():
  r = _run("print('x' * 5000)", "", output_cap_bytes=1000)
  assert r.status == "failed" and r.detail == "stdout exceeded 1000 bytes"
  assert len(r.stdout) <= 1000


def test_work_dir_is_private_cwd_home_and_tmp():
  prog = (
    "import os, tempfile\nopen('f.txt', 'w').write('hi')\n"
    "print(os.getcwd() == os.environ['HOME'] == tempfile.gettempdir(), sorted(os.environ))"
  )
  r = _run(prog, "")
  assert r.status == "passed", r
  assert r.stdout.strip() == "True ['HOME', 'LANG', 'PATH', 'TMPDIR']"


def test_rewrite_tests_and_bad_input():
  code = assert_rewrite.rewrite_tests("x = 1\nassert x == 1, 'msg'")
  assert "_sbx_assert" in code.co_names and "_sbx_compare" in code.co_names
  with pytest.raises(ValueError, match=r"tests: line 2: .*'assert \)'"):
    code_reward.run_tests(ADD, ["assert add(1, 2) == 3", "assert )"])
  with pytest.raises(ValueError, match="setup_code: line 1"):
    code_reward.run_tests(ADD, "", setup_code="def (")
  with pytest.raises(ValueError, match="program must be str, got bytes"):
    code_reward.run_tests(b"x", "")
  with pytest.raises(ValueError, match="timeout_s=0"):
    code_reward.run_tests(ADD, "", timeout_s=0)


@pytest.fixture(scope="module")
def zygote():
  with code_reward.Zygote() as z:
    yield z


def test_zygote_runs_like_one_shot(zygote):
  cases = [(ADD + "print('hello')", "assert add(2, 3) == 5"), (ADD, "assert add(2, 2) == 5"),
           ("1 / 0", ""), ("import sys\nsys.exit(0)", ""), ("while True: pass", "")]  # fmt: skip
  for program, tests in cases:
    one = _run(program, tests, timeout_s=1.0)
    zyg = _run(program, tests, timeout_s=1.0, zygote=zygote)
    seen = [(r.status, r.stdout, r.detail, r.returncode) for r in (one, zyg)]
    assert seen[0] == seen[1], (one, zyg)
    assert zyg.layers == "zygote " + one.layers


# What a clean run observes of the interpreter, the environment and its work dir.
STATE = """
import builtins, collections, math, os, re, sys, typing
print(len([1, 2]), math.sqrt(4.0), collections.Counter is None, typing.List is None,
      re.compile is None, 'json' in sys.modules, sys.getrecursionlimit(), sys.path[0],
      sorted(os.environ), os.getenv('EVIL'), os.listdir('.'), os.getcwd() == os.environ['HOME'],
      builtins.isinstance(1, int), flush=True)
"""
TAMPER = (
  """
import builtins, collections, math, os, re, signal, sys, typing
builtins.len = lambda x: 0
math.sqrt, collections.Counter, typing.List, re.compile = (lambda x: -1.0), None, None, None
sys.modules['json'] = type(sys)('json')
sys.setrecursionlimit(80)
sys.path.insert(0, '/nonexistent')
os.environ['EVIL'] = '1'
open('left_behind.txt', 'w').write('x')
os.mkdir('subdir')
os.chdir('subdir')
"""
  + STATE
  + """
builtins.isinstance = lambda *a: False
try:
  os.kill(-1, signal.SIGKILL)  # everything it may signal (nothing outside its pid namespace)
except OSError:
  os._exit(0)
"""
)


def test_tampering_run_leaves_zygote_and_later_runs_unaffected():
  with code_reward.Zygote() as z:
    before = _run(STATE, "", zygote=z)
    pid = z.pid
    tamper = _run(TAMPER, "", zygote=z)
    after = _run(STATE, "", zygote=z)
    assert (z.pid, z.starts) == (pid, 1)  # the same zygote served all three runs
  assert before.status == after.status == "passed", (before, after)
  assert tamper.stdout.split()[:2] == ["0", "-1.0"], tamper  # the tampering did happen there
  assert tamper.status == "failed"
  assert after.stdout == before.stdout and "left_behind" not in after.stdout, (before, after)
  assert before.stdout.startswith("2 2.0 False False False False 1000 /proc/self/fd/"), before
