"""String side of the MATH checker: answer extraction, LaTeX normalisation, candidate splitting.

Owns everything that works on text alone (no sympy): reading the paper's final-answer line or the
last `\\boxed{}`, turning LaTeX answers into a canonical string, and splitting an answer into its
top-level candidates (the classic Hendrycks normaliser is `hendrycks_normalize`). `math_reward`
builds the symbolic checks on top and lists the conventions the modules implement together.

Text conventions decided here (each tested in tests/rewards/math_reward_test.py):
- Thousands: `,` `,\\!` `{,}` followed by three digits (spaces after the separator allowed:
  `11,\\! 111,\\! 100`) group digits outside brackets; `1,22` and `32, 349` stay two items (a comma
  is never a decimal separator).
- Degrees: `^\\circ` is dropped from an angle (`90^\\circ` = `90`), but inside an answer that holds
  a trig function a number of degrees becomes radians (`\\sin(90^\\circ - x)` = `\\cos x`).
- Mixed numbers: a whole number followed by a proper fraction is their sum (`1 1/2`,
  `1\\frac12` = 3/2, never 11/2); with an improper fraction it is the product LaTeX reads.
- Infinity: `+\\infty` is `\\infty`; `\\in` never eats the `\\in` of `\\infty`.
- Percent: a trailing `\\%`, `%`, `percent`, `percentage` or `pct` is dropped here (MATH golds drop
  it); `is_percent` tells `math_reward` so that `10\\%` also reads as 0.1.
- A leading label is dropped: `x = 5`, `f(x) = 5`, `f(2) = 4`, `(p, q) = (3, 2)`, `x \\in [2, 3]`.
  A label has no digits and no `+ - ^` outside subscripts and numeric arguments; `|x|` is not
  one (`|x| = 5` leaves the sign open). `y = 2x + 3` keeps its left side in `normalize_equation`
  so that it can still be compared as an equation. `\\approx` reads as `=`.
- A variable between two bounds is an interval: `-2 \\le x < 7` = `[-2, 7)`.
- Bare braces with a top-level comma are a set (`{1,2}` = `\\{1,2\\}`); without one they group.
- A trailing `\\text{...}` of words after a value is a unit or label (`5\\text{ apples}` = 5),
  unless it holds a digit or a hedge word ("or", "and", "not", ...).
- Items are split at top-level `,` `;` "or" "and" `\\vee` `\\wedge`; one `\\pm` makes two items
  (inside a set, two elements).
- Extraction ignores fenced code (```) and Asymptote: a "Final Answer" line printed by a program
  is not the model's answer.
"""

import re

# The paper's prompt asks for "Final Answer: The final answer is $X$. I hope it is correct."
# X may itself hold periods ("3.5", "\ldots"), so the answer runs up to the closing sentence.
_FINAL_LINE_RE = re.compile(r"the final answer is\s*(.+?)\s*I hope it is correct", re.I | re.S)
# A model that stops before "I hope..." still gets its line read, but only with the "Final
# Answer:" prefix, so prose such as "our final answer is ..." in a solution is not mistaken for it.
_FINAL_TRUNC_RE = re.compile(r"final answer:\s*the final answer is\s*([^\n]+)", re.I)
_ASY_RE = re.compile(r"\[asy\].*?\[/asy\]", re.S)
# Fenced code is a program, not the answer: an unterminated fence runs to the end of the text.
_CODE_RE = re.compile(r"```.*?(?:```|\Z)", re.S)
_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")

