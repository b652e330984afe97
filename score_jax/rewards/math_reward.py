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
4. Scalar (`math_symbolic`): our sympy check first: exact `simplify(a - b) == 0`, then numeric
   agreement (random points when free symbols are present), equations compared up to a constant
   factor. It decides alone when a side has no value, when the parser rejects a side
   (math-verify's lenient parser would read `5(,6)` as 5) and when both sides are numbers
   (math-verify rounds to 6 decimals: 1e-7 = 2e-7 there). Otherwise (sets, relations, symbolic
   leftovers) `math_verify.verify` may still prove equivalence. An equation never equals a value.

Value conventions (the text ones are in `math_normalize`, the rest in `math_symbolic`; all are
tested):
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

import re

from score_jax.rewards import hendrycks_normalize, math_normalize
from score_jax.rewards.math_symbolic import (
  CheckTimeout,
  defined_text,
  math_verify_equiv,
  maybe_undefined,
  scalar_equiv,
  time_limit,
)
from score_jax.rewards.outcome import Outcome, Verdict

normalize = math_normalize.normalize
extract_answer = math_normalize.extract_answer
extract_candidates = math_normalize.extract_candidates

_MATRIX_RE = re.compile(r"^\\begin\{([pbvB]?matrix|array)\}(?:\{[^}]*\})?(.*)\\end\{\1\}$", re.S)
_BASE_RE = re.compile(r"^([0-9A-Za-z]+)_\{?([0-9]+)\}?$")  # ASCII: int() reads any script's digits


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


def _has_value(s: str, timeout_s: float) -> bool:
  """Whether normalised text that matched exactly is a value (not `\\frac{1}{0}` twice).

  Text that does not parse counts as a value, except that a structure's parts are checked one
  by one (the parser may reject the whole tuple but not its `\\frac{1}{0}`).
  """
  if not maybe_undefined(s):
    return True
  if (st := _structure(s)) is not None:
    parts = [c for row in st[1] for c in row] if st[0] == "matrix" else st[1]
    return all(_has_value(normalize(part), timeout_s) for part in parts)
  with time_limit(timeout_s):
    return defined_text(s)


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
    with time_limit(timeout_s):
      ours = scalar_equiv(p, g)
  except CheckTimeout as e:
    ours, timed_out = None, e
  if ours is not None:
    return ours
  try:
    if math_verify_equiv(p, g, timeout_s):
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
  strip = hendrycks_normalize.strip_string
  if pred is None or strip(pred) != strip(gold):
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
