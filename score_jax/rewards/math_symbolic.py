"""Symbolic side of the MATH checker: LaTeX -> sympy, undefined values, scalar equivalence.

Owns step 4 of `math_reward`'s pipeline and the value conventions it decides (undefined values,
infinity, tolerances, complex values, equations up to a constant factor; `math_reward` lists
them): parsing with latex2sympy (and math-verify's clean-up as a fallback), our sympy check,
math-verify's own check for what ours leaves open, and the time limits around both.
"""

import cmath
import contextlib
import functools
import random
import re
import signal
import threading

import latex2sympy2_extended
import math_verify
import sympy
from latex2sympy2_extended import latex2sympy
from math_verify.errors import TimeoutException

from score_jax.rewards import math_normalize

REL_TOL = 1e-6  # for answers written with decimals
EXACT_TOL = 1e-12  # two exact answers evaluated to 30 digits: only rounding may differ
_MAX_SYMPY_CHARS = 300
_RISKY_RE = re.compile(r"\d{60,}|\^\{?[^}]*\^|!\s*!|\d{4,}!|\d{3,}\^\{?\d{3,}")
_I = sympy.Symbol("i")
# math-verify's own LaTeX clean-up (its `parse` default), used as a fallback rewrite in `_parse`.
_MV_NORMALIZATION = latex2sympy2_extended.NormalizationConfig(
  basic_latex=True, units=True, malformed_operators=True, nits=True, boxed="all", equations=False
)
_NO_VALUE = (sympy.nan, sympy.zoo)
_INFINITIES = (sympy.oo, -sympy.oo)
# Text that can denote an undefined value: a division not by a nonzero literal, a pole, a log,
# infinity, a factorial, a negative or zero-base power. An exact match without any of these is
# a value without asking sympy (keeps the common exact-match path string-only).
_MAYBE_UNDEFINED_RE = re.compile(
  r"\\(?:infty|log|ln|lg|tan|cot|sec|csc|Gamma|lim|sum|prod|int|div|over|binom|mod|operatorname)"
  r"(?![a-zA-Z])|!|\^\s*\{?\s*-|(?<![\d.])0+\s*\^|nan|zoo|oo|/(?![\d.]*[1-9])"
)
_NONZERO_LITERAL_RE = re.compile(
  r"(?=.)(?:[\d.]*[1-9][\d.]*)?(?:\\sqrt\{[\d.]*[1-9][\d.]*\}|\\pi)?|\\sqrt\{[\d.]*[1-9][\d.]*\}"
)


class CheckTimeout(TimeoutError):
  """An equivalence check ran past its time limit without finding a match."""


@contextlib.contextmanager
def time_limit(seconds: float):
  """Raises CheckTimeout after `seconds` (main thread only; a no-op elsewhere)."""
  if threading.current_thread() is not threading.main_thread() or seconds <= 0:
    yield
    return

  def _raise(signum, frame):
    raise CheckTimeout(f"sympy check exceeded {seconds:g}s")

  old = signal.signal(signal.SIGALRM, _raise)
  signal.setitimer(signal.ITIMER_REAL, seconds)
  try:
    yield
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


def _undefined(obj) -> bool:
  """Whether a parsed answer (sympy object, container, math-verify result) has no value.

  Undefined: nan, zoo, any arithmetic with infinity, `0^0`, anything whose evaluation gives
  one of those. A bare signed infinity is a value. Evaluation errors count as defined: the
  comparison stages then treat a non-finite number as unequal anyway.
  """
  if isinstance(obj, list | tuple | set | frozenset | sympy.MatrixBase):
    return any(_undefined(o) for o in obj)
  if isinstance(obj, sympy.Interval):
    return _undefined(obj.start) or _undefined(obj.end)
  if not isinstance(obj, sympy.Basic):
    return False  # math-verify's raw string alongside its parse
  if not isinstance(obj, sympy.Expr):
    return any(_undefined(a) for a in obj.args)  # sets, tuples, relations, unions
  if obj in _INFINITIES:
    return False
  # Checked before evaluation, which would turn `2*oo` into `oo` and `0**0` into 1.
  if obj.has(*_NO_VALUE, *_INFINITIES):
    return True
  if any(p.base.is_zero and p.exp.is_zero for p in obj.atoms(sympy.Pow)):
    return True
  try:
    value = obj.doit()
  except (TypeError, ValueError, ArithmeticError, AttributeError, NotImplementedError):
    # sympy could not evaluate it: no evidence of an undefined value, and no pay either, since
    # the comparison stages fail closed (None / False) on the same errors.
    return False
  return value.has(*_NO_VALUE, *_INFINITIES)


