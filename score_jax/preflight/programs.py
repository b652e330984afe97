"""The run's device programs, lowered for a target's devices from the run's own config.

Everything comes from the functions the trainer itself calls: `trainer.setup.make_meshes`
(the training mesh and, on several hosts, each host's sampler mesh), `optim.abstract_train_state`,
`steps.Steps(...).update(name)` (the same jitted step, shardings and donation),
`trainer.setup.make_sampler` (the same prefill / append / decode programs). Only the inputs are
abstract: `jax.ShapeDtypeStruct`s carrying the shardings real arrays would have.

Shapes are the run's worst case: every prompt at the largest prompt bucket, every attempt at the
largest generation bucket, every appended turn at the largest append bucket, and the update's
stream as long as all of them together (compaction only shortens it). The model's shapes come
from its preset: the checkpoint is not read (a checkpoint of that preset has the same shapes).
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from score_jax.generation import programs as sampler_programs
from score_jax.generation import sampling
from score_jax.models import decoder, flops, presets
from score_jax.models import sharding as model_sharding
from score_jax.models.config import ModelConfig
from score_jax.parallel import mesh as mesh_lib
from score_jax.rl import algorithms, experience, optim
from score_jax.rl import steps as steps_lib
from score_jax.rl.algorithms import Coefficients
from score_jax.trainer import schedule
from score_jax.trainer import setup as setup_lib

PyTree = Any
PAD_ID = 0  # any id: shapes, not values, are compiled


@dataclasses.dataclass(frozen=True)
class Shapes:
  """The run's worst-case shapes, per process for the sampler and global for the update."""

  global_batch: int  # episodes per update
  sampler_rows: int  # episodes one process samples
  sampler_unique: int  # unique prompts one process prefills (padded to its batch shards)
  prompt_len: int  # largest prompt bucket
  gen_len: int  # largest generation bucket
  append_len: int  # largest append bucket (instruction + closing ids)
  num_attempts: int
  microbatches: int
  samples_per_prompt: int
  sampler_calls: int  # sampler calls per step on one process (rollout.prompts_per_call)

  @property
  def cache_len(self) -> int:
    k = self.num_attempts
    return self.prompt_len + k * self.gen_len + (k - 1) * self.append_len

  @property
  def stream_len(self) -> int:
    return self.cache_len


@dataclasses.dataclass
class Program:
  """One device program, lowered on demand (lowering traces; compile runs the real compiler)."""

  name: str
  lower: Callable[[dict], Any]  # (compiled executables so far, by name) -> jax.stages.Lowered
  model_flops: float  # analytic FLOPs of one call over all devices
  has_loops: bool  # scanned layers / micro-batches / decode loop: XLA counts a body once
  donates: bool  # its first state argument is donated (outputs should alias it)
  what: str  # one line: the shapes it was lowered for
  needs: str = ""  # a program whose compiled output layout this one's inputs take
  # The decode loop's weights per device and step: bytes its matmuls read, bytes of the weight
  # arguments, bytes gathered over the interconnect (`decode_weight_bytes`).
  step_weights: dict | None = None
  # Per device: what the run keeps on the device while this program runs that is not among its
  # arguments (`resident_bytes`), counted against the device's memory with the program's peak.
  resident_bytes: int = 0
  resident_what: str = ""


@dataclasses.dataclass
class RunPrograms:
  model_cfg: ModelConfig
  mesh: Mesh
  sampler_mesh: Mesh
  shapes: Shapes
  programs: list[Program]
  num_processes: int


def model_config(config) -> ModelConfig:
  """The decoder the run builds, from its preset (as `setup.load_base`, without the weights)."""
  m = config.model
  kw = dict(dtype=m.dtype, param_dtype=m.param_dtype, remat_policy=m.remat_policy)
  if m.vocab_size:
    kw["vocab_size"] = m.vocab_size
  return presets.get_preset(m.preset, **kw)


