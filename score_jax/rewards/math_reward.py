"""MATH answer checker: is a response's final answer equivalent to the gold answer?

Owns the equivalence decision and the binary reward for MATH-style problems. Pipeline for one
(prediction, gold) pair; steps 1 and 3 decide alone (math-verify is never asked to overrule them):

1. Candidates. Both answers are split into top-level items (`math_normalize.split_candidates`).
   The prediction must match the gold item for item, unordered, with the same number of distinct
   items. So "3 or 5", "$x=2$, $x=3$" or two different boxed answers never match a single gold
   value, while "x=3, x=2" matches the gold list "2, 3". The same answer twice counts once.
2. Exact match of `normalize`d strings.
3. Structure: base subscripts (`28_9` compares by value); tuples, intervals (bracket kinds must
   agree), sets (unordered), `\\cup` unions and matrices element by element with step 4.
4. Scalar: `math_verify.verify(parse(gold), parse(pred))` on the normalised strings, OR our own
   sympy check: exact `simplify(a - b) == 0` first, then numeric with relative tolerance 1e-6
   (random points when free symbols are present), equations compared up to a constant factor.

Time limits: math-verify gets its own `timeout_seconds` (a SIGALRM) and our sympy work runs under
an interval timer, both only in the main thread; elsewhere (threads) the caller's per-item timeout
is the only guard (the reward pool runs us in worker processes with one). A time limit that fires
raises `CheckTimeout` unless another stage already proved equivalence. Inputs whose evaluation
could block in C code (huge integer literals, nested exponents) skip our sympy stage. LaTeX that
cannot be parsed is a property of the answer, not a checker failure: that stage returns False.

`verify` turns CheckTimeout into Outcome.TIMEOUT; any other exception propagates so the pool
counts it as Outcome.ERROR (never a silent WRONG).
"""

import contextlib
import random
import re
import signal
import threading

import math_verify
import sympy
from latex2sympy2_extended import latex2sympy
from math_verify.errors import TimeoutException

from score_jax.rewards import math_normalize
from score_jax.rewards.outcome import Outcome, Verdict

normalize = math_normalize.normalize
extract_answer = math_normalize.extract_answer
extract_candidates = math_normalize.extract_candidates

REL_TOL = 1e-6
_MAX_SYMPY_CHARS = 300
_RISKY_RE = re.compile(r"\d{60,}|\^\{?[^}]*\^|!\s*!|\d{4,}!|\d{3,}\^\{?\d{3,}")
_MATRIX_RE = re.compile(r"^\\begin\{([pbvB]?matrix|array)\}(?:\{[^}]*\})?(.*)\\end\{\1\}$", re.S)


_BASE_RE = re.compile(r"^([0-9A-Za-z]+)_\{?(\d+)\}?$")


def _base_value(s: str) -> int | None:
  """Value of `digits_base` (e.g. `1011_2`, `28_{9}`), plain integers as base 10, else None."""
  m = _BASE_RE.match(s)
  digits, base = (m.group(1), int(m.group(2))) if m else (s, 10)
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


def _math_verify_equiv(pred: str, gold: str, timeout_s: float) -> bool:
  in_main = threading.current_thread() is threading.main_thread()
  limit = max(1, round(timeout_s)) if in_main else None  # SIGALRM takes whole seconds
  try:
    gold_p = math_verify.parse(f"${gold}$", parsing_timeout=limit, raise_on_error=True)
    pred_p = math_verify.parse(f"${pred}$", parsing_timeout=limit, raise_on_error=True)
    return math_verify.verify(gold_p, pred_p, timeout_seconds=limit, raise_on_error=True)
  except TimeoutException as e:
    raise CheckTimeout(f"math-verify exceeded {limit}s") from e
  except Exception:  # unparseable LaTeX: math-verify cannot establish equivalence
    return False


def _to_sympy(s: str):
  if len(s) > _MAX_SYMPY_CHARS or _RISKY_RE.search(s):
    return None
  try:
    return latex2sympy(s)
  except CheckTimeout:
    raise
  except Exception:  # unparseable LaTeX answer
    return None


def _close(a, b) -> bool:
  """Exact symbolic equality, then numeric agreement at rel REL_TOL (random points if symbolic).

  Two exact rationals must be equal: the tolerance is for decimals and irrationals only, so that
  1000001 never matches 1000000.
  """
  if not isinstance(a, sympy.Expr) or not isinstance(b, sympy.Expr):
    return False
  # MATH answers use i for the imaginary unit; the latex parser makes it a plain symbol.
  a, b = (e.subs(sympy.Symbol("i"), sympy.I) for e in (a, b))
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
  for point in points:
    va = complex(sympy.N(a.subs(point), 30))
    vb = complex(sympy.N(b.subs(point), 30))
    if abs(va - vb) > REL_TOL * max(abs(va), abs(vb), 1e-12):
      return False
  return True


