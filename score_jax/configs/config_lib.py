"""Experiment configs: the shared defaults, up-front validation, logging and saving.

Experiment files in `experiments/` start from `base_config()` and override fields; `main.py`
loads them with `config_flags` (locked, so a typo in `--config.x=...` is an error and a value
of the wrong type is refused), then calls `validate` before any compute. Every error names the
field (`config.optim.lr`) and what was expected.
"""

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
from absl import logging

JOBS = ("generate", "score", "evaluate", "testbed")
SCHEDULES = ("sequential", "interleaved")
RL_METHODS = ("score", "naive_multiturn")
NONFINITE = ("stop", "skip")
TASKS = ("math", "mbpp", "humaneval", "testbed")  # plus "procedural:<reasoning-gym task>"
MESH_AXES = ("data", "fsdp", "tensor")


class ConfigError(ValueError):
  """A config field has a value that cannot work; the message names the field."""


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by every experiment. Each field carries a one-line comment."""
  c = ml_collections.ConfigDict()
  c.job = "generate"  # what main runs: one of JOBS
  c.seed = 0  # root PRNG seed; every other key is folded from it

  c.model = ml_collections.ConfigDict()
  c.model.preset = "smollm2-135m-instruct"  # a name from score_jax.models.presets
  c.model.checkpoint = (
    ""  # HF dir/.safetensors, Gemma Flax dir, .gguf, "smollm2-gguf", or "" = random init
  )
  c.model.tokenizer = ""  # tokenizer.model / tokenizer.json; "" = the one inside the checkpoint
  c.model.vocab_size = 0  # 0 = the preset's; else a random-init model's vocabulary (tiny runs)
  c.model.tokenizer_train_vocab = 0  # > 0: train a SentencePiece on the task text (tiny runs)
  c.model.chat_template = ""  # gemma | chatml | llama3; "" = the preset family's default
  c.model.dtype = "float32"  # compute dtype
  c.model.param_dtype = "float32"  # storage dtype of the parameters
  c.model.remat_policy = "none"  # activation rematerialisation in the scanned layer

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = 1  # pure data-parallel replicas
  c.mesh.fsdp = -1  # parameter/optimizer sharding axis; -1 = all remaining devices
  c.mesh.tensor = 1  # tensor (model) parallel axis

  c.generate = ml_collections.ConfigDict()
  c.generate.prompts = ("What is 12+7?",)  # one chat turn each
  c.generate.system = ""  # system message ("" = the template's default)
  c.generate.max_new_tokens = 64  # per prompt
  c.generate.temperature = 0.0  # 0 = greedy
  c.generate.top_k = 0  # 0 = off
  c.generate.top_p = 1.0  # nucleus mass in (0, 1]

  c.data = ml_collections.ConfigDict()
  c.data.task = "math"  # training task: math | mbpp | humaneval | procedural:<reasoning-gym task>
  c.data.eval_task = ""  # held-out task ("" = data.task); e.g. humaneval for MBPP training
  c.data.train_split = "train"  # MATH: train (12k); MBPP: train/test/validation/prompt
  c.data.eval_split = "test"  # MATH: test (MATH500); MBPP: test; ignored for HumanEval
  c.data.train_path = ""  # a user's own copy of the training file ("" = the package copy)
  c.data.eval_path = ""  # a user's own copy of the eval file ("" = the package copy)
  c.data.max_train_examples = 0  # use only the first N training examples (0 = all)
  c.data.procedural_size = 2000  # procedural tasks: problems generated per split
  c.data.system = ""  # system message of every episode ("" = the chat template's default)

  c.rollout = ml_collections.ConfigDict()
  # g: RLOO group size. Not stated in the paper; 4 keeps a leave-one-out baseline of 3 samples
  # while spending most of the batch on distinct prompts.
  c.rollout.num_samples = 4
  c.rollout.num_attempts = 2  # K: attempts per episode (SCoRe: 2)
  c.rollout.max_prompt_len = 1024  # longer prompts are dropped from the data (logged)
  c.rollout.max_new_tokens = 512  # per attempt
  c.rollout.temperature = 1.0  # training sampling temperature (Table 8)
  c.rollout.top_p = 1.0  # nucleus mass (1.0 = off)
  c.rollout.top_k = 0  # 0 = off
  c.rollout.prompt_buckets = (256, 512, 1024)  # prompt-length buckets (static shapes)
  c.rollout.append_buckets = (64, 128)  # correction-instruction length buckets
  c.rollout.gen_buckets = (128, 256, 512)  # generation-length buckets

  c.stage1 = ml_collections.ConfigDict()
  c.stage1.steps = 1000  # Stage I updates (per round when interleaved); not stated in the paper
  c.stage1.beta2 = 0.1  # beta2: first-attempt KL weight (0.1 MATH, 0.25 code)
  c.stage1.adaptive_beta2 = False  # adapt beta2 to balance attempt-1 KL and attempt-2 objective
  c.stage1.adaptive_target_ratio = 1.0  # target of beta2 * KL_turn1 / mean|A_turn2|
  c.stage1.adaptive_rate = 0.05  # log-space gain per update of the beta2 controller

  c.stage2 = ml_collections.ConfigDict()
  c.stage2.steps = 2000  # Stage II updates (per round when interleaved)
  c.stage2.alpha = 10.0  # alpha: reward-shaping bonus on r2 - r1
  c.stage2.offline_first_attempt_ratio = 0.0  # fraction of prompts whose y1 the base model samples

  c.rl = ml_collections.ConfigDict()
  # score: Stage I then II (schedule below) | naive_multiturn: the paper's baseline, one phase of
  # stage1.steps + stage2.steps updates rewarding only the last attempt (no Stage I, no bonus).
  c.rl.method = "score"
  c.rl.beta1 = 0.01  # beta1: KL weight of the rewarded attempts
  c.rl.kl_estimator = "k1_reward"  # k1_reward (in the reward) | k2 | k3 (in the loss) | none
  c.rl.aggregation = "token_mean"  # token_mean | seq_mean_token_mean | constant
  c.rl.kl_clamp = 10.0  # |log pi - log ref| clamp before any estimator
  c.rl.baseline = "rloo"  # rloo | mean | none

  c.schedule = ml_collections.ConfigDict()
  c.schedule.kind = "sequential"  # sequential: Stage I then II | interleaved: I, II, I, II (v1)
  c.schedule.num_rounds = 1  # interleaved: number of (Stage I, Stage II) rounds

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 5e-6  # Adam learning rate (5e-6 MATH, 1e-5 code)
  c.optim.warmup_steps = 0  # linear warmup
  c.optim.decay = "constant"  # constant | cosine | linear
  c.optim.end_lr_ratio = 0.0  # final lr / peak lr of cosine/linear decay
  c.optim.max_grad_norm = 1.0  # global-norm clipping (0 = off)
  c.optim.weight_decay = 0.0  # the paper uses plain Adam
  c.optim.b1 = 0.9  # Adam beta1
  c.optim.b2 = 0.999  # Adam beta2
  c.optim.eps = 1e-8  # Adam epsilon

  c.train = ml_collections.ConfigDict()
  # Episodes (prompts x g) per update, summed over hosts: the rows the mesh and the micro-batches
  # split. 512 = Table 8's MATH batch read as sequences per update (128 prompts x g=4).
  c.train.global_batch = 512
  c.train.num_microbatches = 1  # gradient accumulation; the update equals one full batch
  # Update streams drop the sampler's holes (generation.rollout.compact_streams) and are padded to a
  # multiple of this many slots: fewer slots, few distinct shapes. 0 keeps the sampler's layout.
  c.train.stream_multiple = 128
  c.train.on_nonfinite = "stop"  # stop: save step + batch to workdir/nonfinite/ | skip
  c.train.debug_nan_step = -1  # testing only: feed a NaN reference at this step (-1 = off)
  c.train.reward_workers = 2  # reward pool processes per host
  c.train.math_timeout_s = 5.0  # per math check
  c.train.code_timeout_s = 10.0  # per program

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 100  # save every N steps (and at the end / on SIGTERM)
  c.checkpoint.keep = 3  # newest checkpoints kept
  c.checkpoint.keep_best = 1  # plus the highest-training-reward ones (the paper's selection)
  c.checkpoint.async_save = True  # write in the background

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 250  # held-out evaluation every N steps (0 = only at the end)
  c.eval.num_examples = 500  # held-out problems (0 = the whole split)
  c.eval.batch_size = 64  # prompts per sampler call (per host)
  c.eval.num_attempts = 2  # K attempts at evaluation
  c.eval.greedy = True  # temperature 0 (the paper's protocol); else rollout.temperature
  c.eval.max_new_tokens = 0  # per attempt (0 = rollout.max_new_tokens)
  c.eval.checkpoint = "best"  # evaluate job: best | latest | <step>

  c.log = ml_collections.ConfigDict()
  c.log.every_steps = 1  # metrics to TensorBoard + metrics.jsonl
  c.log.episodes_every_steps = 50  # dump full episodes (0 = never)
  c.log.num_episodes = 8  # episodes per dump

  c.distributed = ml_collections.ConfigDict()
  c.distributed.enabled = False  # call jax.distributed.initialize() (multi-host / multi-process)
  c.distributed.coordinator_address = ""  # host:port; "" = auto-detect (TPU pods, SLURM)
  c.distributed.num_processes = 0  # 0 = auto-detect
  c.distributed.process_id = -1  # -1 = auto-detect
  c.distributed.cpu_collectives = "gloo"  # CPU backend collectives across processes ("" = default)
  return c


def _get(config: ml_collections.ConfigDict, path: str) -> Any:
  node = config
  for part in path.split("."):
    node = node[part]
  return node


def _require(config, path: str, ok: Callable[[Any], bool], expected: str) -> Any:
  value = _get(config, path)
  if not ok(value):
    raise ConfigError(f"config.{path} = {value!r}: expected {expected}.")
  return value


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def mesh_shape(config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int, int]:
  """Resolves the (data, fsdp, tensor) mesh sizes, expanding the single -1 wildcard."""
  sizes = [
    _require(
      config, f"mesh.{a}", lambda v: _is_int(v) and (v >= 1 or v == -1), "a positive int or -1"
    )
    for a in MESH_AXES
  ]
  wildcards = [a for a, s in zip(MESH_AXES, sizes) if s == -1]
  if len(wildcards) > 1:
    raise ConfigError(f"config.mesh: at most one axis may be -1, got {', '.join(wildcards)}.")
  fixed = 1
  for s in sizes:
    fixed *= s if s != -1 else 1
  if num_devices % fixed:
    raise ConfigError(
      f"config.mesh = {dict(zip(MESH_AXES, sizes))}: the fixed axes' product {fixed} does not divide the {num_devices} devices."
    )
  sizes = [num_devices // fixed if s == -1 else s for s in sizes]
  if sizes[0] * sizes[1] * sizes[2] != num_devices:
    raise ConfigError(
      f"config.mesh = {dict(zip(MESH_AXES, sizes))}: product must equal the {num_devices} devices."
    )
  return tuple(sizes)


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Checks types, ranges and divisibility up front. Raises ConfigError naming the field."""
  from score_jax.models import presets  # local: keeps config files importable without jax work

  _require(config, "job", lambda v: v in JOBS, f"one of {JOBS}")
  _require(config, "seed", _is_int, "an int")
  preset = _require(config, "model.preset", lambda v: isinstance(v, str) and v, "a preset name")
  if preset not in presets.PRESETS:
    raise ConfigError(
      f"config.model.preset = {preset!r}: unknown preset. Known: {', '.join(sorted(presets.PRESETS))}."
    )
  for field in ("dtype", "param_dtype"):
    _require(
      config,
      f"model.{field}",
      lambda v: v in ("float32", "bfloat16", "float16"),
      "float32, bfloat16 or float16",
    )
  _require(
    config,
    "model.chat_template",
    lambda v: v in ("", "gemma", "chatml", "llama3"),
    "'', gemma, chatml or llama3",
  )
  if config.job == "generate":
    prompts = _require(
      config,
      "generate.prompts",
      lambda v: isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0,
      "a non-empty tuple of strings",
    )
    for i, p in enumerate(prompts):
      if not isinstance(p, str) or not p.strip():
        raise ConfigError(f"config.generate.prompts[{i}] = {p!r}: expected a non-empty string.")
    _require(config, "generate.max_new_tokens", lambda v: _is_int(v) and v >= 1, "an int >= 1")
    _require(config, "generate.temperature", lambda v: _is_number(v) and v >= 0, "a number >= 0")
    _require(config, "generate.top_k", lambda v: _is_int(v) and v >= 0, "an int >= 0")
    _require(config, "generate.top_p", lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]")
  if config.job in ("score", "evaluate", "testbed"):
    _validate_score(config)
  if config.job == "testbed":
    _validate_testbed(config)
  if num_devices is not None:
    data, fsdp, _ = mesh_shape(config, num_devices)
    if config.job == "score":
      b, m = config.train.global_batch, config.train.num_microbatches
      if b % (data * fsdp * m):
        raise ConfigError(
          f"config.train.global_batch = {b}: must be divisible by the mesh's batch shards "
          f"data*fsdp = {data * fsdp} times config.train.num_microbatches = {m} (= {data * fsdp * m})."
        )


