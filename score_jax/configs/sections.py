"""Validation of the sections a job reads: `generate`, and the SCoRe sections of training jobs.

Owns `validate_generate_section`, `validate_score_sections` (data, rollout, stage1/2, rl,
schedule, optim, train, checkpoint, eval, log) and `check_task` (a task name the task registry
knows). The checks run in a fixed order, so a config with several bad fields always reports the
same one first.
"""

import re
from collections.abc import Sequence

import ml_collections

from score_jax import tasks
from score_jax.configs.checks import ConfigError, is_int, is_number, positive_ints, require
from score_jax.generation import programs

SCHEDULES = ("sequential", "interleaved")
NONFINITE = ("stop", "skip")

_pos_int = lambda v: is_int(v) and v >= 1
_nonneg_int = lambda v: is_int(v) and v >= 0
_nonneg = lambda v: is_number(v) and v >= 0
# rollout.decode_layout -> Sampler(decode_layout=...): None lets the sampler pick by platform.
DECODE_LAYOUTS = {"auto": None, "on": True, "off": False}
# rollout.weight_gather -> Sampler(weight_gather=...).
WEIGHT_GATHERS = programs.WEIGHT_GATHERS


def validate_generate_section(config: ml_collections.ConfigDict) -> None:
  """The `generate` section (the generate job: chat prompts in, completions out)."""
  prompts = require(
    config,
    "generate.prompts",
    lambda v: isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0,
    "a non-empty tuple of strings",
  )
  for i, p in enumerate(prompts):
    if not isinstance(p, str) or not p.strip():
      raise ConfigError(f"config.generate.prompts[{i}] = {p!r}: expected a non-empty string.")
  require(config, "generate.max_new_tokens", _pos_int, "an int >= 1")
  require(config, "generate.temperature", _nonneg, "a number >= 0")
  require(config, "generate.top_k", _nonneg_int, "an int >= 0")
  require(config, "generate.top_p", lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]")


def check_task(task: str, field: str) -> None:
  """A task name the task registry knows (built-in, or registered by an imported module)."""
  if not isinstance(task, str) or not tasks.is_registered(task):
    raise ConfigError(
      f"config.{field} = {task!r}: expected one of {tasks.registered_names()}. A task outside "
      "these registers itself with score_jax.tasks.register when the module defining it is "
      "imported: import that module from the experiment config."
    )


def validate_score_sections(config: ml_collections.ConfigDict) -> None:
  """The SCoRe sections every training or evaluation job reads."""
  _validate_data(config)
  g = _validate_rollout(config)
  _validate_objective(config)
  _validate_optim(config)
  _validate_train(config, g)
  _validate_checkpoint_eval_log(config)


def _validate_data(config) -> None:
  require(config, "model.vocab_size", _nonneg_int, "an int >= 0")
  require(config, "model.tokenizer_train_vocab", _nonneg_int, "an int >= 0")
  check_task(config.data.task, "data.task")
  if config.data.eval_task:
    check_task(config.data.eval_task, "data.eval_task")
  require(config, "data.max_train_examples", _nonneg_int, "an int >= 0")
  require(config, "data.procedural_size", _pos_int, "an int >= 1")


def _validate_rollout(config) -> int:
  """Checks the rollout section; returns the group size g (rollout.num_samples)."""
  for f in ("prompt_buckets", "append_buckets", "gen_buckets"):
    require(config, f"rollout.{f}", positive_ints, "a non-empty tuple of positive ints")
  r = config.rollout
  require(config, "rollout.num_attempts", lambda v: is_int(v) and v >= 2, "an int >= 2")
  g = require(config, "rollout.num_samples", _pos_int, "an int >= 1")
  if config.rl.baseline != "none" and g < 2:
    raise ConfigError(
      f"config.rollout.num_samples = {g}: baseline {config.rl.baseline!r} needs >= 2 samples."
    )
  require(
    config,
    "rollout.max_prompt_len",
    lambda v: _pos_int(v) and v <= max(r.prompt_buckets),
    f"an int in [1, max(rollout.prompt_buckets) = {max(r.prompt_buckets)}]",
  )
  require(
    config,
    "rollout.max_new_tokens",
    lambda v: _pos_int(v) and v <= max(r.gen_buckets),
    f"an int in [1, max(rollout.gen_buckets) = {max(r.gen_buckets)}]",
  )
  require(config, "rollout.temperature", lambda v: is_number(v) and v > 0, "a number > 0")
  require(config, "rollout.top_p", lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]")
  require(config, "rollout.top_k", _nonneg_int, "an int >= 0")
  require(config, "rollout.prompts_per_call", _nonneg_int, "an int >= 0 (0 = all at once)")
  require(
    config,
    "rollout.decode_layout",
    lambda v: v in DECODE_LAYOUTS,
    f"one of {tuple(DECODE_LAYOUTS)}",
  )
  require(
    config, "rollout.weight_gather", lambda v: v in WEIGHT_GATHERS, f"one of {WEIGHT_GATHERS}"
  )
  return g