def maybe_undefined(s: str) -> bool:
  """Whether normalised text could denote an undefined value (cheap screen, no sympy)."""
  if _MAYBE_UNDEFINED_RE.search(s):
    return True
  i = s.find("\\frac")
  while i != -1:
    num = math_normalize.braced(s, i + 5)
    den = num and math_normalize.braced(s, num[1])
    if not den or not _NONZERO_LITERAL_RE.fullmatch(den[0]):
      return True
    i = s.find("\\frac", i + 5)
  return False


@functools.lru_cache(maxsize=4096)
def defined_text(s: str) -> bool:
  """Whether normalised text is a value: it parses to something defined, or does not parse."""
  # Cached: the same gold string comes back for every sample of its problem.
  expr = _to_sympy(s)
  return expr is None or expr is _Unparseable or not _undefined(expr)


def _latex_content(s: str) -> str:
  """The digits and letters of LaTeX text outside command names (what a rewrite must keep)."""
  return re.sub(r"[^0-9A-Za-z]", "", re.sub(r"\\[a-zA-Z]+", "", s))


def math_verify_equiv(pred: str, gold: str, timeout_s: float) -> bool:
  """Whether math-verify proves two normalised answers equal (never for an undefined value)."""
  in_main = threading.current_thread() is threading.main_thread()
  limit = max(1, round(timeout_s)) if in_main else None  # SIGALRM takes whole seconds
  try:
    gold_p = math_verify.parse(f"${gold}$", parsing_timeout=limit, raise_on_error=True)
    pred_p = math_verify.parse(f"${pred}$", parsing_timeout=limit, raise_on_error=True)
  except TimeoutException as e:
    raise CheckTimeout(f"math-verify exceeded {limit}s") from e
  except Exception:  # unparseable LaTeX: math-verify cannot establish equivalence
    return False
  # math-verify extracts a part when it cannot read the whole (`5` out of `5\\text{(or 6)}`).
  for text, parsed in ((gold, gold_p), (pred, pred_p)):
    if len(parsed) != 2 or _latex_content(str(parsed[1])) != _latex_content(text):
      return False
  with time_limit(timeout_s):
    # math-verify calls zoo equal to zoo (and compares raw strings): it never sees no-values.
    if _undefined(gold_p) or _undefined(pred_p):
      return False
  try:
    return math_verify.verify(gold_p, pred_p, timeout_seconds=limit, raise_on_error=True)
  except TimeoutException as e:
    raise CheckTimeout(f"math-verify exceeded {limit}s") from e
  except Exception:  # a comparison math-verify cannot make
    return False


class _Unparseable:
  """`_to_sympy`'s answer for LaTeX the parser rejects (None: not tried, too big or risky)."""


def _to_sympy(s: str):
  if len(s) > _MAX_SYMPY_CHARS or _RISKY_RE.search(s):
    return None
  try:
    return latex2sympy(s)
  except CheckTimeout:
    raise
  except Exception:  # unparseable LaTeX answer
    return _Unparseable


def _parse(s: str):
  """`_to_sympy`, retried on math-verify's LaTeX normalisation when our parser rejects `s`.

  The rewrite (`\\log_28` -> `\\log_{2}{8}`) is used only if it keeps every digit and letter
  outside command names: it would also cut `5\\text{(or 6)}` down to `5`.
  """
  expr = _to_sympy(s)
  if expr is not _Unparseable:
    return expr
  alt = latex2sympy2_extended.normalize_latex(s, _MV_NORMALIZATION)
  if alt == s or _latex_content(alt) != _latex_content(s):
    return _Unparseable
  return _to_sympy(alt)


