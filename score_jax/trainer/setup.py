"""Setup shared by the SCoRe train loop and the evaluate job: meshes, model, tokenizer, tasks.

Owns turning a validated config into runnable pieces (no loss math, no loop):
- the training mesh and the sampler's mesh (the same mesh on one process; each process's local
  devices on several, since every process samples its own prompts);
- the base model = the frozen reference (a checkpoint, or random init for `tiny-*` presets),
  the tokenizer (from the checkpoint, a file, or a SentencePiece trained on the task text and
  cached in the workdir) and the chat template;
- the typed settings of the steps, optimizer and rollout, built from the ConfigDict;
- the sampler and the jitted steps, shared by the runs of one process whose settings are equal.
"""

import dataclasses
import functools
import os
import tempfile
from typing import Any

import jax
import ml_collections
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from score_jax import configs, storage, tasks
from score_jax.data import chat
from score_jax.data import tokenizer as tokenizer_lib
from score_jax.generation import rollout, sampling
from score_jax.models import decoder, loading, presets
from score_jax.models import sharding as model_sharding
from score_jax.models.config import ModelConfig
from score_jax.parallel import mesh as mesh_lib
from score_jax.rl import algorithms, optim, steps
from score_jax.trainer import schedule

PyTree = Any
TOKENIZER_DIR = "tokenizer"