def _validate_objective(config) -> None:
  """stage1, stage2, rl and schedule: what the updates optimise and in which order."""
  # local: keeps config files importable without jax work
  from score_jax.rl import algorithms, kl, losses

  for stage in ("stage1", "stage2"):
    require(config, f"{stage}.steps", _nonneg_int, "an int >= 0")
  require(config, "stage1.beta2", _nonneg, "a number >= 0 (beta2)")
  if config.stage1.adaptive_beta2:
    require(config, "stage1.beta2", lambda v: v > 0, "> 0 with adaptive_beta2 (multiplicative)")
    for f in ("adaptive_target_ratio", "adaptive_rate"):
      require(config, f"stage1.{f}", lambda v: is_number(v) and v > 0, "a number > 0")
  require(config, "stage2.alpha", _nonneg, "a number >= 0 (alpha)")
  require(
    config,
    "stage2.offline_first_attempt_ratio",
    lambda v: is_number(v) and 0 <= v <= 1,
    "a number in [0, 1] (1.0: every first attempt from the base model, Table 4's ablation)",
  )
  methods = tuple(algorithms.METHODS)  # what rl.algorithms can run
  require(config, "rl.method", lambda v: v in methods, f"one of {methods}")
  require(config, "rl.beta1", _nonneg, "a number >= 0 (beta1)")
  require(config, "sft.star_iterations", _pos_int, "an int >= 1 (STaR collect-then-fit rounds)")
  for f in ("table", "row"):
    require(config, f"report.{f}", lambda v: isinstance(v, str), "a string")
  names = tuple(e for e in kl.ESTIMATORS if e != "k1")  # plain k1 in the loss has no gradient
  require(config, "rl.kl_estimator", lambda v: v in names, f"one of {names}")
  require(
    config, "rl.aggregation", lambda v: v in losses.AGGREGATIONS, f"one of {losses.AGGREGATIONS}"
  )
  require(config, "rl.baseline", lambda v: v in losses.BASELINES, f"one of {losses.BASELINES}")
  require(config, "rl.kl_clamp", lambda v: is_number(v) and v > 0, "a number > 0")
  require(config, "schedule.kind", lambda v: v in SCHEDULES, f"one of {SCHEDULES}")
  require(config, "schedule.num_rounds", _pos_int, "an int >= 1")


def _validate_optim(config) -> None:
  from score_jax.rl import optim  # local: keeps config files importable without jax work

  require(
    config, "optim.lr", lambda v: is_number(v) and 0 < v < float("inf"), "a finite number > 0"
  )
  require(config, "optim.warmup_steps", _nonneg_int, "an int >= 0")
  require(config, "optim.decay", lambda v: v in optim.DECAYS, f"one of {optim.DECAYS}")
  require(config, "optim.end_lr_ratio", lambda v: is_number(v) and 0 <= v <= 1, "in [0, 1]")
  for f in ("max_grad_norm", "weight_decay"):
    require(config, f"optim.{f}", _nonneg, "a number >= 0")
  for f in ("b1", "b2"):
    require(config, f"optim.{f}", lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)")
  require(config, "optim.eps", lambda v: is_number(v) and v > 0, "a number > 0")


