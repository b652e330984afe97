"""Tests for the MATH answer checker: extraction, normalisation, equivalence, verdicts."""

import collections
import json
import logging
import pathlib
import threading
import time

import math_verify
import pytest

from score_jax.rewards import math_normalize, math_reward, math_symbolic
from score_jax.rewards.outcome import Outcome

_CASES = pathlib.Path(__file__).with_name("math_cases.jsonl")
_FORMS = (
  "fraction decimal sqrt pi degrees units text thousands set interval tuple matrix equation "
  "percent negative scientific expression multiple_candidates empty_garbage math_verify_misses"
).split()


def _cases() -> list[dict]:
  rows = []
  for n, line in enumerate(_CASES.read_text().splitlines(), 1):
    row = json.loads(line)
    assert set(row) == {"pred", "gold", "equivalent", "form", "note"}, f"{_CASES}:{n} fields"
    rows.append(row)
  return rows


def test_labelled_suite_accuracy_and_math_verify_disagreements():
  cases = _cases()
  forms = collections.Counter(c["form"] for c in cases)
  negatives = sum(not c["equivalent"] for c in cases) / len(cases)
  assert len(cases) >= 250 and set(_FORMS) <= set(forms), forms
  assert 0.35 <= negatives <= 0.45, negatives
  start = time.perf_counter()
  misses = [c for c in cases if math_reward.is_equivalent(c["pred"], c["gold"]) != c["equivalent"]]
  elapsed = time.perf_counter() - start
  print(
    f"\nours: {len(cases) - len(misses)}/{len(cases)} right, {len(cases) / elapsed:.1f} checks/s"
  )
  logging.disable(logging.WARNING)  # math-verify logs every parse failure of the garbage cases
  try:
    for wrap in ("", "$"):
      for c in cases:
        g, p = (math_verify.parse(wrap + s + wrap) for s in (c["gold"], c["pred"]))
        if math_verify.verify(g, p) != c["equivalent"]:
          print(f"math-verify{' ($-wrapped)' if wrap else ''} wrong: {c}")
  finally:
    logging.disable(logging.NOTSET)
  assert len(misses) <= 0.01 * len(cases), "\n".join(map(str, misses))


_RESPONSE = (
  "Let me think. $x = 3.5$ so...\nFinal Answer: The final answer is $%s$. I hope it is correct."
)


@pytest.mark.parametrize(
  "text,expected",
  [
    (_RESPONSE % "3.5", "3.5"),
    (_RESPONSE % r"\frac{1}{2}", r"\frac{1}{2}"),
    (_RESPONSE % r"\boxed{7}", "7"),
    ("Final Answer: The final answer is 3.14. I hope it is correct.", "3.14"),
    ("Final Answer: The final answer is 1,000.I hope it is correct.", "1,000"),
    (_RESPONSE % "1" + "\n" + _RESPONSE % "2", "2"),  # the LAST line wins
    ("Final Answer: The final answer is $12$.", "12"),  # cut before "I hope"
    (r"so $\boxed{\frac{\sqrt{3}}{2}}$.", r"\frac{\sqrt{3}}{2}"),
    (r"nested $\boxed{\left\{ 1, \{2\} \right\}}$", r"\left\{ 1, \{2\} \right\}"),
    (r"first $\boxed{1}$ then $\boxed{2}$.", "2"),
    (r"it is \fbox{42}.", "42"),
    (r"it is $\boxed 5$.", "5"),
    (r"our final answer is 9, so $\boxed{10}$", "10"),  # prose is not the paper's line
    (r"$\boxed{3}$. Final Answer: The final answer is $4$. I hope it is correct.", "4"),
    (r"unterminated \boxed{12", None),
    ("no answer here", None),
    ("", None),
    (None, None),
  ],
)
def test_extract_answer(text, expected):
  assert math_reward.extract_answer(text) == expected


def test_extraction_ignores_code_blocks():
  fenced = "```\nFinal Answer: The final answer is $5$. I hope it is correct.\n```"
  assert math_reward.extract_candidates(fenced) == []
  assert math_reward.extract_candidates("So 3.\n```python\nprint(r'\\boxed{5}')") == []
  assert math_reward.extract_answer("```\nx = 1\n```\n$\\boxed{4}$") == "4"


def test_extract_candidates_multiple_boxed():
  assert math_reward.extract_candidates(r"$\boxed{3}$ or $\boxed{5}$") == ["3", "5"]
  assert math_reward.extract_candidates(r"$\boxed{3}$ so $\boxed{3.}$ ok") == ["3."]
  assert math_reward.extract_candidates(r"[asy]label('\boxed{9}');[/asy] $\boxed{2}$") == ["2"]