def _sympy_scalar_equiv(pred: str, gold: str) -> bool:
  if pred.count("=") == 1 and gold.count("=") == 1:  # equations: lhs - rhs up to a constant
    sides = [s.split("=") for s in (pred, gold)]
    exprs = [(_to_sympy(lhs), _to_sympy(rhs)) for lhs, rhs in sides]
    if any(e is None or not isinstance(e, sympy.Expr) for pair in exprs for e in pair):
      return False
    e_pred, e_gold = (lhs - rhs for lhs, rhs in exprs)
    if e_gold == 0:
      return e_pred == 0
    ratio = sympy.simplify(e_pred / e_gold)
    return ratio.is_number and ratio != 0
  a, b = _to_sympy(pred), _to_sympy(gold)
  if a is None or b is None:
    return False
  try:
    return _close(a, b)
  except (TypeError, ValueError, ArithmeticError, AttributeError, NotImplementedError):
    return False  # e.g. a relational or boolean parse that has no numeric value


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
  if m := _MATRIX_RE.match(s):
    rows = [r for r in re.split(r"\\\\", m.group(2)) if r.strip()]
    return "matrix", [r.split("&") for r in rows]
  if len(_split_top(s, ("\\cup",))) > 1:
    return "union", _split_top(s, ("\\cup",))
  if s.startswith("\\{") and s.endswith("\\}"):
    return "set", list(dict.fromkeys(_split_top(s[2:-2], (",",))))
  if len(s) > 2 and s[0] in "([" and s[-1] in ")]":
    parts = _split_top(s[1:-1], (",",))
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


def _equiv_single(pred: str, gold: str, timeout_s: float) -> bool:
  p, g = normalize(pred), normalize(gold)
  if not p or not g:
    return False
  if p == g:
    return True
  if _BASE_RE.search(p) or _BASE_RE.search(g):  # `28_9` is base 9: sympy would drop the base
    return _base_value(p) is not None and _base_value(p) == _base_value(g)
  sp, sg = _structure(p), _structure(g)
  if sp is not None and sg is not None:
    if sp[0] != sg[0]:
      return False  # (1,2) vs [1,2], a set vs a tuple: different objects, whatever sympy says
    if sp[0] == "matrix":
      flat = lambda rows: [c for r in rows for c in r] if len({len(r) for r in rows}) == 1 else []
      same_shape = [len(r) for r in sp[1]] == [len(r) for r in sg[1]]
      return same_shape and _matched(
        flat(sp[1]), flat(sg[1]), lambda a, b: _equiv_single(a, b, timeout_s), ordered=True
      )
    return _matched(
      sp[1], sg[1], lambda a, b: _equiv_single(a, b, timeout_s), ordered=sp[0] != "set"
    )
  timed_out = None
  try:
    if _math_verify_equiv(p, g, timeout_s):
      return True
  except CheckTimeout as e:
    timed_out = e
  try:
    with _time_limit(timeout_s):
      if _sympy_scalar_equiv(p, g):
        return True
  except CheckTimeout as e:
    timed_out = e
  if timed_out is not None:
    raise timed_out
  return False


def _dedupe(items: list[str], equiv=None) -> list[str]:
  """Distinct items: by normalised string, or by `equiv` when given (`x+11` twice as `11+x`)."""
  kept: list[str] = []
  for item in items:
    if not normalize(item):
      continue
    if not any(
      normalize(item) == normalize(k) or (equiv is not None and equiv(item, k)) for k in kept
    ):
      kept.append(item)
  return kept


def equivalent_candidates(preds: list[str], gold: str, timeout_s: float = 5.0) -> bool:
  """Whether the candidate answers `preds` match `gold` under the candidate rule (module doc)."""
  equiv = lambda p, g: _equiv_single(p, g, timeout_s)
  pred_items = [i for p in preds for i in math_normalize.split_candidates(p)]
  pred_items = _dedupe(pred_items, equiv if len(pred_items) > 1 else None)
  gold_items = _dedupe(math_normalize.split_candidates(gold))
  if not pred_items or not gold_items:
    return False
  if len(pred_items) == 1 and len(gold_items) == 1:
    return equiv(pred_items[0], gold_items[0])
  if len(gold_items) > 1 and len(pred_items) == 1 and _structure(normalize(pred_items[0])):
    return equiv(pred_items[0], "\\{" + ",".join(gold_items) + "\\}")  # "\{2,3\}" for "2, 3"
  return _matched(pred_items, gold_items, equiv, ordered=False)


def is_equivalent(pred: str, gold: str, timeout_s: float = 5.0) -> bool:
  """Whether answer `pred` is mathematically equivalent to answer `gold`.

  Raises:
    CheckTimeout: a math-verify or sympy stage ran past `timeout_s` and none found a match.
  """
  return equivalent_candidates([pred], gold, timeout_s)


def hendrycks_equiv(pred: str | None, gold: str) -> bool:
  """Classic Hendrycks MATH match: equal after `strip_string` (for literature comparisons)."""
  if pred is None:
    return False
  return math_normalize.strip_string(pred) == math_normalize.strip_string(gold)


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
