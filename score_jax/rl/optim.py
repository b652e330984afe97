"""The optimizer (AdamW, global-norm clipping, warmup + decay schedule) and the TrainState it
updates.

The TrainState is built abstractly and born sharded: optimizer moments take their parameter's
NamedSharding (matched through `optax.tree_map_params`), scalars are replicated.

The paper trains with Adam (the paper's Table 8); weight decay therefore defaults to 0 and,
when set, skips RMSNorm scales and biases. The frozen reference parameters never enter here.
"""

import dataclasses
import functools
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from score_jax.models import decoder
from score_jax.models import sharding as model_sharding
from score_jax.models.config import ModelConfig
from score_jax.parallel import mesh as mesh_lib

PyTree = Any

DECAYS = ("constant", "cosine", "linear")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """Optimizer and learning-rate schedule (validated at construction)."""

  learning_rate: float = 1e-6  # peak lr after warmup
  warmup_steps: int = 0  # linear warmup: step s (0-based) uses lr * min(1, (s + 1) / warmup)
  decay: str = "constant"  # after warmup: constant | cosine | linear (to end_lr_ratio * lr)
  total_steps: int = 0  # where cosine/linear decay reaches its end (required for them)
  end_lr_ratio: float = 0.0  # final lr / peak lr of cosine/linear decay
  b1: float = 0.9  # Adam beta1
  b2: float = 0.999  # Adam beta2
  eps: float = 1e-8  # Adam epsilon
  weight_decay: float = 0.0  # decoupled (AdamW); the paper uses plain Adam
  max_grad_norm: float = 1.0  # global-norm clipping threshold; 0 = off

  def __post_init__(self):
    def need(ok: bool, field: str, msg: str):
      if not ok:
        raise ValueError(f"OptimConfig.{field}: {msg} (got {getattr(self, field)!r})")

    need(self.learning_rate > 0 and math.isfinite(self.learning_rate), "learning_rate", "> 0")
    need(isinstance(self.warmup_steps, int) and self.warmup_steps >= 0, "warmup_steps", "int >= 0")
    need(self.decay in DECAYS, "decay", f"must be one of {DECAYS}")
    need(isinstance(self.total_steps, int) and self.total_steps >= 0, "total_steps", "int >= 0")
    if self.decay != "constant":
      need(
        self.total_steps > self.warmup_steps,
        "total_steps",
        f"must exceed warmup_steps={self.warmup_steps} for decay={self.decay!r}",
      )
    need(0.0 <= self.end_lr_ratio <= 1.0, "end_lr_ratio", "must be in [0, 1]")
    need(0.0 <= self.b1 < 1.0, "b1", "must be in [0, 1)")
    need(0.0 <= self.b2 < 1.0, "b2", "must be in [0, 1)")
    need(self.eps > 0, "eps", "must be > 0")
    need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
    need(self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0 (0 = no clipping)")


def make_schedule(cfg: OptimConfig) -> optax.Schedule:
  """lr(step): linear warmup that reaches the peak at step warmup-1, then the configured decay.

  The warmup starts at lr/warmup rather than 0 so the first update is never a no-op.
  """

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = jnp.minimum(1.0, (step + 1.0) / max(cfg.warmup_steps, 1))
    if cfg.decay == "constant":
      return cfg.learning_rate * warm
    span = float(cfg.total_steps - cfg.warmup_steps)
    frac = jnp.clip((step - cfg.warmup_steps) / span, 0.0, 1.0)
    shape = 0.5 * (1.0 + jnp.cos(jnp.pi * frac)) if cfg.decay == "cosine" else 1.0 - frac
    end = cfg.end_lr_ratio
    return cfg.learning_rate * warm * (end + (1.0 - end) * shape)

  return schedule


def decay_mask(params):
  """True for leaves that get weight decay: kernels and embeddings, not norm scales or biases."""

  def keep(path, _):
    names = [getattr(k, "key", getattr(k, "name", "")) for k in path]
    return not any(n in ("scale", "bias") or str(n).endswith("_bias") for n in names)

  return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
  """Clip by global norm -> Adam moments -> decoupled weight decay -> scheduled lr step."""
  parts = []
  if cfg.max_grad_norm > 0:
    parts.append(optax.clip_by_global_norm(cfg.max_grad_norm))
  parts.append(optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))
  if cfg.weight_decay > 0:
    parts.append(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask))
  parts.append(optax.scale_by_learning_rate(make_schedule(cfg)))
  return optax.chain(*parts)


@flax.struct.dataclass
class TrainState:
  """Everything an update changes. `rng` is a raw uint32 key (portable through checkpoints)."""

  params: PyTree
  opt_state: PyTree
  step: jax.Array  # int32 []: number of applied updates (= the schedule's step)
  rng: jax.Array  # uint32 [2]


def train_state_shardings(config: ModelConfig, optimizer, mesh: Mesh) -> TrainState:
  """NamedShardings of a TrainState: optimizer moments follow their params; scalars replicated."""
  params_abs = decoder.abstract_params(config)
  param_sh = model_sharding.param_shardings(config, mesh)
  opt_abs = jax.eval_shape(optimizer.init, params_abs)
  repl = NamedSharding(mesh, P())
  opt_sh = optax.tree_map_params(
    optimizer, lambda _, sh: sh, opt_abs, param_sh, transform_non_params=lambda _: repl
  )
  return TrainState(params=param_sh, opt_state=opt_sh, step=repl, rng=repl)


def abstract_train_state(config: ModelConfig, optimizer, mesh: Mesh) -> TrainState:
  """TrainState of jax.ShapeDtypeStruct carrying `.sharding` (no memory, no compute)."""
  sh = train_state_shardings(config, optimizer, mesh)
  shapes = jax.eval_shape(lambda: _new_state(config, optimizer, None, jax.random.PRNGKey(0)))
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, sh)


def _new_state(config, optimizer, params, rng) -> TrainState:
  init_rng, state_rng = jax.random.split(rng)
  if params is None:
    params = decoder.init_params(config, init_rng)
  step = jnp.zeros((), jnp.int32)
  return TrainState(params=params, opt_state=optimizer.init(params), step=step, rng=state_rng)


def init_train_state(
  config: ModelConfig, optimizer, mesh: Mesh, rng: jax.Array, params: PyTree | None = None
) -> TrainState:
  """A TrainState born sharded: fresh parameters from `rng`, or `params` (e.g. a checkpoint)."""
  sh = train_state_shardings(config, optimizer, mesh)
  rng = jnp.asarray(
    jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng, jnp.uint32
  )
  with mesh_lib.use_rules(mesh):
    fn = functools.partial(_new_state, config, optimizer)
    if params is None:
      return jax.jit(lambda r: fn(None, r), out_shardings=sh)(rng)
    return jax.jit(fn, in_shardings=(sh.params, None), out_shardings=sh)(params, rng)
