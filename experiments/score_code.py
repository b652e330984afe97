"""SCoRe on code (Table 3): train on MBPP with its 3-shot prompt, evaluate zero-shot on HumanEval.

  python -m score_jax.main --config=experiments/score_code.py \
      --config.model.checkpoint=/path/to/gemma-2-2b-it --workdir=/tmp/score_code
  python -m score_jax.main --config=experiments/score_code.py:tiny --workdir=/tmp/score_code_tiny

The paper's code hyperparameters (Table 8): Adam lr 1e-5, 128 episodes per update (32 prompts x
g=4), 1500 steps (500 Stage I + 1000 Stage II, split not stated), beta2 0.25, alpha 10,
beta1 0.01, temperature 1.0. Programs are scored in the sandbox (all tests must pass).
"""

import importlib.util
import os

from score_jax import configs


def _tiny():
  # Shares the tiny settings with score_math.py (experiment files are loaded by path).
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "score_math.py")
  spec = importlib.util.spec_from_file_location("score_math", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.tiny


def get_config(arg: str = ""):
  c = configs.base_config()
  c.job = "score"
  c.model.preset = "gemma2-2b"
  c.model.checkpoint = ""  # required for non-tiny presets: train.run names this field if empty
  c.model.chat_template = "gemma"
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "float32"
  c.model.remat_policy = "dots_with_no_batch_dims_saveable"
  c.data.task = "mbpp"
  c.data.train_split = "train"
  c.data.eval_task = "humaneval"
  c.rollout.max_prompt_len = 2048
  c.rollout.max_new_tokens = 512
  c.rollout.prompt_buckets = (1024, 2048)
  c.rollout.append_buckets = (64, 128)
  c.rollout.gen_buckets = (512,)
  c.stage1.steps, c.stage2.steps = 500, 1000
  c.stage1.beta2 = 0.25
  c.optim.lr = 1e-5
  c.train.global_batch = 128
  c.train.num_microbatches = 4
  c.eval.num_examples = 164
  if arg == "tiny":
    _tiny()(c)
    c.rollout.max_prompt_len = 1024
    c.rollout.prompt_buckets = (1024,)
    c.rollout.append_buckets = (128,)
  elif arg:
    raise ValueError(f"experiments/score_code.py: unknown argument {arg!r} (expected '' or 'tiny')")
  return c