def make_meshes(config: ml_collections.ConfigDict, devices=None) -> tuple[Mesh, Mesh]:
  """(training mesh over all devices, sampler mesh over this process's devices).

  `devices` defaults to jax.devices(); the preflight passes a TPU / GPU topology's devices and
  gets the meshes the run would build there (its "this process" is process 0).
  """
  devices = list(jax.devices() if devices is None else devices)
  data, fsdp, tensor = configs.mesh_shape(config, len(devices))
  mesh = mesh_lib.make_mesh((data, fsdp, tensor), devices=devices)
  processes = sorted({d.process_index for d in devices})
  if len(processes) == 1:
    return mesh, mesh
  me = jax.process_index() if jax.process_index() in processes else processes[0]
  local = [d for d in devices if d.process_index == me]
  t = tensor if len(local) % tensor == 0 else 1
  return mesh, mesh_lib.make_mesh((1, len(local) // t, t), devices=local)


def sampler_param_shardings(param_shardings: PyTree, mesh: Mesh, sampler_mesh: Mesh) -> PyTree:
  """Where the sampler's params live: the training shardings on one process, else a full
  replica on each process's local devices (see `sampler_params`)."""
  if sampler_mesh is mesh:
    return param_shardings
  return jax.tree.map(lambda _: NamedSharding(sampler_mesh, P()), param_shardings)


def sampler_params(
  params: PyTree, mesh: Mesh, sampler_mesh: Mesh, model_cfg: ModelConfig | None = None
) -> PyTree:
  """The policy's params placed for the sampler (a per-process replica on several processes).

  Several processes: all-gather to a replicated global array, then view each process's local
  copies as an array on the local mesh. That is one parameter copy per device while sampling,
  so with `model_cfg` the copy is `decoder.cast_for_inference` (the weights in the compute
  dtype, exactly as every use casts them): half the memory and half the bytes each decoded token
  reads, for bf16 compute.
  """
  if sampler_mesh is mesh:
    return params
  cast = (
    (lambda p: p) if model_cfg is None else (lambda p: decoder.cast_for_inference(model_cfg, p))
  )
  repl = jax.jit(cast, out_shardings=NamedSharding(mesh, P()))(params)
  local = sampler_param_shardings(params, mesh, sampler_mesh)
  return jax.tree.map(
    lambda x, sh: jax.make_array_from_single_device_arrays(
      x.shape, sh, [s.data for s in x.addressable_shards]
    ),
    repl,
    local,
  )


def make_sampler(config, model_cfg: ModelConfig, sampler_mesh: Mesh, pad_id: int):
  """The bucketed sampler; the cache fits prompt + K attempts + K-1 instructions. Shared by
  every run and evaluation of this process with the same model, buckets and mesh."""
  r = config.rollout
  buckets = tuple(r.prompt_buckets), tuple(r.append_buckets), tuple(r.gen_buckets)
  layout = configs.DECODE_LAYOUTS[r.decode_layout]
  return _shared_sampler(model_cfg, *buckets, pad_id, sampler_mesh, layout, r.weight_gather)


def make_steps(config, model_cfg: ModelConfig, mesh: Mesh) -> steps.Steps:
  """The jitted update steps (and their optimizer, `.optimizer`) of the run's model, objective
  settings, optimizer and mesh. Shared by the runs of this process with equal settings."""
  oc = optim_config(config)
  return _shared_steps(model_cfg, loss_config(config), oc, mesh, config.train.num_microbatches)


# A grid or a suite runs many trainings and evaluations in one process, mostly differing only in
# seeds and data. Sharing the sampler and the steps between equal settings (every argument is a
# frozen value, so equal keys build identical programs) traces and compiles each program once
# per process instead of once per run and evaluation: ~20 s of a ~100 s testbed v2 run
# (BUILD_NOTES.md). Neither object keeps state between calls; params are passed per call.
@functools.lru_cache(maxsize=8)
def _shared_sampler(
  model_cfg,
  prompt_buckets,
  append_buckets,
  gen_buckets,
  pad_id,
  mesh,
  decode_layout=None,
  weight_gather="per_call",
):
  return sampling.Sampler(
    model_cfg,
    prompt_buckets=prompt_buckets,
    append_buckets=append_buckets,
    gen_buckets=gen_buckets,
    pad_id=pad_id,
    mesh=mesh,
    decode_layout=decode_layout,
    weight_gather=weight_gather,
  )


@functools.lru_cache(maxsize=8)
def _shared_steps(model_cfg, loss_cfg, optim_cfg, mesh, num_microbatches) -> steps.Steps:
  optimizer, schedule = optim.make_optimizer(optim_cfg), optim.make_schedule(optim_cfg)
  return steps.Steps(model_cfg, loss_cfg, optimizer, mesh, num_microbatches, schedule)


def _tokenizer_corpus(config) -> list[str]:
  """Text a tiny tokenizer is trained on: prompts, gold answers, the correction instruction."""
  task = tasks.load_task(
    config.data.task, config.data.train_split, config.data.train_path, config.data.procedural_size
  )
  texts = [task.correction()]
  for ex in task.examples[: max(config.data.max_train_examples, 0) or 2000]:
    texts += [task.first_turn(ex), ex.answer]
  return texts


def load_tokenizer(config, workdir: str, checkpoint_tokenizer=None) -> tokenizer_lib.Tokenizer:
  """model.tokenizer, else the checkpoint's, else a SentencePiece trained into the workdir."""
  if config.model.tokenizer:
    return tokenizer_lib.load_tokenizer(os.path.expanduser(config.model.tokenizer))
  if checkpoint_tokenizer is not None:
    return checkpoint_tokenizer
  vocab = config.model.tokenizer_train_vocab
  if not vocab:
    raise configs.ConfigError(
      "config.model.tokenizer is empty and there is no checkpoint to take one from: set "
      "config.model.tokenizer, config.model.checkpoint or config.model.tokenizer_train_vocab."
    )
  path = os.path.join(workdir, TOKENIZER_DIR, "spm.model")
  if jax.process_index() == 0 and not storage.exists(path):
    # SentencePiece trains into local files; they are copied in (the workdir may be gs://),
    # the .model last: its presence says the cache is whole.
    with tempfile.TemporaryDirectory() as tmp:
      prefix = os.path.join(tmp, "spm")
      tokenizer_lib.train_sentencepiece(_tokenizer_corpus(config), prefix, vocab)
      vocab_path = path[: -len(".model")] + ".vocab"
      storage.write_atomic(vocab_path, storage.read_bytes(prefix + ".vocab"))
      storage.write_atomic(path, storage.read_bytes(prefix + ".model"))
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # noqa: PLC0415

    multihost_utils.sync_global_devices("score_jax.trainer.setup.tokenizer")
  if not storage.is_remote(path):
    return tokenizer_lib.load_tokenizer(path)
  tok = tokenizer_lib.SentencePieceTokenizer(model_proto=storage.read_bytes(path))
  tok.source = path  # named in errors and repair-set metadata
  return tok


def load_base(config, workdir: str, mesh: Mesh):
  """(model config, base params sharded on `mesh`, tokenizer). The base is the reference."""
  m = config.model
  if not m.checkpoint and not m.preset.startswith("tiny-"):
    raise configs.ConfigError(
      f"config.model.checkpoint is empty: preset {m.preset!r} needs a checkpoint path "
      "(random init is only allowed for tiny-* presets)."
    )
  kw = dict(dtype=m.dtype, param_dtype=m.param_dtype, remat_policy=m.remat_policy)
  if m.vocab_size and m.checkpoint:
    raise configs.ConfigError(
      f"config.model.vocab_size = {m.vocab_size}: only a random-init model can be resized; "
      f"the checkpoint {m.checkpoint} fixes its vocabulary (set 0)."
    )
  if not m.checkpoint:
    model_cfg = presets.get_preset(
      m.preset, **kw, **({"vocab_size": m.vocab_size} if m.vocab_size else {})
    )
    params = model_sharding.init_params_sharded(model_cfg, jax.random.key(config.seed), mesh)
    tok = load_tokenizer(config, workdir)
  else:
    model_cfg, host_params, ckpt_tok = loading.load_model(m.checkpoint, m.preset, None, m.dtype)
    model_cfg = dataclasses.replace(model_cfg, **kw)
    params = jax.device_put(host_params, model_sharding.param_shardings(model_cfg, mesh))
    tok = load_tokenizer(config, workdir, ckpt_tok)
  if tok.vocab_size > model_cfg.vocab_size:
    raise configs.ConfigError(
      f"tokenizer {tok.source} has {tok.vocab_size} ids but preset {m.preset!r} only "
      f"{model_cfg.vocab_size} (config.model.tokenizer / tokenizer_train_vocab)."
    )
  return model_cfg, params, tok


def chat_template(config, model_cfg: ModelConfig, tok) -> chat.ChatTemplate:
  """config.model.chat_template, or the model family's default; checked against the vocab."""
  name = config.model.chat_template or loading.default_template(model_cfg, tok)
  template = chat.get_template(name)
  template.check_tokenizer(tok)
  return template


def loss_config(config) -> steps.LossConfig:
  """The objective's static settings (K = the run's attempts; single-turn phases use 1)."""
  return steps.LossConfig(
    samples_per_prompt=config.rollout.num_samples,
    num_attempts=config.rollout.num_attempts,
    temperature=config.rollout.temperature,
    kl_estimator=config.rl.kl_estimator,
    aggregation=config.rl.aggregation,
    baseline=config.rl.baseline,
    kl_clamp=config.rl.kl_clamp,
    max_new_tokens=config.rollout.max_new_tokens,
  )


def coefficients(config, beta2: float | None = None) -> algorithms.Coefficients:
  """alpha, beta1 and beta2 (the adaptive controller's current beta2 when given)."""
  return algorithms.Coefficients.of(
    alpha=config.stage2.alpha,
    beta1=config.rl.beta1,
    beta2=config.stage1.beta2 if beta2 is None else beta2,
  )


def optim_config(config) -> optim.OptimConfig:
  o = config.optim
  return optim.OptimConfig(
    learning_rate=o.lr,
    warmup_steps=o.warmup_steps,
    decay=o.decay,
    total_steps=schedule.total_steps(config),
    end_lr_ratio=o.end_lr_ratio,
    b1=o.b1,
    b2=o.b2,
    eps=o.eps,
    weight_decay=o.weight_decay,
    max_grad_norm=o.max_grad_norm,
  )


def rollout_config(
  config, stop_ids, *, greedy: bool = False, num_attempts=None, max_new=None, close_ids=()
):
  """The rollout settings; `close_ids` (`ChatTemplate.close_turn_ids`) close truncated attempts."""
  r = config.rollout
  return rollout.RolloutConfig(
    num_attempts=num_attempts or r.num_attempts,
    samples_per_prompt=1 if greedy else r.num_samples,
    max_new_tokens=max_new or r.max_new_tokens,
    temperature=0.0 if greedy else r.temperature,
    top_k=0 if greedy else r.top_k,
    top_p=1.0 if greedy else r.top_p,
    stop_ids=tuple(stop_ids),
    close_ids=tuple(close_ids),
  )


def check_process_batch(config, sampler_mesh: Mesh, num_processes: int | None = None) -> None:
  """Every process gets whole prompts whose episodes (and eval prompts) split over its devices."""
  n = jax.process_count() if num_processes is None else num_processes
  g = config.rollout.num_samples
  prompts_per_step = config.train.global_batch // g
  shards = mesh_lib.batch_shards(sampler_mesh)
  if prompts_per_step % n or (prompts_per_step // n * g) % shards:
    raise configs.ConfigError(
      f"config.train.global_batch = {config.train.global_batch}: {prompts_per_step} prompts x "
      f"g={g} must split into {n} processes of whole prompts whose episodes divide by the "
      f"sampler's {shards} batch shards."
    )
  per_call = config.rollout.prompts_per_call
  if per_call and (per_call * g) % shards:
    raise configs.ConfigError(
      f"config.rollout.prompts_per_call = {per_call}: {per_call} prompts x g={g} episodes must "
      f"divide by the sampler's {shards} batch shards."
    )
  if config.eval.batch_size % shards:
    raise configs.ConfigError(
      f"config.eval.batch_size = {config.eval.batch_size}: must be divisible by the sampler's "
      f"batch shards ({shards} per process)."
    )


def check_instruction(config, instruction, what: str, close_ids=()) -> None:
  """The tokenized instruction, after the ids that close a truncated attempt, must fit an append
  bucket (named config field)."""
  n = len(instruction) + len(close_ids)
  if n > max(config.rollout.append_buckets):
    raise configs.ConfigError(
      f"config.rollout.append_buckets = {tuple(config.rollout.append_buckets)}: the {what} "
      f"second-turn instruction is {len(instruction)} tokens (+ {len(close_ids)} closing a "
      f"truncated attempt); add a bucket >= {n}."
    )
