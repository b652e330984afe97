"""String side of the MATH checker: answer extraction, LaTeX normalisation, candidate splitting.

Owns everything that works on text alone (no sympy): reading the paper's final-answer line or the
last `\\boxed{}`, turning LaTeX answers into a canonical string, splitting an answer into its
top-level candidates, and the classic Hendrycks `strip_string` normaliser (rewritten here from the
MATH paper's description) used for literature-comparable numbers. `math_reward` builds the
symbolic checks on top.
"""

import re

# The paper's prompt asks for "Final Answer: The final answer is $X$. I hope it is correct."
# X may itself hold periods ("3.5", "\ldots"), so the answer runs up to the closing sentence.
_FINAL_LINE_RE = re.compile(r"the final answer is\s*(.+?)\s*I hope it is correct", re.I | re.S)
# A model that stops before "I hope..." still gets its line read, but only with the "Final
# Answer:" prefix, so prose such as "our final answer is ..." in a solution is not mistaken for it.
_FINAL_TRUNC_RE = re.compile(r"final answer:\s*the final answer is\s*([^\n]+)", re.I)
_ASY_RE = re.compile(r"\[asy\].*?\[/asy\]", re.S)
_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")

_TEXT_CMDS = ("text", "textbf", "textit", "textrm", "mbox", "mathrm", "mathbf", "mathit")
_TEXT_RE = re.compile(r"\\(?:" + "|".join(_TEXT_CMDS) + r")\s*\{")
_UNITS = (
  "units?|square units?|sq units?|cubic units?|cm|centimeters?|mm|millimeters?|km|kilometers?|"
  "meters?|inch(?:es)?|feet|foot|ft|yards?|miles?|mph|degrees?|dollars?|cents?|hours?|hrs?|"
  "minutes?|mins?|seconds?|secs?|days?|weeks?|months?|years?|pounds?|lbs?|ounces?|oz|gallons?|"
  "liters?|grams?|kg|kilograms?|points?|percent|sq|square|cubic|degree|radians?"
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
_LEAD_VAR_RE = re.compile(r"^(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?(?:=|\\in)(?!=)")
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
  Without it, every distinct boxed answer is a candidate (the same answer boxed twice counts
  once; distinctness is judged on `normalize`d strings), so a response that boxes two different
  values is judged as a list of candidates, which a single gold answer never matches.
  """
  if not text or not text.strip():
    return []
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


def _pre_clean(ans: str) -> str:
  s = ans.strip()
  boxes = boxed_all(s)
  if len(boxes) == 1 and _BOX_RE.match(s):
    s = boxes[0]
  s = s.replace("\\$", "").replace("$", "").replace(",\\!", ",").replace("{,}", ",")
  s = re.sub(r"\\[\(\)\[\]]", "", s)
  s = re.sub(r"(?<!\\)\\[!,;:> ]|~|\\q?quad", " ", s)
  s = re.sub(r"\\(?:d|t)frac", r"\\frac", s)
  s = re.sub(r"\\(?:left|right)\.", "", s)
  s = re.sub(r"\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])", "", s)
  s = s.replace("\\displaystyle", "")
  s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree", "", s)
  s = re.sub(r"\\?%|\\text\{\s*percent\s*\}", "", s)
  s = _unwrap_text(s)
  return _fix_thousands(s)


def split_candidates(ans: str) -> list[str]:
  """Splits an answer into its top-level items (commas, `;`, "or", "and"; not inside brackets).

  An item with one `\\pm` stands for two values and is expanded into both.
  """
  s = _pre_clean(ans)
  s = re.sub(r"(?<![a-zA-Z])(?:or|and)(?![a-zA-Z])", ",", s)
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
    if item.count("\\pm") == 1:
      out += [item.replace("\\pm", "+"), item.replace("\\pm", "-")]
    elif item:
      out.append(item)
  return out


def normalize(ans: str) -> str:
  """Canonical string form of one LaTeX answer (see module docstring for what is removed)."""
  s = _pre_clean(ans)
  s = _UNIT_RE.sub("", s.strip())
  s = re.sub(r"\\emptyset", r"\\varnothing", s)
  s = re.sub(r"\\le(?![a-zA-Z])", r"\\leq", s)
  s = re.sub(r"\\ge(?![a-zA-Z])", r"\\geq", s)
  s = re.sub(r"\\ne(?![a-zA-Z])", r"\\neq", s)
  # Keep one space where it separates a command from a letter (`\pi r`), drop every other space.
  s = re.sub(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])", "\\1\0", s)
  s = re.sub(r"\s+", "", s).replace("\0", " ")
  s = s.rstrip(".").strip()
  if s.count("=") <= 1 and _LEAD_VAR_RE.match(s):
    s = _LEAD_VAR_RE.sub("", s)
  s = re.sub(r"^\\in", "", s)
  s = _fix_fracs(s)
  s = re.sub(r"^(-?)(\d+)/(\d+)$", r"\1\\frac{\2}{\3}", s)
  s = re.sub(r"(?<![\d])\.(\d)", r"0.\1", s)
  if m := _MIXED_RE.match(s):  # `15\frac{39}{40}` is a mixed number in MATH answers.
    sign, whole, num, den = m.groups()
    if int(num) < int(den):
      s = f"{sign}\\frac{{{int(whole) * int(den) + int(num)}}}{{{den}}}"
  if re.fullmatch(r"\(([A-Za-z])\)", s):  # multiple choice "(C)" -> "C"
    s = s[1]
  if re.fullmatch(r"[A-Za-z][A-Za-z ]+", s):  # plain words compare case-insensitively
    s = s.lower()
  return s


def _hendrycks_fix_a_slash_b(s: str) -> str:
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
  return _hendrycks_fix_a_slash_b(s)