def shapes_of(config, mesh: Mesh, sampler_mesh: Mesh, num_processes: int) -> Shapes:
  r, t = config.rollout, config.train
  g = r.num_samples
  prompts = t.global_batch // num_processes // g
  per_call = r.prompts_per_call or prompts
  rows = min(per_call, prompts) * g
  shards = mesh_lib.batch_shards(sampler_mesh)
  unique = -(-(rows // g) // shards) * shards
  return Shapes(
    global_batch=t.global_batch,
    sampler_rows=rows,
    sampler_unique=unique,
    prompt_len=max(r.prompt_buckets),
    gen_len=max(r.gen_buckets),
    append_len=max(r.append_buckets),
    num_attempts=r.num_attempts,
    microbatches=t.num_microbatches,
    samples_per_prompt=g,
    sampler_calls=-(-prompts // per_call),
  )


def _sds(shape, dtype, sharding) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding)


def abstract_params(cfg: ModelConfig, shardings: PyTree) -> PyTree:
  return jax.tree.map(
    lambda x, s: _sds(x.shape, x.dtype, s), decoder.abstract_params(cfg), shardings
  )


def device_bytes(tree: PyTree) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the shard shapes)."""
  return sum(
    int(np.prod(x.sharding.shard_shape(x.shape))) * jnp.dtype(x.dtype).itemsize
    for x in jax.tree.leaves(tree)
  )


def resident(config, model_cfg, mesh: Mesh, sampler_mesh: Mesh) -> tuple[int, str]:
  """Per device, what the trainer (`trainer.loop`) keeps alive beside the sampler's programs.

  The train state (parameters and optimizer state) and the reference parameters live on the
  training mesh for the whole run. While sampling all of them sit beside the sampler's
  programs, except the policy's parameters, which are the sampler's own argument on one
  process; on several processes, a run that samples from the base model (offline first
  attempts, base-model collection) also holds the reference's cast replica then
  (`Trainer.base_sampler_params`). The update takes the state and the reference as arguments:
  nothing of the run's sits beside it. Returns (bytes, what).
  """
  optimizer = optim.make_optimizer(setup_lib.optim_config(config))
  state = optim.abstract_train_state(model_cfg, optimizer, mesh)
  ref = device_bytes(abstract_params(model_cfg, model_sharding.param_shardings(model_cfg, mesh)))
  sampling, what = device_bytes(state) + ref, "train state + reference"
  if sampler_mesh is mesh:
    sampling -= device_bytes(state.params)
    what = "optimizer state + reference"
  elif _samples_from_base(config):
    sampling += device_bytes(_sampler_params(model_cfg, mesh, sampler_mesh))
    what += " + the reference's sampler replica"
  return sampling, what


def _samples_from_base(config) -> bool:
  for name, _ in schedule.phases(config):
    algo = algorithms.get(name)
    if algo.offline_first_attempts and config.stage2.offline_first_attempt_ratio > 0:
      return True
    if algo.collection is not None and algo.collection.source == "base":
      return True
  return False


def abstract_experience(rows: int, slots: int, attempts: int, fields, mesh: Mesh):
  """An Experience of ShapeDtypeStructs with the shardings `Experience.place` gives."""
  shape_of = {("batch", "slots"): (rows, slots), ("batch", "attempts"): (rows, attempts), (): ()}
  batch = experience.Experience(
    **{k: np.zeros((), experience.FIELDS[k].dtype) for k in fields}  # placeholders for present()
  )
  shardings = batch.shardings(mesh)
  return batch.replace(
    **{
      k: _sds(
        shape_of[experience.FIELDS[k].axes], experience.FIELDS[k].dtype, getattr(shardings, k)
      )
      for k in fields
    }
  )


def _update_programs(config, model_cfg, mesh, shapes: Shapes, last_only: bool) -> list[Program]:
  oc = setup_lib.optim_config(config)
  optimizer = optim.make_optimizer(oc)
  steps = steps_lib.Steps(
    model_cfg,
    setup_lib.loss_config(config),
    optimizer,
    mesh,
    config.train.num_microbatches,
    optim.make_schedule(oc),
  )
  state = optim.abstract_train_state(model_cfg, optimizer, mesh)
  ref = abstract_params(model_cfg, steps.param_shardings)
  repl = NamedSharding(mesh, P())
  coef = jax.tree.map(lambda x: _sds(np.shape(x), np.asarray(x).dtype, repl), Coefficients.of())
  out = []
  phases = list(dict.fromkeys(name for name, _ in schedule.phases(config)))
  for phase in phases[-1:] if last_only else phases:
    step = steps.update(phase)
    algo = algorithms.get(phase)
    if algo.objective == "sft":
      continue  # SFT phases: see the closing note of the preflight module
    k = algo.num_attempts(shapes.num_attempts)
    slots = shapes.prompt_len + k * shapes.gen_len + (k - 1) * shapes.append_len
    batch = abstract_experience(shapes.global_batch, slots, k, steps_lib.POLICY_FIELDS, mesh)

    def lower(_, step=step, batch=batch):
      with mesh_lib.use_rules(mesh):
        return step._jit(batch).lower(state, ref, batch, coef)

    out.append(
      Program(
        name=f"update:{phase}",
        lower=lower,
        model_flops=flops.policy_update(model_cfg, shapes.global_batch, slots),
        has_loops=model_cfg.scan_layers or shapes.microbatches > 1,
        donates=True,
        what=f"{shapes.global_batch} episodes x {slots} slots, {shapes.microbatches} micro-batches",
      )
    )
  return out


def _sampler_params(model_cfg, mesh: Mesh, sampler_mesh: Mesh) -> PyTree:
  """The sampler's params as `setup.sampler_params` places them (a cast replica per host)."""
  param_sh = setup_lib.sampler_param_shardings(
    model_sharding.param_shardings(model_cfg, mesh), mesh, sampler_mesh
  )
  params = abstract_params(model_cfg, param_sh)
  if sampler_mesh is mesh:
    return params
  cast = jax.eval_shape(functools.partial(decoder.cast_for_inference, model_cfg), params)
  return jax.tree.map(lambda x, sh: _sds(x.shape, x.dtype, sh), cast, param_sh)


def decode_weight_bytes(model_cfg, params, sampler_mesh, weight_gather: str) -> dict:
  """Per device and decode step: the weight bytes its matmuls read (the compute-dtype weights
  with only their FSDP dimension gathered, `generation.programs`), the bytes of its weight
  arguments as placed, and those gathered over the interconnect (only with "per_step")."""

  def per_device(x, spec) -> float:
    axes = [a for entry in spec if entry for a in ((entry,) if isinstance(entry, str) else entry)]
    return x.size * jnp.dtype(x.dtype).itemsize / np.prod([sampler_mesh.shape[a] for a in axes])

  cast = jax.eval_shape(functools.partial(decoder.cast_for_inference, model_cfg), params)
  gathered = sampler_programs.fsdp_gathered_specs(model_cfg, cast, sampler_mesh)
  total = lambda xs, specs: sum(map(per_device, jax.tree.leaves(xs), specs))
  own = [x.sharding.spec for x in jax.tree.leaves(params)]
  read = total(cast, jax.tree.leaves(gathered, is_leaf=lambda x: isinstance(x, P)))
  mine = total(cast, own)
  gather = max(read - mine, 0.0) if weight_gather == "per_step" else 0.0
  return {"read": read, "args": total(params, own), "gather": gather}


def _ops(repl) -> dict:
  """The decode loop's traced sampling settings (`Sampler.generate`)."""
  return {
    "temperature": _sds((), jnp.float32, repl),
    "top_k": _sds((), jnp.int32, repl),
    "top_p": _sds((), jnp.float32, repl),
    "stop_ids": _sds((sampling.MAX_STOP_IDS,), jnp.int32, repl),
    "max_new": _sds((), jnp.int32, repl),
  }


def _sampler_programs(config, model_cfg, mesh, sampler_mesh, shapes: Shapes) -> list[Program]:
  sampler = setup_lib.make_sampler(config, model_cfg, sampler_mesh, PAD_ID)
  params = _sampler_params(model_cfg, mesh, sampler_mesh)
  rows = NamedSharding(sampler_mesh, P(mesh_lib.BATCH_AXES))
  repl = NamedSharding(sampler_mesh, P())
  u, b, s = shapes.sampler_unique, shapes.sampler_rows, shapes
  prefill_args = (
    _sds((u, s.prompt_len), jnp.int32, rows),
    _sds((u, s.prompt_len), jnp.bool_, rows),
  )
  prefill_static = (s.cache_len, s.samples_per_prompt, b // s.samples_per_prompt)

  def lower_prefill(_=None):
    with mesh_lib.use_rules(sampler_mesh):
      return sampler.prefill_fn.lower(params, *prefill_args, *prefill_static)

  def state_after_prefill(executables: dict):
    """The sampler state's shapes with the shardings the compiled prefill gives them."""
    compiled = executables["sampler:prefill"]
    shapes_tree = jax.eval_shape(
      lambda *a: sampler_programs.prefill(model_cfg, *a, *prefill_static), params, *prefill_args
    )
    return jax.tree.map(
      lambda x, sh: _sds(x.shape, x.dtype, sh), shapes_tree, compiled.output_shardings
    )

  def lower_append(executables):
    state = state_after_prefill(executables)
    with mesh_lib.use_rules(sampler_mesh):
      return sampler.append_fn.lower(
        params, state, _sds((b, s.append_len), jnp.int32, rows), _sds((b, s.append_len), bool, rows)
      )

  def lower_decode(executables):
    state = state_after_prefill(executables)
    key, turn = _sds((), jax.random.key(0).dtype, repl), _sds((), jnp.int32, repl)
    with mesh_lib.use_rules(sampler_mesh):
      return sampler.decode_fn.lower(
        s.gen_len,
        PAD_ID,
        s.cache_len,
        params,
        state,
        key,
        _sds((b,), jnp.int32, rows),
        turn,
        _ops(repl),
      )

  per = f"per process: {u} prompts x {s.prompt_len} -> {b} rows, cache {s.cache_len}"
  step_weights = decode_weight_bytes(model_cfg, params, sampler_mesh, config.rollout.weight_gather)
  return [
    Program(
      "sampler:prefill",
      lower_prefill,
      flops.forward(model_cfg, u, s.prompt_len),
      model_cfg.scan_layers,
      False,
      per,
    ),
    Program(
      "sampler:append",
      lower_append,
      flops.forward(model_cfg, b, s.append_len, s.cache_len),
      model_cfg.scan_layers,
      True,
      f"per process: {b} rows x {s.append_len} appended tokens",
      needs="sampler:prefill",
    ),
    Program(
      "sampler:decode",
      lower_decode,
      flops.decode(model_cfg, b, s.gen_len, s.cache_len),
      True,
      True,
      f"per process: {b} rows x {s.gen_len} new tokens (an upper bound: rows stop early)",
      needs="sampler:prefill",
      step_weights=step_weights,
    ),
  ]


def build(
  config,
  devices: Sequence[Any],
  which: Sequence[str] = ("sampler", "update"),
  last_phase_only: bool = False,
  host_devices: Sequence[Any] | None = None,
):
  """The run's programs on `devices` (a topology's, or jax.devices()); nothing compiled yet.

  `which` picks "sampler" and / or "update"; `last_phase_only` keeps only the final phase's
  update (the plan search: every phase of a run has the same shapes). `host_devices`: one
  host's devices (`devices.host_devices`) for the per-process sampler mesh on several hosts.
  """
  unknown = set(which) - {"sampler", "update"}
  if unknown:
    raise ValueError(f"--programs: unknown {sorted(unknown)}; choose from sampler, update")
  mesh, sampler_mesh = setup_lib.make_meshes(config, devices)
  num_processes = len({d.process_index for d in devices})
  if num_processes > 1 and host_devices is not None:
    sampler_mesh = mesh_lib.make_mesh(tuple(sampler_mesh.shape.values()), devices=host_devices)
  setup_lib.check_process_batch(config, sampler_mesh, num_processes)
  model_cfg = model_config(config)
  shapes = shapes_of(config, mesh, sampler_mesh, num_processes)
  programs = []
  if "sampler" in which:
    programs += _sampler_programs(config, model_cfg, mesh, sampler_mesh, shapes)
    kept = resident(config, model_cfg, mesh, sampler_mesh)
    for p in programs:
      p.resident_bytes, p.resident_what = kept
  if "update" in which:
    programs += _update_programs(config, model_cfg, mesh, shapes, last_phase_only)
  return RunPrograms(model_cfg, mesh, sampler_mesh, shapes, programs, num_processes)