def _validate_train(config, g: int) -> None:
  b = require(config, "train.global_batch", _pos_int, "an int >= 1 (episodes per update)")
  if b % g:
    raise ConfigError(
      f"config.train.global_batch = {b}: must be a multiple of config.rollout.num_samples = {g} "
      "(every prompt contributes g episodes)."
    )
  m = require(config, "train.num_microbatches", _pos_int, "an int >= 1")
  if b % m:
    raise ConfigError(
      f"config.train.global_batch = {b}: not divisible by config.train.num_microbatches = {m}."
    )
  require(config, "train.stream_multiple", _nonneg_int, "an int >= 0")
  require(config, "train.on_nonfinite", lambda v: v in NONFINITE, f"one of {NONFINITE}")
  require(config, "train.debug_nan_step", lambda v: is_int(v) and v >= -1, "an int >= -1")
  require(config, "train.reward_workers", _pos_int, "an int >= 1")
  for f in ("math_timeout_s", "code_timeout_s"):
    require(config, f"train.{f}", lambda v: is_number(v) and v > 0, "a number > 0")


def _validate_checkpoint_eval_log(config) -> None:
  require(config, "checkpoint.every_steps", _pos_int, "an int >= 1")
  require(config, "checkpoint.keep", _pos_int, "an int >= 1")
  require(config, "checkpoint.keep_best", _nonneg_int, "an int >= 0")
  for f in ("every_steps", "num_examples", "max_new_tokens"):
    require(config, f"eval.{f}", _nonneg_int, "an int >= 0")
  require(config, "eval.batch_size", _pos_int, "an int >= 1")
  require(config, "eval.num_attempts", _pos_int, "an int >= 1")
  gen_buckets = config.rollout.gen_buckets
  if config.eval.max_new_tokens:
    require(
      config,
      "eval.max_new_tokens",
      lambda v: v <= max(gen_buckets),
      f"<= max(rollout.gen_buckets) = {max(gen_buckets)}",
    )
  require(
    config,
    "eval.checkpoint",
    lambda v: isinstance(v, str) and (v in ("best", "latest") or v.isdigit()),
    "'best', 'latest' or a step number",
  )
  # The evaluation suite (trainer.suite.EVALUATIONS; named here, configs sit below the trainer).
  known = ("final", "attempts", "scaling", "fixed_first", "forced_check", "pass_at_k", "repair")
  suite = require(
    config,
    "eval.suite",
    lambda v: isinstance(v, Sequence) and not isinstance(v, str) and len(set(v)) == len(v),
    "a tuple of distinct evaluation names",
  )
  for i, name in enumerate(suite):
    if name not in known:
      raise ConfigError(f"config.eval.suite[{i}] = {name!r}: expected one of {known}.")
  require(
    config,
    "eval.file_suffix",
    lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_@.-]*", v) is not None,
    "a string of letters, digits, '_', '@', '.' or '-' (part of a file name)",
  )
  prefix_ok = lambda v: isinstance(v, str) and (bool(v) or "forced_check" not in suite)
  require(
    config, "eval.forced_prefix", prefix_ok, "a non-empty string when eval.suite has forced_check"
  )
  require(config, "eval.curve_attempts", lambda v: is_int(v) and v >= 2, "an int >= 2")
  require(config, "eval.curve_problems", _nonneg_int, "an int >= 0")
  require(
    config,
    "eval.scaling_budgets",
    lambda v: positive_ints(v) and all(b % 2 == 0 for b in v),
    "a non-empty tuple of positive even ints (sequential voting takes B/2 episodes)",
  )
  ks = require(config, "eval.pass_k", positive_ints, "a non-empty tuple of positive ints")
  require(
    config,
    "eval.pass_samples",
    lambda v: is_int(v) and v >= max(ks),
    f"an int >= max(config.eval.pass_k) = {max(ks)}",
  )
  for f in ("scaling_temperature", "pass_temperature"):
    require(config, f"eval.{f}", lambda v: is_number(v) and 0 < v < float("inf"), "a number > 0")
  for f in ("repair_set", "repair_out"):
    require(config, f"eval.{f}", lambda v: isinstance(v, str), "a string (a file path)")
  if "repair" in suite and config.job != "repair_set":  # that job builds the set it would need
    require(
      config,
      "eval.repair_set",
      bool,
      "a repair set JSONL path when eval.suite has 'repair' (build one with job=repair_set)",
    )
  require(config, "log.every_steps", _pos_int, "an int >= 1")
  require(config, "log.episodes_every_steps", _nonneg_int, "an int >= 0")
  require(config, "log.num_episodes", _nonneg_int, "an int >= 0")
