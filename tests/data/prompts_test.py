"""Tests for the prompts: the paper's text verbatim, the MBPP 3-shot layout, code extraction."""

import pytest

from score_jax.data import humaneval_data, math_data, mbpp_data, prompts

# Copied by hand from the paper's Appendix C (line breaks there are wrapping only).
PAPER_MATH = (
  "You are a math expert. When you respond, respond only with the Solution of the final Problem, "
  "thinking step by step. At the end of the Solution, when you give your final answer, write it in "
  'the form "Final Answer: The final answer is $answer$. I hope it is correct."'
)
PAPER_MATH_CORRECTION = (
  "There might be an error in the solution above because of lack of understanding of the question. "
  "Please correct the error, if any, and rewrite the solution. Only output the final solution! At "
  'the end of the Solution, when you give your final answer, write it in the form "Final Answer: '
  'The final answer is $answer$. I hope it is correct."'
)
PAPER_CODE_CORRECTION = (
  "There might be an error in the code above because of lack of understanding of the question. "
  "Please correct the error, if any, and rewrite the solution. Only output the final correct "
  "Python program!"
)
PAPER_MBPP_FORMAT = (
  "You are an expert Python programmer, and here is your task: {text} Your code should pass these "
  "tests:\n\n{tests}\n[BEGIN]\n{code}\n[DONE]"
)


def test_math_prompts_verbatim():
  example = math_data.load_math("test")[0]
  assert prompts.MATH_INSTRUCTION == PAPER_MATH
  assert prompts.math_first_turn(example) == f"{PAPER_MATH}\n\nProblem:\n{example.question}"
  assert prompts.correction_instruction("math") == PAPER_MATH_CORRECTION
  short = prompts.correction_instruction("math_short")
  assert short.endswith("and rewrite the solution.") and PAPER_MATH_CORRECTION.startswith(short)


def test_code_correction_verbatim():
  for task in ("code", "mbpp", "humaneval"):
    assert prompts.correction_instruction(task) == PAPER_CODE_CORRECTION
  with pytest.raises(ValueError, match=r"task must be one of .*got 'gsm8k'"):
    prompts.correction_instruction("gsm8k")


def test_mbpp_three_shot():
  shots = mbpp_data.load_mbpp_shots()
  target = mbpp_data.load_mbpp("test")[5]
  prompt = prompts.mbpp_first_turn(target, shots)
  expected_shots = [
    PAPER_MBPP_FORMAT.format(
      text=s.question, tests="\n".join(s.tests), code=s.answer.replace("\r\n", "\n")
    )
    for s in shots
  ]
  target_part = PAPER_MBPP_FORMAT.format(
    text=target.question, tests="\n".join(target.tests), code=""
  ).removesuffix("\n[DONE]")
  assert prompt == "\n".join([*expected_shots, target_part])
  assert prompt.endswith("[BEGIN]\n") and prompt.count("[BEGIN]") == 4
  for name in ("similar_elements", "is_not_prime", "heap_queue_largest"):
    assert f"def {name}(" in prompt
  body = target.answer.replace("\r\n", "\n").splitlines()
  assert f"def {target.entry_point}(" not in prompt
  assert not any(line in prompt for line in body if len(line) > 12)
  assert "\r" not in prompt
  with pytest.raises(ValueError, match=r"target mbpp/3 is also a shot"):
    prompts.mbpp_first_turn(shots[1], shots)


def test_humaneval_prompt():
  example = humaneval_data.load_humaneval()[2]
  prompt = prompts.humaneval_first_turn(example)
  assert prompt.startswith(prompts.HUMANEVAL_INSTRUCTION)
  assert example.question.rstrip() in prompt and prompt.endswith("```")
  assert example.answer.strip() not in prompt


@pytest.mark.parametrize(
  "text, code",
  [
    ("def f(x):\n    return x\n[DONE]\nmore text [DONE]", "def f(x):\n    return x"),
    ("Sure.\n[BEGIN]\ndef f():\n  pass\n[DONE]", "def f():\n  pass"),
    ("[BEGIN]\n```python\nz = 1\n```\n[DONE]", "z = 1"),
    ("Fixed:\n```python\ndef g():\n  return 2\n```\nDone.", "def g():\n  return 2"),
    ("```text\nnot code\n```\n```py\nx = 3\n```", "x = 3"),
    ("```\nprint(1)\n```", "print(1)"),
    ("```python\ny = 4\n", "y = 4"),  # unterminated fence: to the end
    ("\n\n    return a + b\n", "    return a + b"),  # HumanEval body keeps its indentation
    ("", ""),
  ],
)
def test_extract_code(text, code):
  assert prompts.extract_code(text) == code


def test_extracted_reference_program_passes_its_tests():
  # Round trip through the prompt format: a model answer in the shots' own style yields a program
  # that passes the task's tests in a real interpreter.
  target = mbpp_data.load_mbpp("test")[0]
  program = prompts.extract_code(target.answer.replace("\r\n", "\n") + "\n[DONE]")
  exec("\n".join([program, target.setup_code, *target.tests]), {})  # noqa: S102