def _close(a: sympy.Expr, b: sympy.Expr) -> bool:
  """Exact symbolic equality, then numeric agreement (random points if symbolic).

  Both must be defined (`_undefined`). Two exact rationals must be equal. The tolerance REL_TOL
  is for answers written with decimals; two exact answers (no decimal literal) must agree to
  EXACT_TOL, so that neither 1000001 = 1000000 nor `\\sqrt[10^6]{2}` = 1.
  """
  if a in _INFINITIES or b in _INFINITIES:
    return a == b
  if not (a.free_symbols or b.free_symbols) and {a.is_real, b.is_real} == {True, False}:
    return False  # a complex value equals only a complex gold, however small its imaginary part
  diff = a - b
  if diff == 0 or sympy.simplify(diff) == 0:
    return True
  if a.is_Rational and b.is_Rational:
    return False
  if a.free_symbols != b.free_symbols:
    return False
  symbols = sorted(a.free_symbols, key=str)
  rng = random.Random(0)
  points = [{x: sympy.Rational(rng.randint(11, 97), rng.randint(7, 13)) for x in symbols}]
  if symbols:
    points += [{x: sympy.Rational(rng.randint(-97, -11), rng.randint(7, 13)) for x in symbols}]
  tol = REL_TOL if a.has(sympy.Float) or b.has(sympy.Float) else EXACT_TOL
  for point in points:
    va = complex(sympy.N(a.subs(point), 30))
    vb = complex(sympy.N(b.subs(point), 30))
    # The original bug: `abs(nan) > tol` is False, so a non-finite value "agreed" with anything.
    if not (cmath.isfinite(va) and cmath.isfinite(vb)):
      return False
    if abs(va - vb) > tol * max(abs(va), abs(vb), 1e-12):
      return False
  return True


def _equations_equiv(sides: list[tuple[str, str]]) -> bool | None:
  """Two (lhs, rhs) with the same solution set: lhs - rhs equal up to a nonzero constant."""
  exprs = [(_to_sympy(lhs), _to_sympy(rhs)) for lhs, rhs in sides]
  if any(e is _Unparseable for pair in exprs for e in pair):
    return False
  if any(e is None or not isinstance(e, sympy.Expr) for pair in exprs for e in pair):
    return None
  if any(_undefined(e) for pair in exprs for e in pair):
    return False
  e_pred, e_gold = ((lhs - rhs).doit() for lhs, rhs in exprs)
  if e_gold == 0 or e_pred == 0:  # `0 = 0` or `x = x` holds everywhere: it equals only its kind
    return e_gold == e_pred
  ratio = sympy.simplify(e_pred / e_gold)
  ok = ratio.is_number and ratio.is_finite and ratio != 0 and not ratio.has(*_NO_VALUE)
  return True if ok else None


def scalar_equiv(pred: str, gold: str) -> bool | None:
  """True / False when our sympy check decides, None to leave it to math-verify.

  Decides False for a side with no value, or one the parser rejects (math-verify's lenient
  parser reads `5(,6)` as 5); two plain numbers decide by `_close` alone (math-verify rounds to
  6 decimals, so it would call 1e-7 equal to 2e-7).
  """
  sides = [math_normalize.equation_sides(s) for s in (pred, gold)]
  if sides[0] and sides[1]:
    return _equations_equiv(sides)
  a, b = _parse(pred), _parse(gold)
  if a is _Unparseable or b is _Unparseable:
    return False  # math-verify's lenient parser would read `5(,6)` as 5
  if a is None or b is None:
    return None
  if _undefined(a) or _undefined(b):
    return False
  if not isinstance(a, sympy.Expr) or not isinstance(b, sympy.Expr):
    return None  # sets, relations, matrices: math-verify's
  try:
    # MATH answers use i for the imaginary unit; the latex parser makes it a plain symbol.
    a, b = (e.doit().subs(_I, sympy.I) for e in (a, b))
    if _close(a, b):
      return True
  except (TypeError, ValueError, ArithmeticError, AttributeError, NotImplementedError):
    return None  # e.g. a parse with no numeric value
  return None if a.free_symbols or b.free_symbols else False
