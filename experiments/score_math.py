"""SCoRe on MATH (Table 2): train on MATH 12k, evaluate greedy two-attempt on MATH500.

  python -m score_jax.main --config=experiments/score_math.py \
      --config.model.checkpoint=/path/to/gemma-2-2b-it --workdir=/tmp/score_math
  python -m score_jax.main --config=experiments/score_math.py:tiny --workdir=/tmp/score_math_tiny

Default: Gemma 2 2B (bring the checkpoint: HF safetensors dir, Gemma Flax/Orbax dir, or .gguf)
with the paper's hyperparameters (Table 8): Adam lr 5e-6, 512 episodes per update (128 prompts x
g=4 RLOO samples), temperature 1.0, alpha 10, beta1 0.01, beta2 0.1, 3000 steps split
1000 Stage I + 2000 Stage II (the split is not stated in the paper), checkpoint selection by the
highest training reward. `:tiny` is the 2-core CPU smoke run: tiny-gemma at random init, a
SentencePiece trained on the task text into the workdir, a few steps of Stage I then Stage II.
"""

from score_jax import configs


def get_config(arg: str = ""):
  c = configs.base_config()
  c.job = "score"
  c.model.preset = "gemma2-2b"
  c.model.checkpoint = ""  # required for non-tiny presets: train.run names this field if empty
  c.model.chat_template = "gemma"
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "float32"
  c.model.remat_policy = "dots_with_no_batch_dims_saveable"
  c.data.task = "math"
  c.data.eval_task = "math"
  c.rollout.max_prompt_len = 1024
  c.rollout.max_new_tokens = 1024
  c.rollout.prompt_buckets = (512, 1024)
  c.rollout.append_buckets = (128,)
  c.rollout.gen_buckets = (1024,)
  c.stage1.steps, c.stage2.steps = 1000, 2000
  c.stage1.beta2 = 0.1
  c.optim.lr = 5e-6
  c.train.global_batch = 512
  c.train.num_microbatches = 8
  c.eval.num_examples = 500
  if arg == "tiny":
    tiny(c)
  elif arg:
    raise ValueError(f"experiments/score_math.py: unknown argument {arg!r} (expected '' or 'tiny')")
  return c


def tiny(c):
  """Shrinks any SCoRe config to a CPU run of a few minutes (shared with score_code.py)."""
  c.model.preset = "tiny-gemma"
  c.model.checkpoint = ""
  c.model.vocab_size = 1024
  c.model.tokenizer_train_vocab = 1024
  c.model.dtype = c.model.param_dtype = "float32"
  c.model.remat_policy = "none"
  c.data.max_train_examples = 256
  c.data.procedural_size = 64
  c.rollout.max_prompt_len = 192
  c.rollout.max_new_tokens = 24
  c.rollout.prompt_buckets = (192,)
  c.rollout.append_buckets = (128,)
  c.rollout.gen_buckets = (32,)
  c.stage1.steps, c.stage2.steps = 3, 3
  c.optim.lr = 1e-3  # a random tiny model must move visibly in 6 steps
  c.train.global_batch = 8
  c.train.num_microbatches = 1
  c.train.reward_workers = 2
  c.checkpoint.every_steps = 2
  c.checkpoint.async_save = False
  c.eval.every_steps = 0
  c.eval.num_examples = 8
  c.eval.batch_size = 8
  c.log.episodes_every_steps = 2
  c.log.num_episodes = 4