_TEXT_CMDS = ("text", "textbf", "textit", "textrm", "mbox", "mathrm", "mathbf", "mathit")
_TEXT_RE = re.compile(r"\\(?:" + "|".join(_TEXT_CMDS) + r")\s*\{")
_UNITS = (
  "units?|square units?|sq units?|cubic units?|cm|centimeters?|mm|millimeters?|km|kilometers?|"
  "meters?|inch(?:es)?|feet|foot|ft|yards?|miles?|mph|degrees?|dollars?|cents?|hours?|hrs?|"
  "minutes?|mins?|seconds?|secs?|days?|weeks?|months?|years?|pounds?|lbs?|ounces?|oz|gallons?|"
  "liters?|grams?|kg|kilograms?|points?|percentage|percent|pct|sq|square|cubic|degree|radians?"
)
# Units only go when they trail a value (a digit, a closing bracket, or a word/command after a
# space: `\pi cm`), never alone or inside a word, so "\text{feet}" and "Thursday" survive.
_UNIT_RE = re.compile(
  r"(?:(?<=[\d}\)\]])\s*|(?<=[a-zA-Z])\s+)(?:(?:square|sq|cubic)\s+)?(?:"
  + _UNITS
  + r")(?:\^\{?\d\}?)?\s*$",
  re.I,
)
_THOUSANDS_RE = re.compile(r"(?<![\d.,])(\d{1,3})((?:,\d{3})+)(?![\d,])")
_MIXED_RE = re.compile(r"^(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$")
# A left side that names the answer rather than constrains it: no digits, no arithmetic.
_LABEL_RE = re.compile(r"[^\d+\-^*/<>!=]+")
_SUBSCRIPT_RE = re.compile(r"_(?:\{[^{}]*\}|\w)")
_CALL_RE = re.compile(r"[a-zA-Z]\(\s*-?[\d.,\s]+\)")
_BETWEEN_RE = re.compile(r"([^<>=]+?)(<|\\leq)([^<>=]+?)(<|\\leq)([^<>=]+)")
_PLUS_INF_RE = re.compile(r"(^|[(\[,{=])\+\\infty")
_MIXED_SLASH_RE = re.compile(r"^(-?\d+)\s+(\d+)\s*/\s*(\d+)$")
_TRIG_RE = re.compile(r"\\(?:sin|cos|tan|cot|sec|csc)(?![a-zA-Z])")
_DEGREE = r"\s*(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree)"
_DEGREE_NUM_RE = re.compile(r"(\d+(?:\.\d+)?)" + _DEGREE)
_DEGREE_RE = re.compile(_DEGREE)
_PERCENT_RE = re.compile(
  r"(?:\\?%|\\text\{\s*(?:percent(?:age)?|pct)\s*\}|(?<![a-zA-Z])(?:percent(?:age)?|pct))[\s.$]*$"
)
_TEXT_SUFFIX_RE = re.compile(
  r"(?<=[\d}\)\]])\s*\\(?:text|textbf|textit|textrm|textnormal|mbox)\s*"
  r"\{(\s+[A-Za-z][A-Za-z .']*|[A-Za-z][A-Za-z .']+)\}(?:\^\{?\d\}?)?\s*$"
)
_HEDGE_WORD_RE = re.compile(
  r"(?<![a-zA-Z])(?:or|and|not|nor|but|except|plus|minus|times)(?![a-zA-Z])", re.I
)
_OPEN, _CLOSE = "([{", ")]}"


def braced(text: str, start: int) -> tuple[str, int] | None:
  """Returns (content, end index after `}`) of the brace group opening at `text[start]`."""
  if start >= len(text) or text[start] != "{":
    return None
  depth = 0
  for i in range(start, len(text)):
    if text[i] == "\\":
      continue
    if text[i] == "{" and text[i - 1 : i] != "\\":
      depth += 1
    elif text[i] == "}" and text[i - 1 : i] != "\\":
      depth -= 1
      if depth == 0:
        return text[start + 1 : i], i + 1
  return None


def boxed_all(text: str) -> list[str]:
  """Every `\\boxed{...}` / `\\fbox{...}` / `\\boxed 5` content in order (unterminated skipped)."""
  found = []
  text = _ASY_RE.sub("", text)  # Asymptote code may print "\boxed" labels of its own
  for m in _BOX_RE.finditer(text):
    i = m.end()
    while i < len(text) and text[i] == " ":
      i += 1
    group = braced(text, i)
    if group is not None:
      found.append(group[0].strip())
    elif i > m.end():  # `\boxed 5`: the argument is the next whitespace/`$`-delimited token.
      token = re.match(r"[^\s$]+", text[i:])
      if token:
        found.append(token.group(0).rstrip(".,"))
  # `\phantom{..}` boxes are table alignment, not answers.
  found = [re.sub(r"\\phantom\s*\{[^{}]*\}", "", f).strip() for f in found]
  return [f for f in found if f]


