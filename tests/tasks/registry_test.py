"""The task registry: built-ins, registration, unknown names, and scoring by the spec's rule."""

import dataclasses
import subprocess
import sys
import types

import numpy as np
import pytest

from score_jax import tasks
from score_jax.data import prompts, records
from score_jax.rewards.outcome import Outcome

EX = records.Example(id="x/0", question="What is 2+3?", answer="5", tests=("assert f() == 1",))
ANSWER = "Final Answer: The final answer is 5. I hope it is correct."


def _spec(name="toy", **overrides):
  fields = dict(
    name=name,
    kind="math",
    load=lambda split, path, size: [EX] * size,
    first_turn=lambda ex, shots: f"Q: {ex.question}",
    correction="Try again.",
    final_answer=lambda text: text.strip()[-1:],
    reward_item=lambda ex, text: ("math", (text, ex.answer)),
  )
  return tasks.TaskSpec(**{**fields, **overrides})


@pytest.fixture
def toy_task():
  spec = tasks.register(_spec())
  yield spec
  tasks.unregister(spec.name)


def test_builtins_are_registered():
  names = tasks.registered_names()
  assert {"math", "mbpp", "humaneval", "procedural:<reasoning-gym task>"} <= set(names)
  assert tasks.get_spec("procedural:chain_sum").name == "procedural:chain_sum"


@pytest.mark.parametrize(
  "name, kind, correction",
  [
    ("math", "math", "math"),
    ("mbpp", "code", "code"),
    ("humaneval", "code", "code"),
    ("procedural:chain_sum", "math", "math"),
  ],
)
def test_builtin_kind_and_correction(name, kind, correction):
  spec = tasks.get_spec(name)
  assert spec.kind == kind
  assert spec.correction == prompts.correction_instruction(correction)


def test_builtin_first_turns():
  shots = [dataclasses.replace(EX, id=f"shot/{i}") for i in range(3)]
  assert tasks.get_spec("math").first_turn(EX, []) == prompts.math_first_turn(EX)
  assert tasks.get_spec("procedural:chain_sum").first_turn(EX, []) == prompts.math_first_turn(EX)
  assert tasks.get_spec("mbpp").first_turn(EX, shots) == prompts.mbpp_first_turn(EX, shots)
  assert tasks.get_spec("humaneval").first_turn(EX, []) == prompts.humaneval_first_turn(EX)


def test_builtin_reward_rules():
  assert tasks.get_spec("math").reward_item(EX, ANSWER) == ("math", (ANSWER, "5"))
  code = "```python\ndef f():\n  return 1\n```"
  item = tasks.get_spec("mbpp").reward_item(EX, code)
  assert item == ("code", ("def f():\n  return 1", ["assert f() == 1"], EX.setup_code))
  procedural = tasks.get_spec("procedural:chain_sum")
  assert procedural.reward_item is None and procedural.host_check is not None
  assert tasks.get_spec("math").final_answer(ANSWER) == "5"


def test_loaded_task_carries_the_spec():
  task = tasks.load_task("mbpp", "test")
  assert task.name == "mbpp" and task.kind == "code" and len(task.shots) == 3
  assert task.first_turn(task.examples[0]) == prompts.mbpp_first_turn(task.examples[0], task.shots)
  assert task.correction() == prompts.correction_instruction("code")
  del task.examples[1:]  # callers trim the list in place
  assert len(task.examples) == 1


def test_unknown_name_lists_the_registered_ones_and_how_to_register():
  with pytest.raises(tasks.UnknownTaskError, match=r"unknown task 'nope'.*math.*register"):
    tasks.load_task("nope", "train")
  for bad in ("procedural:", "other:thing", 3):
    assert not tasks.is_registered(bad)


