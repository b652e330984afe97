"""MATH answer checker: is a response's final answer equivalent to the gold answer?

Owns the equivalence decision and the binary reward for MATH-style problems. Pipeline for one
(prediction, gold) pair; steps 1 and 3 decide alone (math-verify is never asked to overrule them):

1. Candidates. Both answers are split into top-level items (`math_normalize.split_candidates`).
   The prediction must match the gold item for item, unordered, with the same number of distinct
   items. So "3 or 5", "$x=2$, $x=3$" or two different boxed answers never match a single gold
   value, while "x=3, x=2" matches the gold list "2, 3". The same answer twice counts once. A
   prediction with more than 2n + 4 textually distinct items against n gold items is a hedge
   (and would cost O(n^2) checks): WRONG without checking.
2. Exact match of `normalize`d strings, unless the string may denote an undefined value (then its
   value is checked first, below).
3. Structure: base subscripts (`28_9` compares by value); tuples, intervals (bracket kinds must
   agree), sets and `\\cup` unions (unordered), matrices element by element with step 4.
4. Scalar: our sympy check first: exact `simplify(a - b) == 0`, then numeric agreement (random
   points when free symbols are present), equations compared up to a constant factor. It decides
   alone when a side has no value, when the parser rejects a side (math-verify's lenient parser
   would read `5(,6)` as 5) and when both sides are numbers (math-verify rounds to 6 decimals:
   1e-7 = 2e-7 there). Otherwise (sets, relations, symbolic leftovers) `math_verify.verify` may
   still prove equivalence. An equation never equals a value.

Value conventions (the text ones are in `math_normalize`; all are tested):
- Undefined is never equal to anything, itself included, on every path above and in
  `hendrycks_equiv`: division by zero (`\\frac{1}{0}`, `0/0`), `nan`, `zoo`, `0^0`, `\\log 0`, a
  trig pole, `(-1)!`, and any arithmetic with infinity (`\\infty - \\infty`, `2\\infty`,
  `\\frac{1}{\\infty}`). A value that is not finite at a numeric test point is unequal there.
  Why: `abs(a - b) > tol` is False for nan, so an unguarded numeric check pays for `1/0`.
- Infinity: a bare `\\infty` / `+\\infty` / `-\\infty` (alone or as an interval end) is a value and
  equals only the same signed infinity.
- Tolerance: relative 1e-6 when either side is written with a decimal (`0.3333333` = 1/3); two
  exact answers must agree to 1e-12 at 30 digits (`\\sqrt[10^6]{2}` != 1); exact rationals exactly.
- Complex: `i` is the imaginary unit; a complex value (`\\sqrt{-4}` = `2i`) equals only a complex
  gold: real and imaginary parts must both agree.
- Ratios and clock times (`a:b`, `12:00`) compare as text, never as a division (`12:00` = `12:00`,
  `12:00` != `1:00`, `6:8` != `3:4`).
- Percent: a predicted `10\\%` reads as 10 (MATH golds drop the sign) and as 0.1 (its value), so
  it matches a gold `10`, `0.1` or `\\frac{1}{10}`. A gold `10\\%` asks for a number of percent:
  `10` and `10\\%` match it, `0.1` does not (it could as well mean 0.1%).
- Equations: `y = -\\frac12 x + \\frac34` matches `2x + 4y - 3 = 0` (same solution set: lhs - rhs
  equal up to a nonzero constant factor), as does `x = 3` vs `2x = 6`.
- Chains: `x = 5+5+1 = 11` matches 11 only if every member does (`x = 3+3 = 7` never matches);
  a gold chain's value is its last member.
- Lists, sets and intervals: a comma list is unordered (candidate rule); tuples and intervals are
  ordered and a set never equals a tuple; `[` and `(` must agree, even at infinity.

Time limits: math-verify gets its own `timeout_seconds` (a SIGALRM) and our sympy work runs under
an interval timer, both only in the main thread; elsewhere (threads) the caller's per-item timeout
is the only guard (the reward pool runs us in worker processes with one). A time limit that fires
raises `CheckTimeout` unless another stage already proved equivalence. Inputs whose evaluation
could block in C code (huge integer literals, nested exponents) skip our sympy stage. LaTeX that
cannot be parsed is a property of the answer, not a checker failure: that stage returns False.

`verify` turns CheckTimeout into Outcome.TIMEOUT; any other exception propagates so the pool
counts it as Outcome.ERROR (never a silent WRONG).
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
from score_jax.rewards.outcome import Outcome, Verdict

normalize = math_normalize.normalize
extract_answer = math_normalize.extract_answer
extract_candidates = math_normalize.extract_candidates

REL_TOL = 1e-6  # for answers written with decimals
EXACT_TOL = 1e-12  # two exact answers evaluated to 30 digits: only rounding may differ
_MAX_SYMPY_CHARS = 300
_RISKY_RE = re.compile(r"\d{60,}|\^\{?[^}]*\^|!\s*!|\d{4,}!|\d{3,}\^\{?\d{3,}")
_MATRIX_RE = re.compile(r"^\\begin\{([pbvB]?matrix|array)\}(?:\{[^}]*\})?(.*)\\end\{\1\}$", re.S)
_BASE_RE = re.compile(r"^([0-9A-Za-z]+)_\{?([0-9]+)\}?$")  # ASCII: int() reads any script's digits
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


def _base_value(s: str) -> int | None:
  """Value of `digits_base` (e.g. `1011_2`, `28_{9}`), plain integers as base 10, else None."""
  m = _BASE_RE.match(s)
  digits, base = (m.group(1), int(m.group(2))) if m else (s, 10)
  if not re.fullmatch(r"[0-9A-Za-z]+", digits):
    return None  # int() would also read `٥` or `1_0`
  try:
    return int(digits, base) if 2 <= base <= 36 else None
  except ValueError:
    return None


class CheckTimeout(TimeoutError):
  """An equivalence check ran past its time limit without finding a match."""


@contextlib.contextmanager
def _time_limit(seconds: float):
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


def _maybe_undefined(s: str) -> bool:
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
def _defined_text(s: str) -> bool:
  # Cached: the same gold string comes back for every sample of its problem.
  expr = _to_sympy(s)
  return expr is None or expr is _Unparseable or not _undefined(expr)


def _has_value(s: str, timeout_s: float) -> bool:
  """Whether normalised text that matched exactly is a value (not `\\frac{1}{0}` twice).

  Text that does not parse counts as a value, except that a structure's parts are checked one
  by one (the parser may reject the whole tuple but not its `\\frac{1}{0}`).
  """
  if not _maybe_undefined(s):
    return True
  if (st := _structure(s)) is not None:
    parts = [c for row in st[1] for c in row] if st[0] == "matrix" else st[1]
    return all(_has_value(normalize(part), timeout_s) for part in parts)
  with _time_limit(timeout_s):
    return _defined_text(s)


def _content(s: str) -> str:
  """The digits and letters of LaTeX text outside command names (what a rewrite must keep)."""
  return re.sub(r"[^0-9A-Za-z]", "", re.sub(r"\\[a-zA-Z]+", "", s))


def _math_verify_equiv(pred: str, gold: str, timeout_s: float) -> bool:
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
    if len(parsed) != 2 or _content(str(parsed[1])) != _content(text):
      return False
  with _time_limit(timeout_s):
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
  if alt == s or _content(alt) != _content(s):
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


def _sympy_scalar_equiv(pred: str, gold: str) -> bool | None:
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


def _split_top(s: str, seps: tuple[str, ...]) -> list[str]:
  items, depth, cur, i = [], 0, "", 0
  while i < len(s):
    sep = next((p for p in seps if s.startswith(p, i)), None)
    if sep and depth == 0:
      items.append(cur)
      cur, i = "", i + len(sep)
      continue
    depth += (s[i] in "([{") - (s[i] in ")]}")
    cur += s[i]
    i += 1
  return [*items, cur]


def _structure(s: str) -> tuple[str, list] | None:
  """(kind, parts) for matrices, sets, unions, tuples/intervals; None for scalars."""
  if (m := _MATRIX_RE.match(s)) and "\\end{" not in m.group(2):  # not `A + B` of two matrices
    rows = [r for r in re.split(r"\\\\", m.group(2)) if r.strip()]
    return "matrix", [r.split("&") for r in rows]
  if len(_split_top(s, ("\\cup",))) > 1:
    return "union", _split_top(s, ("\\cup",))
  if s.startswith("\\{") and s.endswith("\\}"):
    items = _split_top(s[2:-2], (",",))
    items = [
      x for i in items for x in ([i.replace("\\pm", sign) for sign in "+-"] if "\\pm" in i else [i])
    ]
    return "set", list(dict.fromkeys(items))
  if len(s) > 2 and s[0] in "([" and s[-1] in ")]":
    parts = _split_top(s[1:-1], (",",))
    if len(parts) == 1:  # `(0;-2;6)`: semicolons separate coordinates in some locales
      parts = _split_top(s[1:-1], (";",))
    if len(parts) > 1:
      return s[0] + s[-1], parts
  return None


def _matched(preds: list[str], golds: list[str], equiv, ordered: bool) -> bool:
  if len(preds) != len(golds):
    return False
  if ordered:
    return all(equiv(p, g) for p, g in zip(preds, golds))
  left = list(preds)
  for g in golds:  # greedy matching suffices: items of one answer are pairwise distinct
    hit = next((i for i, p in enumerate(left) if equiv(p, g)), None)
    if hit is None:
      return False
    left.pop(hit)
  return True


def _equiv_normalized(p: str, g: str, timeout_s: float) -> bool:
  """Steps 3-4 of the module docstring on two normalised, different strings."""
  if _BASE_RE.search(p) or _BASE_RE.search(g):  # `28_9` is base 9: sympy would drop the base
    return _base_value(p) is not None and _base_value(p) == _base_value(g)
  equiv = lambda a, b: _equiv_single(a, b, timeout_s)
  sp, sg = _structure(p), _structure(g)
  if sp is not None and sg is not None:
    if sp[0] != sg[0]:
      return False  # (1,2) vs [1,2], a set vs a tuple: different objects, whatever sympy says
    if sp[0] == "matrix":
      flat = lambda rows: [c for r in rows for c in r] if len({len(r) for r in rows}) == 1 else []
      same_shape = [len(r) for r in sp[1]] == [len(r) for r in sg[1]]
      return same_shape and _matched(flat(sp[1]), flat(sg[1]), equiv, ordered=True)
    return _matched(sp[1], sg[1], equiv, ordered=sp[0] not in ("set", "union"))
  if (math_normalize.equation_sides(p) is None) != (math_normalize.equation_sides(g) is None):
    return False  # `|x| = 5` is no value (math-verify would read the right side alone)
  timed_out = None
  try:
    with _time_limit(timeout_s):
      ours = _sympy_scalar_equiv(p, g)
  except CheckTimeout as e:
    ours, timed_out = None, e
  if ours is not None:
    return ours
  try:
    if _math_verify_equiv(p, g, timeout_s):
      return True
  except CheckTimeout as e:
    timed_out = e
  if timed_out is not None:
    raise timed_out
  return False


def _equiv_single(pred: str, gold: str, timeout_s: float) -> bool:
  """One answer item against one gold item: text rules, then `_equiv_normalized`."""
  p, g = normalize(pred), normalize(gold)
  if not p or not g:
    return False
  if ":" in p or ":" in g:  # ratios and clock times are text: `12:00` is no division by zero
    return p == g
  if p == g:
    return _has_value(p, timeout_s)
  if members := math_normalize.chain_members(g):  # a gold chain's value is its last member
    return _equiv_single(pred, members[-1], timeout_s)
  if members := math_normalize.chain_members(p):  # every member of a predicted chain must match
    return all(_equiv_single(m, g, timeout_s) for m in members)
  if _equiv_normalized(p, g, timeout_s):
    return True
  if math_normalize.is_percent(pred) and not math_normalize.is_percent(gold):
    return _equiv_normalized(f"\\frac{{{p}}}{{100}}", g, timeout_s)  # `10\%` is also 0.1
  eq_p, eq_g = math_normalize.normalize_equation(pred), math_normalize.normalize_equation(gold)
  if eq_p and eq_g and (eq_p, eq_g) != (p, g):  # `y = 2x + 3` lost its label above
    return _equiv_normalized(eq_p, eq_g, timeout_s)
  return False


def _dedupe(items: list[str], equiv=None) -> list[str]:
  """Distinct items: by normalised string, then by `equiv` when given (`x+11` twice as `11+x`)."""
  by_text: dict[str, str] = {}
  for item in items:
    by_text.setdefault(normalize(item), item)
  by_text.pop("", None)
  kept: list[str] = []
  for item in by_text.values():
    if equiv is None or not any(equiv(item, k) for k in kept):
      kept.append(item)
  return kept


def equivalent_candidates(preds: list[str], gold: str, timeout_s: float = 5.0) -> bool:
  """Whether the candidate answers `preds` match `gold` under the candidate rule (module doc)."""
  equiv = lambda p, g: _equiv_single(p, g, timeout_s)
  gold_items = _dedupe(math_normalize.split_candidates(gold))
  pred_items = _dedupe([i for p in preds for i in math_normalize.split_candidates(p)])
  # Textually distinct items can only merge by being the same value spelled differently; a
  # list this much longer than the gold is a hedge, and judging it costs O(n^2) checks.
  if not pred_items or not gold_items or len(pred_items) > 2 * len(gold_items) + 4:
    return False
  if len(pred_items) > 1:
    pred_items = _dedupe(pred_items, equiv)
  if len(pred_items) == 1 and len(gold_items) == 1:
    return equiv(pred_items[0], gold_items[0])
  if len(gold_items) > 1 and len(pred_items) == 1 and _structure(normalize(pred_items[0])):
    return equiv(pred_items[0], "\\{" + ",".join(gold_items) + "\\}")  # "\{2,3\}" for "2, 3"
  if len(pred_items) > 1 and len(gold_items) == 1 and _structure(normalize(gold_items[0])):
    return equiv("\\{" + ",".join(pred_items) + "\\}", gold_items[0])  # "2, 3" for "\{2,3\}"
  return _matched(pred_items, gold_items, equiv, ordered=False)


def is_equivalent(pred: str, gold: str, timeout_s: float = 5.0) -> bool:
  """Whether answer `pred` is mathematically equivalent to answer `gold`.

  Raises:
    CheckTimeout: a math-verify or sympy stage ran past `timeout_s` and none found a match.
  """
  return equivalent_candidates([pred], gold, timeout_s)


def hendrycks_equiv(pred: str | None, gold: str) -> bool:
  """Classic Hendrycks MATH match: equal after `strip_string` (for literature comparisons)."""
  if pred is None or math_normalize.strip_string(pred) != math_normalize.strip_string(gold):
    return False
  return _has_value(normalize(pred), 5.0)  # `\frac{1}{0}` twice is no match


def verify(response: str, gold: str, timeout_s: float = 5.0) -> Verdict:
  """Judges one response. CheckTimeout becomes Outcome.TIMEOUT; other exceptions propagate."""
  candidates = extract_candidates(response)
  if not candidates:
    return Verdict(Outcome.WRONG, "no answer found")
  shown = " | ".join(candidates)
  try:
    ok = equivalent_candidates(candidates, gold, timeout_s)
  except CheckTimeout as e:
    return Verdict(Outcome.TIMEOUT, f"answer {shown!r}: {e}")
  return Verdict(Outcome.CORRECT if ok else Outcome.WRONG, f"answer {shown!r}")


def reward(response: str, gold: str, timeout_s: float = 5.0) -> float:
  """1.0 if `response`'s final answer is equivalent to `gold`, else 0.0."""
  return verify(response, gold, timeout_s).reward