def _positive_ints(v) -> bool:
  return isinstance(v, Sequence) and len(v) > 0 and all(_is_int(x) and x > 0 for x in v)


def check_task(task: str, field: str) -> None:
  """A task name: math | mbpp | humaneval | procedural:<reasoning-gym task>."""
  if not isinstance(task, str) or not (
    task in TASKS or (task.startswith("procedural:") and len(task) > len("procedural:"))
  ):
    raise ConfigError(
      f"config.{field} = {task!r}: expected one of {TASKS} or 'procedural:<reasoning-gym task>'."
    )


def _validate_score(config: ml_collections.ConfigDict) -> None:
  """The SCoRe sections (data, rollout, stage1/2, rl, schedule, optim, train, checkpoint, eval)."""
  from score_jax.rl import (
    kl,  # local: keeps config files importable without jax work
    losses,  # local: keeps config files importable without jax work
    optim,  # local: keeps config files importable without jax work
  )

  pos_int = lambda v: _is_int(v) and v >= 1
  nonneg_int = lambda v: _is_int(v) and v >= 0
  nonneg = lambda v: _is_number(v) and v >= 0
  _require(config, "model.vocab_size", lambda v: _is_int(v) and v >= 0, "an int >= 0")
  _require(config, "model.tokenizer_train_vocab", lambda v: _is_int(v) and v >= 0, "an int >= 0")
  check_task(config.data.task, "data.task")
  if config.data.eval_task:
    check_task(config.data.eval_task, "data.eval_task")
  for f in ("max_train_examples",):
    _require(config, f"data.{f}", nonneg_int, "an int >= 0")
  _require(config, "data.procedural_size", pos_int, "an int >= 1")
  for f in ("prompt_buckets", "append_buckets", "gen_buckets"):
    _require(config, f"rollout.{f}", _positive_ints, "a non-empty tuple of positive ints")
  r = config.rollout
  _require(config, "rollout.num_attempts", lambda v: _is_int(v) and v >= 2, "an int >= 2")
  g = _require(config, "rollout.num_samples", pos_int, "an int >= 1")
  if config.rl.baseline != "none" and g < 2:
    raise ConfigError(
      f"config.rollout.num_samples = {g}: baseline {config.rl.baseline!r} needs >= 2 samples."
    )
  _require(
    config,
    "rollout.max_prompt_len",
    lambda v: pos_int(v) and v <= max(r.prompt_buckets),
    f"an int in [1, max(rollout.prompt_buckets) = {max(r.prompt_buckets)}]",
  )
  _require(
    config,
    "rollout.max_new_tokens",
    lambda v: pos_int(v) and v <= max(r.gen_buckets),
    f"an int in [1, max(rollout.gen_buckets) = {max(r.gen_buckets)}]",
  )
  _require(config, "rollout.temperature", lambda v: _is_number(v) and v > 0, "a number > 0")
  _require(config, "rollout.top_p", lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]")
  _require(config, "rollout.top_k", nonneg_int, "an int >= 0")
  for stage in ("stage1", "stage2"):
    _require(config, f"{stage}.steps", nonneg_int, "an int >= 0")
  _require(config, "stage1.beta2", nonneg, "a number >= 0 (beta2)")
  if config.stage1.adaptive_beta2:
    _require(config, "stage1.beta2", lambda v: v > 0, "> 0 with adaptive_beta2 (multiplicative)")
    for f in ("adaptive_target_ratio", "adaptive_rate"):
      _require(config, f"stage1.{f}", lambda v: _is_number(v) and v > 0, "a number > 0")
  _require(config, "stage2.alpha", nonneg, "a number >= 0 (alpha)")
  _require(
    config,
    "stage2.offline_first_attempt_ratio",
    lambda v: _is_number(v) and 0 <= v < 1,
    "a number in [0, 1)",
  )
  _require(config, "rl.method", lambda v: v in RL_METHODS, f"one of {RL_METHODS}")
  _require(config, "rl.beta1", nonneg, "a number >= 0 (beta1)")
  names = tuple(e for e in kl.ESTIMATORS if e != "k1")  # plain k1 in the loss has no gradient
  _require(config, "rl.kl_estimator", lambda v: v in names, f"one of {names}")
  _require(
    config, "rl.aggregation", lambda v: v in losses.AGGREGATIONS, f"one of {losses.AGGREGATIONS}"
  )
  _require(config, "rl.baseline", lambda v: v in losses.BASELINES, f"one of {losses.BASELINES}")
  _require(config, "rl.kl_clamp", lambda v: _is_number(v) and v > 0, "a number > 0")
  _require(config, "schedule.kind", lambda v: v in SCHEDULES, f"one of {SCHEDULES}")
  _require(config, "schedule.num_rounds", pos_int, "an int >= 1")
  _require(
    config, "optim.lr", lambda v: _is_number(v) and 0 < v < float("inf"), "a finite number > 0"
  )
  _require(config, "optim.warmup_steps", nonneg_int, "an int >= 0")
  _require(config, "optim.decay", lambda v: v in optim.DECAYS, f"one of {optim.DECAYS}")
  _require(config, "optim.end_lr_ratio", lambda v: _is_number(v) and 0 <= v <= 1, "in [0, 1]")
  for f in ("max_grad_norm", "weight_decay"):
    _require(config, f"optim.{f}", nonneg, "a number >= 0")
  for f in ("b1", "b2"):
    _require(config, f"optim.{f}", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)")
  _require(config, "optim.eps", lambda v: _is_number(v) and v > 0, "a number > 0")
  b = _require(config, "train.global_batch", pos_int, "an int >= 1 (episodes per update)")
  if b % g:
    raise ConfigError(
      f"config.train.global_batch = {b}: must be a multiple of config.rollout.num_samples = {g} "
      "(every prompt contributes g episodes)."
    )
  m = _require(config, "train.num_microbatches", pos_int, "an int >= 1")
  if b % m:
    raise ConfigError(
      f"config.train.global_batch = {b}: not divisible by config.train.num_microbatches = {m}."
    )
  _require(config, "train.stream_multiple", lambda v: _is_int(v) and v >= 0, "an int >= 0")
  _require(config, "train.on_nonfinite", lambda v: v in NONFINITE, f"one of {NONFINITE}")
  _require(config, "train.debug_nan_step", lambda v: _is_int(v) and v >= -1, "an int >= -1")
  _require(config, "train.reward_workers", pos_int, "an int >= 1")
  for f in ("math_timeout_s", "code_timeout_s"):
    _require(config, f"train.{f}", lambda v: _is_number(v) and v > 0, "a number > 0")
  _require(config, "checkpoint.every_steps", pos_int, "an int >= 1")
  _require(config, "checkpoint.keep", pos_int, "an int >= 1")
  _require(config, "checkpoint.keep_best", nonneg_int, "an int >= 0")
  for f in ("every_steps", "num_examples", "max_new_tokens"):
    _require(config, f"eval.{f}", nonneg_int, "an int >= 0")
  _require(config, "eval.batch_size", pos_int, "an int >= 1")
  _require(config, "eval.num_attempts", pos_int, "an int >= 1")
  if config.eval.max_new_tokens:
    _require(
      config,
      "eval.max_new_tokens",
      lambda v: v <= max(r.gen_buckets),
      f"<= max(rollout.gen_buckets) = {max(r.gen_buckets)}",
    )
  _require(
    config,
    "eval.checkpoint",
    lambda v: isinstance(v, str) and (v in ("best", "latest") or v.isdigit()),
    "'best', 'latest' or a step number",
  )
  _require(config, "log.every_steps", pos_int, "an int >= 1")
  _require(config, "log.episodes_every_steps", nonneg_int, "an int >= 0")
  _require(config, "log.num_episodes", nonneg_int, "an int >= 0")