def test_register_a_task(toy_task):
  task = tasks.load_task("toy", "train", procedural_size=3)
  assert task.spec is toy_task and len(task.examples) == 3 and task.shots == []
  assert task.first_turn(EX) == "Q: What is 2+3?" and task.correction() == "Try again."
  assert "toy" in tasks.registered_names()
  with pytest.raises(ValueError, match="already registered"):
    tasks.register(_spec())
  tasks.register(_spec(correction="Again."), replace=True)
  assert tasks.load_task("toy", "train", procedural_size=1).correction() == "Again."


def test_register_a_family():
  tasks.register_family("toyfam", lambda v: _spec(f"toyfam:{v}"), variant="size")
  try:
    assert tasks.get_spec("toyfam:big").name == "toyfam:big"
    assert "toyfam:<size>" in tasks.registered_names()
  finally:
    tasks.unregister("toyfam:")
  assert not tasks.is_registered("toyfam:big")


def test_spec_checks_its_fields():
  with pytest.raises(ValueError, match="kind"):
    _spec(kind="poetry")
  with pytest.raises(ValueError, match="exactly one of reward_item and host_check"):
    _spec(host_check=lambda ex, text: True)
  with pytest.raises(ValueError, match="reserved for families"):
    tasks.register(_spec("a:b"))


class _FakePool:
  """Scores math items by exact answer match; records what it was sent."""

  def __init__(self):
    self.items = []

  def score(self, items):
    self.items += items
    ok = [payload[0].endswith(f"is {payload[1]}. I hope it is correct.") for _, payload in items]
    codes = [Outcome.CORRECT if o else Outcome.WRONG for o in ok]
    return types.SimpleNamespace(outcomes=np.array(codes, np.int8))


def test_score_attempts_through_the_pool(toy_task):
  task = tasks.load_task("toy", "train", procedural_size=2)
  pool = _FakePool()
  rewards, outcomes, counts = tasks.score_attempts(pool, task, task.examples, [[ANSWER, "no"]] * 2)
  assert rewards.dtype == np.float32 and outcomes.dtype == np.int8 and rewards.shape == (2, 2)
  assert rewards.tolist() == [[1.0, 0.0], [1.0, 0.0]]
  assert counts == {"correct": 2, "wrong": 2, "timeout": 0, "error": 0}
  assert pool.items[0] == ("math", (ANSWER, "5"))


def test_host_checked_task_counts_a_crash_as_error():
  def check(ex, text):
    if text == "boom":
      raise RuntimeError("checker crashed")
    return text == ANSWER

  task = tasks.Task(_spec(reward_item=None, host_check=check), [EX, EX])
  rewards, outcomes, counts = tasks.score_attempts(
    None, task, task.examples, [[ANSWER, "boom"]] * 2
  )
  assert rewards.tolist() == [[1.0, 0.0], [1.0, 0.0]]
  assert outcomes[0, 1] == Outcome.ERROR and counts["error"] == 2
  with pytest.raises(ValueError, match="scored on the host"):
    tasks.reward_item(task, EX, ANSWER)


def test_procedural_attempts_are_scored_on_the_host():
  task = tasks.load_task("procedural:chain_sum", "test", procedural_size=2)
  right = [
    f"Final Answer: The final answer is {ex.answer}. I hope it is correct." for ex in task.examples
  ]
  texts = [[r, "Final Answer: The final answer is banana. I hope it is correct."] for r in right]
  rewards, _, counts = tasks.score_attempts(None, task, task.examples, texts)
  assert rewards.tolist() == [[1.0, 0.0], [1.0, 0.0]] and counts["correct"] == 2


def test_only_the_testbed_registers_the_testbed_task():
  code = (
    "import sys\n"
    "from score_jax import configs, tasks\n"
    "assert not tasks.is_registered('testbed'), 'registered by score_jax.tasks'\n"
    "assert 'score_jax.testbed' not in sys.modules, 'score_jax.tasks/configs import the testbed'\n"
    "import score_jax.testbed.task\n"
    "assert tasks.is_registered('testbed')\n"
  )
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
