"""Pure, sharded, jitted update steps: Stage I, Stage II, naive multi-turn, SFT, log-prob scoring.

`make_steps` binds everything static (model and loss configs, optimizer, mesh, micro-batches)
outside jit and returns jitted functions with explicit NamedShardings and a donated TrainState.
Each RL step builds the per-token advantages / KL weights from the turn ids and `rewards_ba`
inside the step (losses.stage1_weights / stage2_weights / naive_multiturn_weights), recomputes
policy log-probs at the sampling temperature and reference log-probs (stop-gradient), and
accumulates gradients over micro-batches with a `lax.scan`; the loss uses the GLOBAL normalizer
in the batch, so the update does not depend on sharding or micro-batching.

Batches are episode streams in cache-slot layout (rollout.Episodes), scored by
`stream_scores.stream_scores`; their keys, dtypes and host-side checks are `step_batches`.

Shape letters: b episodes, t stream slots, v vocab, a attempts, m micro-batches.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from score_jax.models.config import ModelConfig
from score_jax.parallel import mesh as mesh_lib
from score_jax.rl import kl as kl_lib
from score_jax.rl import losses, optim
from score_jax.rl.batches import (
  BATCH_AXES,
  DTYPES,
  PACKED_SFT_KEYS,
  RL_KEYS,
  SCORE_KEYS,
  SFT_KEYS,
  STREAM_KEYS,
  validate_batch,
)
from score_jax.rl.scoring import stream_scores

PyTree = Any
Batch = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """The SCoRe objective's hyperparameters (paper defaults for MATH)."""

  alpha: float = 10.0  # alpha: Stage II bonus on r_a - r_{a-1}
  beta1: float = 0.01  # beta1: KL weight of the rewarded attempts
  beta2: float = 0.1  # beta2: Stage I KL weight pinning attempt 1 (0.25 for code)
  samples_per_prompt: int = 2  # g: RLOO group size (consecutive rows share a prompt)
  num_attempts: int = 2  # K: attempts per episode (rewards_ba has K columns)
  temperature: float = 1.0  # the sampler's temperature: log-probs are recomputed under it
  kl_estimator: str = "k1_reward"  # one of kl.ESTIMATORS except the biased 'k1'
  aggregation: str = "token_mean"  # one of losses.AGGREGATIONS
  baseline: str = "rloo"  # one of losses.BASELINES
  kl_clamp: float = kl_lib.DEFAULT_CLAMP  # |log pi - log ref| clamp before any estimator

  def __post_init__(self):
    def need(ok: bool, field: str, msg: str):
      if not ok:
        raise ValueError(f"LossConfig.{field}: {msg} (got {getattr(self, field)!r})")

    need(
      self.kl_estimator in kl_lib.ESTIMATORS and self.kl_estimator != "k1",
      "kl_estimator",
      f"must be one of {tuple(e for e in kl_lib.ESTIMATORS if e != 'k1')}",
    )
    need(
      self.aggregation in losses.AGGREGATIONS,
      "aggregation",
      f"must be one of {losses.AGGREGATIONS}",
    )
    need(self.baseline in losses.BASELINES, "baseline", f"must be one of {losses.BASELINES}")
    need(
      isinstance(self.samples_per_prompt, int) and self.samples_per_prompt >= 1,
      "samples_per_prompt",
      "must be an int >= 1",
    )
    need(
      self.baseline == "none" or self.samples_per_prompt >= 2,
      "samples_per_prompt",
      f"must be >= 2 for baseline={self.baseline!r}",
    )
    need(
      isinstance(self.num_attempts, int) and self.num_attempts >= 2,
      "num_attempts",
      "must be an int >= 2",
    )
    need(self.temperature > 0, "temperature", "must be > 0 (greedy samples have no log-probs)")
    for name in ("alpha", "beta1", "beta2"):
      need(getattr(self, name) >= 0, name, "must be >= 0")
    need(self.kl_clamp > 0, "kl_clamp", "must be > 0")


# ---------------------------------------------------------------------------- shared helpers