@pytest.mark.parametrize(
  "raw,expected",
  [
    (r"\text{(C)}", "C"),
    (r"10\text{ cm}^2", "10"),
    (r"45^{\circ}", "45"),
    (r"90^\circ", "90"),
    (r"\dfrac{3}{4}", r"\frac{3}{4}"),
    (r"\tfrac12", r"\frac{1}{2}"),
    (r"\left( 1, 2 \right)", "(1,2)"),
    (r"1,\!000", "1000"),
    (r"1{,}000", "1000"),
    (r"(1,000)", "(1,000)"),
    (r"50\%", "50"),
    (r"\$ 5.", "5"),
    (r"x = 2", "2"),
    (r"\theta=\frac{\pi}{4}", r"\frac{\pi}{4}"),
    (r"2x+3y=6", "2x+3y=6"),
    (r"\pi r^2", r"\pi r^2"),
    (r"3/4", r"\frac{3}{4}"),
    (r".5", "0.5"),
    (r"2\frac{1}{2}", r"\frac{5}{2}"),
    (r"\sqrt2", r"\sqrt{2}"),
    (r"\text{Devon}", "devon"),
    (r"\emptyset", r"\varnothing"),
    (r"11,\! 111,\! 100", "11111100"),
    (r"14 {, }916", "14916"),
    ("1 1/2", r"\frac{3}{2}"),
    ("2 3/2", r"2\cdot\frac{3}{2}"),
    (r"\infty", r"\infty"),
    (r"(3, +\infty)", r"(3,\infty)"),
    ("{1, 2}", r"\{1,2\}"),
    ("{5}", "5"),
    ("(p, q) = (3, 2)", "(3,2)"),
    ("f(2) = 4", "4"),
    ("|x| = 5", "|x|=5"),
    (r"5\text{ apples}", "5"),
    (r"5\text{ or 7}", "5or7"),
    ("28 pct", "28"),
    (r"-2 \le x < 7", "[-2,7)"),
    (r"\sin(90^\circ - x)", r"\sin((\frac{90\pi}{180})-x)"),
    ("185\\\\", "185"),
  ],
)
def test_normalize(raw, expected):
  assert math_reward.normalize(raw) == expected


def test_split_candidates():
  assert math_normalize.split_candidates(r"x=2 \text{ or } x=3") == ["x=2", "x=3"]
  assert math_normalize.split_candidates(r"(1,2), \{3,4\}") == ["(1,2)", r"\{3,4\}"]
  assert math_normalize.split_candidates(r"1 \pm \sqrt{2}") == [r"1 + \sqrt{2}", r"1 - \sqrt{2}"]
  assert math_normalize.split_candidates("1,000") == ["1000"]


def test_verify_and_reward():
  good = _RESPONSE % r"\frac{1}{2}"
  verdict = math_reward.verify(good, "0.5")
  assert verdict.outcome == Outcome.CORRECT and r"\frac{1}{2}" in verdict.detail
  assert math_reward.reward(good, "0.5") == 1.0
  assert math_reward.verify(good, r"\frac{2}{1}").outcome == Outcome.WRONG
  assert math_reward.reward("I give up.", "3") == 0.0
  assert math_reward.verify("I give up.", "3").detail == "no answer found"
  assert math_reward.reward(r"$\boxed{3}$ or maybe $\boxed{5}$", "3") == 0.0
  assert math_reward.reward(r"$\boxed{x+11}$, i.e. $\boxed{11+x}$", "x+11") == 1.0
  assert math_reward.reward(_RESPONSE % "3 or 5", "3") == 0.0
  assert math_reward.reward(_RESPONSE % "x=2, x=3, x=4", "2") == 0.0


def test_time_limit_interrupts_python_work():
  with pytest.raises(math_reward.CheckTimeout), math_symbolic.time_limit(0.05):
    while True:
      pass


def test_sympy_stage_timeout_is_reported_not_wrong():
  verdict = math_reward.verify(_RESPONSE % "(x+2)(x+4)^{3}", "x^4+7x+10", timeout_s=1e-5)
  assert verdict.outcome == Outcome.TIMEOUT, verdict
  assert "exceeded" in verdict.detail