def _validate_testbed(config: ml_collections.ConfigDict) -> None:
  """The `testbed` section (experiments/testbed.py)."""
  if "testbed" not in config:
    raise ConfigError("config.testbed: missing; the testbed job needs experiments/testbed.py")
  pos_int = lambda v: _is_int(v) and v >= 1
  fraction = lambda v: _is_number(v) and 0 <= v <= 1
  for f in ("tokenizer_problems", "train_problems", "seq_len", "pretrain_steps",
            "pretrain_batch", "pretrain_save_every", "eval_problems", "curve_problems"):  # fmt: skip
    _require(config, f"testbed.{f}", pos_int, "an int >= 1")
  _require(config, "testbed.pretrain_lr", lambda v: _is_number(v) and v > 0, "a number > 0")
  from score_jax.testbed import arith, corpus  # noqa: PLC0415 (only the testbed job needs them)

  for f in corpus.FRACTIONS:
    _require(config, f"testbed.mixture.{f}", fraction, "a fraction in [0, 1]")

  _require(
    config, "testbed.mixture.fast_form", lambda v: v in arith.FAST_FORMS,
    f"one of {arith.FAST_FORMS}",
  )  # fmt: skip
  m = config.testbed.mixture
  if abs(m.copy + m.resolve + m.check - 1) > 1e-6:
    raise ConfigError(
      f"config.testbed.mixture: copy + resolve + check = {m.copy + m.resolve + m.check}, expected 1."
    )
  _require(
    config, "testbed.methods",
    lambda v: isinstance(v, Sequence) and len(v) > 0 and all(x in ("score", "naive") for x in v),
    "a non-empty tuple of 'score' / 'naive'",
  )  # fmt: skip
  _require(
    config, "testbed.rl_seeds",
    lambda v: isinstance(v, Sequence) and len(v) > 0 and len(set(v)) == len(v) and all(_is_int(x) for x in v),
    "a non-empty tuple of distinct ints",
  )  # fmt: skip
  if config.data.task != "testbed":
    raise ConfigError(
      f"config.data.task = {config.data.task!r}: the testbed job trains on 'testbed'."
    )
  if config.testbed.eval_problems > config.data.procedural_size:
    raise ConfigError(
      f"config.testbed.eval_problems = {config.testbed.eval_problems}: more than the "
      f"config.data.procedural_size = {config.data.procedural_size} test problems generated."
    )


def save(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Logs the resolved config and writes it to `workdir/config.json` (and .txt, human-readable)."""
  os.makedirs(workdir, exist_ok=True)
  logging.info("Resolved config:\n%s", config)
  path = os.path.join(workdir, "config.json")
  with open(path + ".tmp", "w") as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=str)
  os.replace(path + ".tmp", path)  # atomic: a killed run never leaves half a config
  with open(os.path.join(workdir, "config.txt"), "w") as f:
    f.write(str(config))
  return path