def _split_micro(x: jax.Array, m: int) -> jax.Array:
  """[b, ...] -> [m, b/m, ...] with micro-batch j = rows j, j+m, j+2m, ...

  The strided split keeps every micro-batch spread over all batch shards without any data
  movement (each device's contiguous block of rows holds b/(m*shards) rows of every micro-batch).
  """
  return x.reshape((x.shape[0] // m, m) + x.shape[1:]).swapaxes(0, 1)


def _turn_sums(x_bt, m_bt, turn_bt, num_turns: int) -> dict[str, jax.Array]:
  return {a: jnp.sum(x_bt * m_bt * (turn_bt == a)) for a in range(1, num_turns + 1)}


def _accumulate(loss_and_grad: Callable, params: PyTree, grad_sh, mb_tree: Batch, m: int):
  """Sums gradients and additive metrics over m micro-batches ([m, ...] leaves) with lax.scan."""
  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
  zeros = jax.lax.with_sharding_constraint(zeros, grad_sh)

  def body(acc, mb):
    (_, sums), grads = loss_and_grad(params, mb)
    g_acc, s_acc = acc
    g_acc = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), g_acc, grads)
    g_acc = jax.lax.with_sharding_constraint(g_acc, grad_sh)
    # Metrics named *_max combine by maximum, all others are additive sums.
    s_acc = {n: (jnp.maximum if n.endswith("_max") else jnp.add)(s_acc[n], sums[n]) for n in sums}
    return (g_acc, s_acc), None

  first = jax.tree.map(lambda x: x[0], mb_tree)
  _, sums0 = jax.eval_shape(lambda: loss_and_grad(params, first))[0]
  s_zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sums0)
  (grads, sums), _ = jax.lax.scan(body, (zeros, s_zero), mb_tree, length=m)
  return grads, sums


def _apply_update(optimizer, schedule, state: optim.TrainState, grads, loss, metrics):
  """AdamW update, skipped as a whole when the loss or the gradient is not finite.

  The skip happens here (not in the train loop) because the old state is donated.
  """
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  new_state = state.replace(
    params=keep(params, state.params),
    opt_state=keep(opt_state, state.opt_state),
    step=state.step + finite.astype(jnp.int32),
  )
  metrics = {
    **metrics,
    "loss": loss,
    "grad_norm": grad_norm,
    "finite": finite,
  }
  if schedule is not None:
    metrics["lr"] = schedule(state.step)
  return new_state, metrics


def _rl_update(
  ctx: "_Ctx", weights_fn: Callable, state: optim.TrainState, ref_params, batch: Batch
):
  """The update shared by every RL step; `weights_fn(turn_bt, rewards_ba) -> (adv_bt, kl_bt)`."""
  lc, k, m = ctx.loss_cfg, ctx.loss_cfg.num_attempts, ctx.num_microbatches
  # RLOO groups span consecutive rows, so weights come from the FULL batch before splitting.
  adv_bt, kl_bt = weights_fn(batch["turn"], batch["rewards"])
  norm = batch["normalizer"]
  stream = {key: batch[key] for key in STREAM_KEYS}
  mb_tree = jax.tree.map(lambda x: _split_micro(x, m), {**stream, "adv": adv_bt, "klw": kl_bt})

  def loss_and_grad(params, mb):
    mb = jax.lax.with_sharding_constraint(mb, jax.tree.map(lambda _: ctx.batch_sh, mb))
    ref_logp_bt, _ = stream_scores(ctx.model_cfg, ref_params, mb, lc.temperature)
    ref_logp_bt = jax.lax.stop_gradient(ref_logp_bt)
    m_bt = mb["loss_mask"].astype(jnp.float32)

    def loss_fn(p):
      logp_bt, ent_bt = stream_scores(ctx.model_cfg, p, mb, lc.temperature, with_entropy=True)
      loss, aux = losses.policy_loss(
        logp_bt,
        ref_logp_bt,
        mb["adv"],
        mb["klw"],
        mb["loss_mask"],
        kl_estimator=lc.kl_estimator,
        aggregation=lc.aggregation,
        normalizer=norm,
        clamp=lc.kl_clamp,
        turn_bt=mb["turn"],
        num_turns=k,
      )
      sums = {"pg_loss": aux["pg_loss"], "kl_loss": aux["kl_loss"]}
      ent = _turn_sums(jax.lax.stop_gradient(ent_bt), m_bt, mb["turn"], k)
      diff_bt = jnp.abs(jax.lax.stop_gradient(logp_bt) - mb["logp"]) * m_bt
      sums["logp_diff_max"] = jnp.max(diff_bt)
      for a in range(1, k + 1):
        n_a = aux[f"tokens_turn{a}"]
        # policy_loss reports per-turn means; mean * count restores the additive sums.
        sums[f"kl_k1_turn{a}"] = aux[f"kl_k1_turn{a}"] * n_a
        sums[f"kl_k3_turn{a}"] = aux[f"kl_k3_turn{a}"] * n_a
        sums[f"entropy_turn{a}"] = ent[a]
        sums[f"tokens_turn{a}"] = n_a
      return loss, sums

    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  grads, sums = _accumulate(loss_and_grad, state.params, ctx.grad_sh, mb_tree, m)
  metrics = {"pg_loss": sums["pg_loss"], "kl_loss": sums["kl_loss"]}
  for a in range(1, k + 1):
    n_a = jnp.maximum(sums[f"tokens_turn{a}"], 1.0)
    for name in ("kl_k1", "kl_k3", "entropy"):
      metrics[f"{name}_turn{a}"] = sums[f"{name}_turn{a}"] / n_a
    metrics[f"tokens_turn{a}"] = sums[f"tokens_turn{a}"]
  metrics["logp_diff_max"] = sums["logp_diff_max"]
  metrics.update(_adv_stats(adv_bt, batch["loss_mask"], batch["rewards"]))
  loss = sums["pg_loss"] + sums["kl_loss"]
  return _apply_update(ctx.optimizer, ctx.schedule, state, grads, loss, metrics)