def _clean_final(x: str) -> str:
  x = x.strip().rstrip(".").strip()
  boxes = boxed_all(x)
  if len(boxes) == 1:
    x = boxes[0]
  if len(x) >= 2 and x[0] == "$" and x[-1] == "$":
    x = x.strip("$")
  return x.strip().rstrip(".").strip()


def extract_candidates(text: str | None) -> list[str]:
  """All answers a response commits to, the declared one last.

  The LAST "The final answer is X. I hope it is correct." line wins and is the only candidate.
  Lines and boxes inside fenced code blocks (```) or Asymptote code do not count.
  Without it, every distinct boxed answer is a candidate (the same answer boxed twice counts
  once; distinctness is judged on `normalize`d strings), so a response that boxes two different
  values is judged as a list of candidates, which a single gold answer never matches.
  """
  if not text or not text.strip():
    return []
  text = _CODE_RE.sub("", text)  # a "Final Answer" line or a box printed by code is not one
  finals = _FINAL_LINE_RE.findall(text) or _FINAL_TRUNC_RE.findall(text)
  if finals:
    x = _clean_final(finals[-1])
    return [x] if x else []
  seen: dict[str, str] = {}
  for box in boxed_all(text):
    seen.pop(normalize(box), None)  # re-insert so the order follows the last occurrence
    seen[normalize(box)] = box
  return list(seen.values())


def extract_answer(text: str | None) -> str | None:
  """The final answer of a response: the last final-answer line, else the last boxed; or None."""
  candidates = extract_candidates(text)
  return candidates[-1] if candidates else None


def _unwrap_text(s: str) -> str:
  while m := _TEXT_RE.search(s):
    group = braced(s, m.end() - 1)
    if group is None:
      break
    s = s[: m.start()] + group[0] + s[group[1] :]
  return s


def _fix_thousands(s: str) -> str:
  # `(1,000)` is a tuple, never a grouped number: leave bracketed answers alone.
  if any(c in s for c in "()[]") or "\\{" in s:
    return s
  return _THOUSANDS_RE.sub(lambda m: m.group(1) + m.group(2).replace(",", ""), s)


def _fix_fracs(s: str) -> str:
  # `\frac12` -> `\frac{1}{2}`, `\frac1{x}` -> `\frac{1}{x}`, `\sqrt2` -> `\sqrt{2}`.
  s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
  s = re.sub(r"\\frac\s*(\d)\s*(?=\{)", r"\\frac{\1}", s)
  s = re.sub(r"\\frac(\{[^{}]*\})\s*(\d)", r"\\frac\1{\2}", s)
  return re.sub(r"\\sqrt\s*([0-9a-zA-Z])", r"\\sqrt{\1}", s)


def _drop_text_suffix(s: str) -> str:
  # `5\text{ apples}` is 5, but `5\text{ or 7}` / `5\text{ percent}` keep their words.
  m = _TEXT_SUFFIX_RE.search(s)
  if m is None or _HEDGE_WORD_RE.search(m.group(1)) or _PERCENT_RE.fullmatch(m.group(1).strip()):
    return s
  return s[: m.start()]


def _degrees(s: str) -> str:
  # Inside a trig function `90^\circ` is an angle in radians' clothing; elsewhere (`45^\circ`
  # as an answer) the sign is dropped, as MATH golds drop it.
  if _TRIG_RE.search(s):
    s = _DEGREE_NUM_RE.sub(r"(\\frac{\1\\pi}{180})", s)
  return _DEGREE_RE.sub("", s)


