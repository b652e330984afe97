"""Property tests of the MATH checker (hypothesis): what must hold for every answer, not a list.

- two finite rationals further apart than the tolerance are never equivalent, in any spelling;
- an answer equals itself as `\\frac{2a}{2b}`, as a decimal within tolerance, inside `\\left(`;
- a wrong answer wrapped in any hedge (lists, `\\in`, `\\pm`, several boxes, "or") earns nothing,
  even next to the right one;
- an undefined form earns nothing against any gold, itself included.

The default run is small and derandomized (fast, reproducible); `-m slow` runs many more examples.
"""

import fractions

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from score_jax.rewards import math_reward, math_symbolic

_FAST = settings(
  max_examples=25,
  deadline=None,
  derandomize=True,
  database=None,
  suppress_health_check=[HealthCheck.too_slow],
)
_SLOW = settings(max_examples=400, deadline=None, database=None)
_FINAL = "Final Answer: The final answer is ${}$. I hope it is correct."

ints = st.integers(-10_000, 10_000)
dens = st.integers(1, 1000)
# Denominators 10^7 and 10^9 give tiny decimals, where rounding to 6 places would merge values.
rationals = st.builds(fractions.Fraction, ints, dens | st.sampled_from([10**7, 10**9]))


def _decimal(x: fractions.Fraction, digits: int = 15) -> str:
  """`x` as a fixed-point decimal string (exact when the expansion terminates within `digits`)."""
  sign = "-" if x < 0 else ""
  whole, rest = divmod(abs(x.numerator), x.denominator)
  frac = (rest * 10**digits + x.denominator // 2) // x.denominator
  return f"{sign}{whole}.{frac:0{digits}d}"


def _spellings(x: fractions.Fraction) -> list[str]:
  spelled = [rf"\frac{{{x.numerator}}}{{{x.denominator}}}", f"{x.numerator}/{x.denominator}"]
  if 10**15 % x.denominator == 0:  # terminating decimal: exact
    spelled.append(_decimal(x))
  return spelled


def _check_far_apart(a: fractions.Fraction, b: fractions.Fraction, i: int, j: int) -> None:
  if abs(a - b) <= math_symbolic.REL_TOL * max(abs(a), abs(b)):
    return
  pa, pb = _spellings(a), _spellings(b)
  assert not math_reward.is_equivalent(pa[i % len(pa)], pb[j % len(pb)])


def _check_rewrites(a: int, b: int, inner: str) -> None:
  gold = rf"\frac{{{a}}}{{{b}}}"
  for pred in (
    rf"\frac{{{2 * a}}}{{{2 * b}}}",
    _decimal(fractions.Fraction(a, b), 12),
    rf"\left( \frac{{{a}}}{{{b}}} \right)",
    rf"\left( {inner}, \frac{{{a}}}{{{b}}} \right)",
  ):
    g = gold if "," not in pred else f"({inner}, {gold})"
    assert math_reward.is_equivalent(pred, g), (pred, g)


_HEDGES = (
  "{g}, {w}",
  "{w}, {g}",
  r"{g} \text{{ or }} {w}",
  "{w} or {g}",
  r"x \in \{{{g}, {w}\}}",
  r"x \in \{{{w}\}}",
  r"\pm {w}",
  r"\frac{{{s}}}{{2}} \pm \frac{{{d}}}{{2}}",  # exactly g and w
  r"{w} \text{{ (or }} {g})",
  r"{g} \vee {w}",
)


def _check_hedge(g: int, w: int, form: str) -> None:
  hedge = form.format(g=g, w=w, s=g + w, d=abs(g - w))
  assert math_reward.reward(_FINAL.format(hedge), str(g)) == 0.0, hedge
  boxes = rf"So $\boxed{{{g}}}$, or maybe $\boxed{{{w}}}$."
  assert math_reward.reward(boxes, str(g)) == 0.0


_UNDEFINED = (
  r"\frac{{{n}}}{{0}}",
  "{n}/0",
  "0/0",
  r"\infty - \infty",
  r"\frac{{{n}}}{{{n} - {n}}}",
  "0^0",
  r"\log 0",
  r"0 \cdot \infty",
  r"\infty^0",
  r"\tan \frac{{\pi}}{{2}}",
  "(-1)!",
  r"{n} + \frac{{1}}{{0}}",
)
_GOLDS = st.one_of(
  ints.map(str),
  rationals.map(lambda x: rf"\frac{{{x.numerator}}}{{{x.denominator}}}"),
  st.integers(1, 99).map(lambda k: rf"{k}\sqrt{{2}}"),
  st.integers(1, 12).map(lambda k: rf"\frac{{{k}\pi}}{{6}}"),
  st.tuples(ints, ints).map(lambda t: f"({t[0]}, {t[1]})"),
  st.just(r"\infty"),
)


def _check_undefined(form: str, n: int, gold: str, wrap: int) -> None:
  u = form.format(n=n)
  pred = (u, f"({u}, {n})", f"x = {u}", rf"\{{{u}\}}")[wrap]
  assert math_reward.reward(_FINAL.format(pred), gold) == 0.0, (pred, gold)
  assert math_reward.reward(_FINAL.format(pred), pred) == 0.0, pred


far_args = (rationals, rationals, st.integers(0, 2), st.integers(0, 2))
rewrite_args = (ints, st.integers(1, 999), ints.map(str))
hedge_args = (ints, ints, st.sampled_from(_HEDGES))
undefined_args = (st.sampled_from(_UNDEFINED), st.integers(1, 99), _GOLDS, st.integers(0, 3))


@_FAST
@given(*far_args)
@example(fractions.Fraction(1, 10**7), fractions.Fraction(2, 10**7), 2, 2)  # 6-place rounding
@example(fractions.Fraction(1000001), fractions.Fraction(1000000), 0, 0)
def test_rationals_beyond_tolerance_are_never_equivalent(a, b, i, j):
  _check_far_apart(a, b, i, j)


@_FAST
@given(*rewrite_args)
def test_an_answer_equals_its_rewrites(a, b, inner):
  _check_rewrites(a, b, inner)


@_FAST
@given(*hedge_args)
@example(5, 6, r"{g} \vee {w}")
@example(3, 5, r"\frac{{{s}}}{{2}} \pm \frac{{{d}}}{{2}}")
def test_hedges_never_earn_reward(g, w, form):
  if g != w:
    _check_hedge(g, w, form)


@_FAST
@given(*undefined_args)
@example(r"\frac{{{n}}}{{0}}", 1, "19", 0)  # the first reported undefined form that paid
@example(r"\infty - \infty", 1, r"\infty", 0)
def test_undefined_forms_never_earn_reward(form, n, gold, wrap):
  _check_undefined(form, n, gold, wrap)


@pytest.mark.slow
@_SLOW
@given(*far_args, *rewrite_args)
def test_many_numbers(a, b, i, j, c, d, inner):
  _check_far_apart(a, b, i, j)
  _check_rewrites(c, d, inner)


@pytest.mark.slow
@_SLOW
@given(*hedge_args, *undefined_args)
def test_many_hedges_and_undefined(g, w, form, uform, n, gold, wrap):
  if g != w:
    _check_hedge(g, w, form)
  _check_undefined(uform, n, gold, wrap)