def _adv_stats(adv_bt, loss_mask_bt, rewards_ba) -> dict[str, jax.Array]:
  m_bt = loss_mask_bt.astype(jnp.float32)
  n = jnp.maximum(jnp.sum(m_bt), 1.0)
  mean = jnp.sum(adv_bt * m_bt) / n
  out = {
    "adv_mean": mean,
    "adv_std": jnp.sqrt(jnp.sum(jnp.square(adv_bt - mean) * m_bt) / n),
    "adv_abs_max": jnp.max(jnp.abs(adv_bt) * m_bt),
  }
  for a in range(rewards_ba.shape[1]):
    out[f"reward_turn{a + 1}"] = jnp.mean(rewards_ba[:, a])
  return out


# ---------------------------------------------------------------------------- the steps


@dataclasses.dataclass(frozen=True)
class _Ctx:
  """Static things every step closes over (bound outside jit)."""

  model_cfg: ModelConfig
  loss_cfg: LossConfig
  optimizer: optax.GradientTransformation
  schedule: Callable | None
  num_microbatches: int
  batch_sh: NamedSharding
  grad_sh: PyTree


def stage1_update(ctx: _Ctx, state: optim.TrainState, ref_params, batch: Batch):
  """Stage I (paper Eq. 3): reward only the last attempt, pin attempt 1 to the reference (beta2)."""
  lc = ctx.loss_cfg
  weights = lambda turn, r: losses.stage1_weights(
    turn, r, lc.samples_per_prompt, lc.beta1, lc.beta2, lc.baseline
  )
  return _rl_update(ctx, weights, state, ref_params, batch)


def stage2_update(ctx: _Ctx, state: optim.TrainState, ref_params, batch: Batch):
  """Stage II (paper Eq. 4): every attempt rewarded, later ones with the alpha progress bonus."""
  lc = ctx.loss_cfg
  weights = lambda turn, r: losses.stage2_weights(
    turn, r, lc.samples_per_prompt, lc.alpha, lc.beta1, lc.baseline
  )
  return _rl_update(ctx, weights, state, ref_params, batch)


def naive_multiturn_update(ctx: _Ctx, state: optim.TrainState, ref_params, batch: Batch):
  """The paper's naive multi-turn RL baseline: Stage II machinery, reward on the last attempt."""
  lc = ctx.loss_cfg
  weights = lambda turn, r: losses.naive_multiturn_weights(
    turn, r, lc.samples_per_prompt, lc.beta1, lc.baseline
  )
  return _rl_update(ctx, weights, state, ref_params, batch)


