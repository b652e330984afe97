"""The paper's prompts and correction instructions, verbatim, and code extraction from answers.

Owns the first-turn prompts (`math_first_turn`, `mbpp_first_turn`, `humaneval_first_turn`), the
second-turn instruction (`correction_instruction`) and `extract_code`. Each returns the text of
one user message; the chat template (score_jax.data.chat) wraps it.

Verbatim from SCoRe Appendix C (the paper's prompts): MATH_INSTRUCTION,
MATH_CORRECTION, MATH_CORRECTION_SHORT (the form in the paper's Figure 2 traces), the MBPP
3-shot format of Austin et al. (2021) and CODE_CORRECTION. Our choices (the paper does not say):
  * MATH: the problem follows the instruction as "\n\nProblem:\n{problem}".
  * MBPP: shots and target are joined with "\n"; the shots' code has CRLF turned into LF (the
    MBPP file stores CRLF line ends, which tokenizers would otherwise see as stray '\r').
  * HumanEval: HUMANEVAL_INSTRUCTION followed by the prompt in a ```python fence, asking for the
    complete function so the extracted program runs by itself against the tests.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from score_jax.data import records

MATH_INSTRUCTION = (
  "You are a math expert. When you respond, respond only with the Solution of the final "
  "Problem, thinking step by step. At the end of the Solution, when you give your final answer, "
  'write it in the form "Final Answer: The final answer is $answer$. I hope it is correct."'
)
MATH_CORRECTION = (
  "There might be an error in the solution above because of lack of understanding of the "
  "question. Please correct the error, if any, and rewrite the solution. Only output the final "
  "solution! At the end of the Solution, when you give your final answer, write it in the form "
  '"Final Answer: The final answer is $answer$. I hope it is correct."'
)
MATH_CORRECTION_SHORT = (
  "There might be an error in the solution above because of lack of understanding of the "
  "question. Please correct the error, if any, and rewrite the solution."
)
CODE_CORRECTION = (
  "There might be an error in the code above because of lack of understanding of the question. "
  "Please correct the error, if any, and rewrite the solution. Only output the final correct "
  "Python program!"
)
MBPP_TEMPLATE = (
  "You are an expert Python programmer, and here is your task: {text} Your code should pass "
  "these tests:\n\n{tests}\n[BEGIN]\n"
)
HUMANEVAL_INSTRUCTION = (
  "You are an expert Python programmer. Complete the following Python function. Output the "
  "complete function (signature, docstring and body) together with the imports it needs, as "
  "one Python program."
)

# Self-Refine (Madaan et al., 2023) as a single turn-2 prompt: critique the previous attempt, then
# revise it. The paper gives no Self-Refine prompt; this one keeps SCoRe's answer format so the
# same checker scores it, and (unlike SCoRe's instruction) asks for feedback before the rewrite.
MATH_SELF_REFINE = (
  "Review your solution above. First give feedback: check each step and name any error you "
  "find, or say that there is none. Then write the refined solution. At the end of the "
  'Solution, when you give your final answer, write it in the form "Final Answer: The final '
  'answer is $answer$. I hope it is correct."'
)
CODE_SELF_REFINE = (
  "Review your code above. First give feedback: check it against the task and the tests and "
  "name any bug you find, or say that there is none. Then write the refined Python program."
)
# The testbed's short form (its pretraining corpus never shows a critique, so this is also a
# test of whether a prompting-only method helps a model that was not taught to follow it).
MATH_SELF_REFINE_SHORT = "Check the solution above for errors, then write it again."

_SELF_REFINE = {
  "math": MATH_SELF_REFINE,
  "math_short": MATH_SELF_REFINE_SHORT,
  "code": CODE_SELF_REFINE,
  "mbpp": CODE_SELF_REFINE,
  "humaneval": CODE_SELF_REFINE,
}

_CORRECTIONS = {
  "math": MATH_CORRECTION,
  "math_short": MATH_CORRECTION_SHORT,
  "code": CODE_CORRECTION,
  "mbpp": CODE_CORRECTION,
  "humaneval": CODE_CORRECTION,
}


def math_first_turn(example: records.Example) -> str:
  """The zero-shot MATH prompt for one problem."""
  return f"{MATH_INSTRUCTION}\n\nProblem:\n{example.question}"


def _mbpp_block(example: records.Example) -> str:
  if not example.tests:
    raise ValueError(f"MBPP example {example.id} has no tests to show in the prompt")
  return MBPP_TEMPLATE.format(text=example.question, tests="\n".join(example.tests))


def mbpp_first_turn(example: records.Example, shots: Sequence[records.Example]) -> str:
  """The canonical few-shot MBPP prompt, ending in "[BEGIN]\\n" for the model's program.

  Args:
    example: the target problem; its reference code is never shown.
    shots: the solved examples, normally `mbpp_data.load_mbpp_shots()` (tasks 2, 3, 4).
  """
  for shot in shots:
    if shot.id == example.id:
      raise ValueError(f"mbpp_first_turn: target {example.id} is also a shot (leaks its code)")
  parts = [_mbpp_block(s) + s.answer.replace("\r\n", "\n") + "\n[DONE]" for s in shots]
  return "\n".join([*parts, _mbpp_block(example)])


def humaneval_first_turn(example: records.Example) -> str:
  """The zero-shot HumanEval prompt (our choice; the paper does not state it)."""
  return f"{HUMANEVAL_INSTRUCTION}\n\n```python\n{example.question.rstrip()}\n```"


def correction_instruction(task: str) -> str:
  """The second-turn instruction: task 'math', 'math_short', or 'code' ('mbpp', 'humaneval')."""
  if task not in _CORRECTIONS:
    raise ValueError(
      f"correction_instruction: task must be one of {sorted(_CORRECTIONS)}, got {task!r}"
    )
  return _CORRECTIONS[task]


def self_refine_instruction(task: str) -> str:
  """Self-Refine's critique-then-revise second-turn prompt for task 'math', 'math_short', 'code'."""
  if task not in _SELF_REFINE:
    raise ValueError(
      f"self_refine_instruction: task must be one of {sorted(_SELF_REFINE)}, got {task!r}"
    )
  return _SELF_REFINE[task]


_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(text: str) -> str:
  """The program in a code answer.

  In order: the text before the first "[DONE]" (after the last "[BEGIN]" before it, if any); then
  the first ```python (or ```py / ```python3) fenced block, else the first fenced block of any
  language; else the raw text. Fences inside a [BEGIN]/[DONE] span are unwrapped too. Leading
  blank lines and trailing whitespace are dropped; leading indentation is kept (a HumanEval body
  continues the prompt's indentation).
  """
  if "[DONE]" in text:
    text = text[: text.index("[DONE]")]
    if "[BEGIN]" in text:
      text = text[text.rindex("[BEGIN]") + len("[BEGIN]") :]
  elif "[BEGIN]" in text:
    text = text[text.rindex("[BEGIN]") + len("[BEGIN]") :]
  blocks = _FENCE_RE.findall(text)
  if blocks:
    python = [body for lang, body in blocks if lang.lower() in ("python", "py", "python3")]
    text = python[0] if python else blocks[0][1]
  return re.sub(r"^(?:[ \t]*\n)+", "", text).rstrip()