def test_runs_outside_the_main_thread():
  results = []
  thread = threading.Thread(
    target=lambda: results.extend(
      [
        math_reward.is_equivalent(r"\frac{\sqrt2}{2}", r"\frac{1}{\sqrt2}"),
        math_reward.is_equivalent("3", "4"),
      ]
    )
  )
  thread.start()
  thread.join(60)
  assert results == [True, False]


@pytest.mark.parametrize(
  "pred,gold,expected",
  [
    (r"\frac12", r"\frac{1}{2}", True),
    ("0.5", r"\frac{1}{2}", True),
    ("1/2", r"\dfrac{1}{2}", True),
    (r"10\text{ cm}", "10", True),
    ("x=5", "5", True),
    (r"\left(1,2\right)", "(1,2)", True),
    (r"\sqrt2", r"\sqrt{2}", True),
    (r"50\%", "50", True),
    (r"90^\circ", "90", True),
    (r"\pi r^2", r"r^2\pi", False),  # string match only: no algebra
    ("2", "3", False),
    (None, "3", False),
  ],
)
def test_hendrycks_equiv(pred, gold, expected):
  assert math_reward.hendrycks_equiv(pred, gold) is expected


@pytest.mark.parametrize("gold", ["19", r"\frac{2}{3}", r"\pi", "5"])
@pytest.mark.parametrize("bad", [r"\frac{1}{0}", "0/0", r"\infty - \infty"])
def test_undefined_answers_earn_nothing(bad, gold):
  assert math_reward.reward(rf"The answer is \boxed{{{bad}}}.", gold) == 0.0
  assert math_reward.reward(rf"The answer is \boxed{{{bad}}}.", bad) == 0.0  # not even itself


def test_clock_times_and_hendrycks_match_are_guarded():
  assert math_reward.reward(r"The answer is \boxed{12:00}.", "1:00") == 0.0
  assert math_reward.reward(r"The answer is \boxed{12:00}.", "12:00") == 1.0
  assert not math_reward.hendrycks_equiv(r"\frac{1}{0}", r"\frac{1}{0}")


# One row per convention of the math_reward / math_normalize docstrings.
@pytest.mark.parametrize(
  "pred,gold,expected",
  [
    (r"\infty", r"\infty", True),
    (r"+\infty", r"\infty", True),
    (r"-\infty", r"\infty", False),
    (r"\infty", "5", False),
    (r"2\infty", r"\infty", False),
    (r"(-\infty, 3]", r"(-\infty,3]", True),
    (r"[-\infty, 3]", r"(-\infty,3]", False),
    (r"\sqrt{-4}", "2i", True),
    (r"\sqrt{-4}", "2", False),
    ("5 + 10^{-9} i", "5", False),
    (r"11,\! 111,\! 100", "11111100", True),
    ("32, 349", "32349", False),
    ("1,22", "1.22", False),
    (r"\sin(90^\circ - x)", r"\cos x", True),
    (r"90^\circ", r"\frac{\pi}{2}", False),
    ("1 1/2", r"\frac{3}{2}", True),
    ("1 1/2", r"\frac{11}{2}", False),
    (r"10\%", "0.1", True),
    (r"10\%", "10", True),
    ("0.1", r"10\%", False),
    ("28 pct", r"28\%", True),
    (r"y = -\frac12 x + \frac34", "2x + 4y - 3 = 0", True),
    ("x = 3", "2x = 6", True),
    ("x^2 = 9", "x = 3", False),
    ("(p, q) = (3, 2)", "(3, 2)", True),
    ("|x| = 5", "5", False),
    ("x = 5+5+1 = 11", "11", True),
    ("x = 3+3 = 7", "7", False),
    ("{1,2}", r"\{1,2\}", True),
    ("{1,2}", "(1,2)", False),
    (r"5\text{ apples}", "5", True),
    (r"5\text{ or }7", "5", False),
    (r"5 \text{ (or 6)}", "5", False),
    ("3:4", r"\frac{3}{4}", False),
    (r"-2 \le x \le 7", r"x \in [-2, 7]", True),
    (r"(3,\infty) \cup (-\infty,2)", r"(-\infty, 2) \cup (3, \infty)", True),
    (r"\sqrt[10^{6}]{2}", "1", False),
    ("0.3333333", r"\frac{1}{3}", True),
    ("0.0000001", "0.0000002", False),
    (r"5 \vee 6", "5", False),
    ("5(,6)", "5", False),
  ],
)
def test_conventions(pred, gold, expected):
  assert math_reward.is_equivalent(pred, gold) is expected
