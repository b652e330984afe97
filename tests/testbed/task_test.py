"""The testbed's task and job: registered by the testbed itself, prompts and rewards as MATH's."""

import types

import numpy as np
import pytest

from experiments import testbed as testbed_exp
from score_jax import configs, tasks
from score_jax.data import prompts
from score_jax.rewards.outcome import Outcome
from score_jax.testbed import arith
from score_jax.testbed import config as testbed_config
from score_jax.testbed import task as testbed_task


def test_the_testbed_task_is_registered_by_its_module():
  assert tasks.get_spec("testbed") is testbed_task.SPEC
  for name, family in testbed_task.FAMILY_OF.items():  # v2 and its held-out variant too
    task = tasks.load_task(name, "validation", procedural_size=3)
    assert task.examples == arith.load_split("validation", 3, family)
  assert configs.get_job("testbed").module == "score_jax.testbed.pipeline"
  assert configs.get_job("testbed").uses_reward_pool


def test_prompts_and_instruction():
  task = tasks.load_task("testbed", "test", procedural_size=5)
  assert task.examples == arith.load_split("test", 5)
  ex = task.examples[0]
  assert task.kind == "math" and task.shots == []
  assert task.first_turn(ex) == ex.question  # the bare question: the pretraining form
  assert task.correction() == prompts.correction_instruction("math_short")
  assert task.final_answer(arith.check_solution(arith.terms_of(ex))) == ex.answer


def test_attempts_go_through_the_pool_as_math_items():
  task = tasks.load_task("testbed", "train", procedural_size=2)
  sent = []

  def score(items):
    sent.extend(items)
    return types.SimpleNamespace(outcomes=np.full(len(items), Outcome.CORRECT, np.int8))

  texts = [["a", "b"], ["c", "d"]]
  pool = types.SimpleNamespace(score=score)
  rewards, _, counts = tasks.score_attempts(pool, task, task.examples, texts)
  assert sent == [("math", (t, ex.answer)) for ex, row in zip(task.examples, texts) for t in row]
  assert rewards.sum() == 4 and counts["correct"] == 4


def test_validate_config_checks_the_testbed_section():
  c = testbed_exp.get_config("quick")
  testbed_config.validate_config(c)
  c.data.task = "math"
  with pytest.raises(configs.ConfigError, match="data.task = 'math': the testbed job runs one of"):
    configs.validate(c)
  c = testbed_exp.get_config("quick")
  c.testbed.mixture.verify = 0.2  # the second-attempt kinds no longer sum to 1
  with pytest.raises(configs.ConfigError, match="copy \\+ resolve \\+ check \\+ verify = 1.2"):
    configs.validate(c)
  c = testbed_exp.get_config("quick")
  c.testbed.eval_problems = c.data.procedural_size + 1
  with pytest.raises(configs.ConfigError, match="config.testbed.eval_problems"):
    configs.validate(c)
  c = testbed_exp.get_config("quick")
  c.testbed.rl_seeds = (0, 0)
  with pytest.raises(configs.ConfigError, match="config.testbed.rl_seeds"):
    configs.validate(c)
  c = testbed_exp.get_config("quick")
  c.testbed.mixture.copy = 1.5
  with pytest.raises(configs.ConfigError, match=r"config.testbed.mixture.copy = 1.5"):
    configs.validate(c)
  c = configs.base_config()
  c.job = "testbed"
  with pytest.raises(configs.ConfigError, match="config.testbed: missing"):
    configs.validate(c)
  c.rollout.num_samples = 0  # the SCoRe sections are checked first, as for the score job
  with pytest.raises(configs.ConfigError, match="config.rollout.num_samples"):
    configs.validate(c)
