"""The classic Hendrycks MATH `strip_string` normaliser, for literature-comparable numbers.

Rewritten here from the MATH paper's description. Only `math_reward.hendrycks_equiv` uses it: the
reward itself normalises with `math_normalize`, whose conventions are far more complete.
"""

import re


def _fix_a_slash_b(s: str) -> str:
  parts = s.split("/")
  if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
    return f"\\frac{{{parts[0]}}}{{{parts[1]}}}"
  return s


def strip_string(s: str) -> str:
  """The Hendrycks MATH `strip_string` normaliser, reimplemented from the MATH paper's code."""
  s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
  s = s.replace("tfrac", "frac").replace("dfrac", "frac")
  s = s.replace("\\left", "").replace("\\right", "")
  s = s.replace("^{\\circ}", "").replace("^\\circ", "")
  s = s.replace("\\$", "")
  if "\\text{ " in s:  # units: everything from the last "\text{ " on
    s = s.split("\\text{ ")[0]
  s = s.replace("\\%", "").replace("%", "")
  s = s.replace(" .", " 0.").replace("{.", "{0.")
  if not s:
    return s
  if s[0] == ".":
    s = "0" + s
  if len(s.split("=")) == 2 and len(s.split("=")[0]) <= 2:
    s = s.split("=")[1]
  s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
  s = s.replace(" ", "")
  s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
  s = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", s)
  s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)
  if s == "0.5":
    s = "\\frac{1}{2}"
  return _fix_a_slash_b(s)