def _pre_clean(ans: str) -> str:
  s = ans.strip()
  boxes = boxed_all(s)
  if len(boxes) == 1 and _BOX_RE.match(s):
    s = boxes[0]
  s = s.replace("\\$", "").replace("$", "")
  # Thin-space and braced thousands separators, spaces after them allowed (`11,\\! 111`).
  s = re.sub(r",\s*\\!\s*|\s*\{\s*,\s*\}\s*", ",", s)
  s = re.sub(r"\\[\(\)\[\]]|(?:\\\\\s*)+$", "", s)  # math delimiters, trailing line breaks
  s = re.sub(r"(?<!\\)\\[!,;:> ]|~|\\q?quad", " ", s)
  s = re.sub(r"\\(?:d|t|c)frac", r"\\frac", s)
  s = re.sub(r"\\(?:left|right)\.", "", s)
  s = re.sub(r"\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])", "", s)
  s = s.replace("\\displaystyle", "")
  s = _degrees(s)
  s = _unwrap_text(_drop_text_suffix(s.strip()))
  return _fix_thousands(s)


def is_percent(ans: str) -> bool:
  """Whether one answer item ends in a percent sign or word (`10\\%`, `28 pct`, `5 percent`)."""
  return bool(_PERCENT_RE.search(_unwrap_text(ans.replace("$", "")).strip()))


def split_candidates(ans: str) -> list[str]:
  """Splits an answer into top-level items (`,` `;` "or" "and" `\\vee` `\\wedge`; not in brackets).

  An item with one `\\pm` stands for two values and is expanded into both.
  """
  s = _pre_clean(ans)
  s = re.sub(r"(?<![a-zA-Z])(?:or|and)(?![a-zA-Z])|\\(?:vee|lor|wedge|land)(?![a-zA-Z])", ",", s)
  items, depth, cur = [], 0, ""
  for i, c in enumerate(s):
    prev = s[i - 1] if i else ""
    if c in _OPEN:
      depth += 1
    elif c in _CLOSE:
      depth -= 1
    if c in ",;" and depth == 0 and prev != "\\":
      items.append(cur)
      cur = ""
    else:
      cur += c
  items.append(cur)
  out = []
  for item in (t.strip() for t in items):
    if item.count("\\pm") == 1 and not item.startswith("\\{"):  # a set expands its own items
      out += [item.replace("\\pm", "+"), item.replace("\\pm", "-")]
    elif item:
      out.append(item)
  return out


def _plain_equals(s: str) -> list[int]:
  """Positions of the top-level `=` that are equalities (not `<=`, `==`, nor `\\sum_{k=0}`)."""
  depth, found = 0, []
  for i, c in enumerate(s):
    depth += (c in _OPEN) - (c in _CLOSE)
    if (
      c == "="
      and depth == 0
      and s[i - 1 : i] not in ("<", ">", "!", "=")
      and s[i + 1 : i + 2] != "="
    ):
      found.append(i)
  return found


def _is_label(lhs: str) -> bool:
  # `|x| = 5` leaves the sign open (two values): an equation, not a label; `|AB|` is a length.
  if re.search(r"\|\s*\\?[a-zA-Z]\s*\|", lhs):
    return False
  name = _CALL_RE.sub("f", _SUBSCRIPT_RE.sub("", lhs))  # `a_{10}`, `f(2)`, `P(-1)` name values
  return bool(lhs) and bool(_LABEL_RE.fullmatch(name))


def _strip_label(s: str) -> str:
  """`x=5` -> `5`, `(p,q)=(3,2)` -> `(3,2)`, `x\\in[2,3]` -> `[2,3]`; equations stay whole."""
  eqs = _plain_equals(s)
  if len(eqs) == 1 and _is_label(s[: eqs[0]]):
    return s[eqs[0] + 1 :]
  m = re.search(r"\\in(?![a-zA-Z])", s)
  if not eqs and m and (m.start() == 0 or _is_label(s[: m.start()])):
    return s[m.end() :]
  return s


def _double_inequality(s: str) -> str:
  """`-2\\leq x<7` -> `[-2,7)`: a variable between two bounds is an interval."""
  m = _BETWEEN_RE.fullmatch(s)
  if m is None or not _is_label(m.group(3)):
    return s
  lo, op1, _, op2, hi = m.groups()
  return ("(" if op1 == "<" else "[") + lo + "," + hi + (")" if op2 == "<" else "]")