def sft_update(ctx: _Ctx, state: optim.TrainState, batch: Batch):
  """Masked next-token NLL on the stream (Pair-SFT / STaR baselines); loss_mask marks targets.

  A batch with 'segments' (PACKED_SFT_KEYS) holds several sequences per row, scored apart.
  """
  lc, m = ctx.loss_cfg, ctx.num_microbatches
  streams = {k: v for k, v in batch.items() if k != "normalizer"}
  mb_tree = jax.tree.map(lambda x: _split_micro(x, m), streams)

  def loss_and_grad(params, mb):
    mb = jax.lax.with_sharding_constraint(mb, jax.tree.map(lambda _: ctx.batch_sh, mb))

    def loss_fn(p):
      # The SFT targets are data, not samples: scored at temperature 1.
      logp_bt, _ = stream_scores(ctx.model_cfg, p, mb, 1.0)
      m_bt = mb["loss_mask"].astype(jnp.float32)
      loss = losses.aggregate(-logp_bt, m_bt, lc.aggregation, batch["normalizer"])
      return loss, {
        "nll_sum": -jnp.sum(jax.lax.stop_gradient(logp_bt) * m_bt),
        "tokens": jnp.sum(m_bt),
      }

    (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return (loss, {**sums, "loss": loss}), grads

  grads, sums = _accumulate(loss_and_grad, state.params, ctx.grad_sh, mb_tree, m)
  metrics = {
    "nll_token_mean": sums["nll_sum"] / jnp.maximum(sums["tokens"], 1.0),
    "tokens": sums["tokens"],
  }
  return _apply_update(ctx.optimizer, ctx.schedule, state, grads, sums["loss"], metrics)


def logprob_scores(ctx: _Ctx, params, ref_params, batch: Batch) -> dict[str, jax.Array]:
  """Policy and reference log-probs of every slot at the loss temperature, [b, t] each."""
  m, temp = ctx.num_microbatches, ctx.loss_cfg.temperature
  mb_tree = jax.tree.map(lambda x: _split_micro(x, m), {k: batch[k] for k in SCORE_KEYS})

  def score(mb):
    mb = jax.lax.with_sharding_constraint(mb, jax.tree.map(lambda _: ctx.batch_sh, mb))
    return {
      "logp": stream_scores(ctx.model_cfg, params, mb, temp)[0],
      "ref_logp": stream_scores(ctx.model_cfg, ref_params, mb, temp)[0],
    }

  out = jax.lax.map(score, mb_tree)
  # Undo the strided split: [m, b/m, t] -> [b/m, m, t] -> [b, t].
  return jax.tree.map(lambda x: x.swapaxes(0, 1).reshape((-1,) + x.shape[2:]), out)


# ---------------------------------------------------------------------------- host side


class JitStep:
  """A jitted step plus its host side: validate, cast and place the batch, enter the rules."""

  def __init__(
    self, fn, keys, ctx: _Ctx, mesh: Mesh, in_shardings, out_shardings, donate=(), options=None
  ):
    self.keys, self.ctx, self.mesh = tuple(keys), ctx, mesh
    repl = NamedSharding(mesh, P())
    self.batch_shardings = {k: repl if k == "normalizer" else ctx.batch_sh for k in self.keys}
    self.jitted = jax.jit(
      fn,
      in_shardings=(*in_shardings, self.batch_shardings),
      out_shardings=out_shardings,
      donate_argnums=donate,
      compiler_options=options,
    )

  def place(self, batch: Batch) -> Batch:
    """Validated batch with the step's dtypes, placed with its NamedShardings."""
    lc = self.ctx.loss_cfg
    validate_batch(
      batch, self.keys, self.mesh, num_attempts=lc.num_attempts,
      samples_per_prompt=lc.samples_per_prompt, num_microbatches=self.ctx.num_microbatches,
      vocab_size=self.ctx.model_cfg.vocab_size,
    )  # fmt: skip
    cast = {
      k: jnp.asarray(batch[k], DTYPES[k])
      if isinstance(batch[k], jax.Array)
      else np.asarray(batch[k], DTYPES[k])
      for k in self.keys
    }
    return jax.device_put(cast, self.batch_shardings)

  def __call__(self, *args):
    *head, batch = args
    batch = self.place(batch)
    with mesh_lib.use_rules(self.mesh):
      return self.jitted(*head, batch)

  def lower(self, *args):
    """Lowers for these arguments (e.g. for `.compile().cost_analysis()`)."""
    *head, batch = args
    with mesh_lib.use_rules(self.mesh):
      return self.jitted.lower(*head, self.place(batch))


@dataclasses.dataclass(frozen=True)
class Steps:
  """The jitted steps of one (model, loss, optimizer, mesh) and the shardings they use."""

  stage1: JitStep  # (state, ref_params, batch) -> (state, metrics)
  stage2: JitStep  # (state, ref_params, batch) -> (state, metrics)
  naive_multiturn: JitStep  # (state, ref_params, batch) -> (state, metrics)
  sft: JitStep  # (state, batch) -> (state, metrics)
  packed_sft: JitStep  # sft on PACKED_SFT_KEYS batches: several sequences per row
  logprob: JitStep  # (params, ref_params, batch) -> {'logp', 'ref_logp'} [b, t]
  state_shardings: optim.TrainState
  param_shardings: PyTree
  mesh: Mesh


def make_steps(
  model_cfg: ModelConfig,
  loss_cfg: LossConfig,
  optimizer: optax.GradientTransformation,
  mesh: Mesh,
  num_microbatches: int = 1,
  schedule: Callable | None = None,
  compiler_options: dict[str, Any] | None = None,
) -> Steps:
  """Builds every step for this configuration; nothing is compiled until the first call.

  Args:
    model_cfg: the decoder (policy and reference share it; only params differ).
    loss_cfg: the objective's hyperparameters.
    optimizer: from `optim.make_optimizer`; `schedule` (optim.make_schedule) reports the lr.
    mesh: from `sharding.make_mesh`.
    num_microbatches: gradient accumulation factor; the result equals one full batch.
    schedule: the optimizer's lr schedule, reported as metric 'lr' (omitted when None).
    compiler_options: XLA options for every step (tests use FAST_COMPILE on CPU).
  """
  if not isinstance(loss_cfg, LossConfig):
    raise TypeError(f"loss_cfg must be a steps.LossConfig, got {type(loss_cfg).__name__}")
  if not isinstance(num_microbatches, int) or num_microbatches < 1:
    raise ValueError(f"num_microbatches must be an int >= 1, got {num_microbatches!r}")
  state_sh = optim.train_state_shardings(model_cfg, optimizer, mesh)
  ctx = _Ctx(
    model_cfg=model_cfg,
    loss_cfg=loss_cfg,
    optimizer=optimizer,
    schedule=schedule,
    num_microbatches=num_microbatches,
    batch_sh=NamedSharding(mesh, P(BATCH_AXES)),
    grad_sh=state_sh.params,
  )
  repl = NamedSharding(mesh, P())
  p_sh = state_sh.params
  opts = compiler_options

  def rl_step(update):
    shardings = ((state_sh, p_sh), (state_sh, repl))
    return JitStep(functools.partial(update, ctx), RL_KEYS, ctx, mesh, *shardings, (0,), opts)

  def sft_step(keys):
    shardings = ((state_sh,), (state_sh, repl))
    return JitStep(functools.partial(sft_update, ctx), keys, ctx, mesh, *shardings, (0,), opts)

  return Steps(
    stage1=rl_step(stage1_update),
    stage2=rl_step(stage2_update),
    naive_multiturn=rl_step(naive_multiturn_update),
    sft=sft_step(SFT_KEYS),
    packed_sft=sft_step(PACKED_SFT_KEYS),
    logprob=JitStep(
      functools.partial(logprob_scores, ctx),
      SCORE_KEYS,
      ctx,
      mesh,
      (p_sh, p_sh),
      ctx.batch_sh,
      (),
      opts,
    ),
    state_shardings=state_sh,
    param_shardings=p_sh,
    mesh=mesh,
  )