def _bare_braces(s: str) -> str:
  # `{1,2}` is a set written without `\\{`; `{5}` is only grouping.
  group = braced(s, 0)
  if group is None or group[1] != len(s):
    return s
  inner = group[0]
  depth = 0
  for c in inner:
    depth += (c in _OPEN) - (c in _CLOSE)
    if c == "," and depth == 0:
      return "\\{" + inner + "\\}"
  return inner


def normalize(ans: str, *, keep_label: bool = False) -> str:
  """Canonical string form of one LaTeX answer (module docstring: what is removed or rewritten).

  Args:
    ans: one answer item.
    keep_label: keep a leading `y =` so that `y = 2x + 3` stays an equation (`normalize_equation`).
  """
  s = _pre_clean(ans)
  s = re.sub(r"\\?%", "", s)
  s = _UNIT_RE.sub("", s.strip())
  s = _MIXED_SLASH_RE.sub(r"\1\\frac{\2}{\3}", s.strip())  # `1 1/2` before spaces go
  s = re.sub(r"\\emptyset", r"\\varnothing", s)
  s = re.sub(r"\\le(?![a-zA-Z])", r"\\leq", s)
  s = re.sub(r"\\ge(?![a-zA-Z])", r"\\geq", s)
  s = re.sub(r"\\ne(?![a-zA-Z])", r"\\neq", s)
  s = s.replace("<=", "\\leq ").replace(">=", "\\geq ").replace("!=", "\\neq ")
  s = re.sub(r"\\approx(?![a-zA-Z])", "=", s)
  s = re.sub(r"_(\w)(?=\s)", r"_{\1}", s)  # `\log_2 8` must not become `\log_28`
  # Keep one space where it separates a command from a letter (`\pi r`), drop every other space.
  s = re.sub(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])", "\\1\0", s)
  s = re.sub(r"\s+", "", s).replace("\0", " ")
  s = s.rstrip(".").strip()
  s = _PLUS_INF_RE.sub(r"\1\\infty", s)
  if not keep_label:
    s = _strip_label(s)
  s = _double_inequality(s)
  s = _bare_braces(s)
  s = _fix_fracs(s)
  s = re.sub(r"^(-?)(\d+)/(\d+)$", r"\1\\frac{\2}{\3}", s)
  s = re.sub(r"(?<![\d])\.(\d)", r"0.\1", s)
  if m := _MIXED_RE.match(s):  # `15\frac{39}{40}` is a mixed number in MATH answers.
    sign, whole, num, den = m.groups()
    if int(num) < int(den):
      s = f"{sign}\\frac{{{int(whole) * int(den) + int(num)}}}{{{den}}}"
    else:  # not a mixed number: the product LaTeX juxtaposition means (the parser would add)
      s = f"{sign}{whole}\\cdot\\frac{{{num}}}{{{den}}}"
  if re.fullmatch(r"\(([A-Za-z])\)", s):  # multiple choice "(C)" -> "C"
    s = s[1]
  if re.fullmatch(r"[A-Za-z][A-Za-z ]+", s):  # plain words compare case-insensitively
    s = s.lower()
  return s


def equation_sides(s: str) -> tuple[str, str] | None:
  """(lhs, rhs) when normalised text is one equation at top level (not `<=`, not `\\sum_{k=0}`)."""
  eqs = _plain_equals(s)
  return (s[: eqs[0]], s[eqs[0] + 1 :]) if len(eqs) == 1 else None


def normalize_equation(ans: str) -> str | None:
  """`normalize` keeping a leading label, when the answer is one equation (`y = 2x + 3`)."""
  s = normalize(ans, keep_label=True)
  return s if len(_plain_equals(s)) == 1 else None


def chain_members(s: str) -> list[str]:
  """Members of a normalised chain of equalities `a=b=c` (two or more `=`), label dropped."""
  eqs = _plain_equals(s)
  if len(eqs) < 2:
    return []
  members = [s[i + 1 : j] for i, j in zip([-1, *eqs], [*eqs, len(s)])]
  return members[1:] if _is_label(members[0]) else members
