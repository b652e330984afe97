"""The update math every step shares: micro-batched gradients, the RL and SFT updates, scoring.

Pure functions of (static setup, train state, reference params, Experience, coefficients),
jitted by `score_jax.rl.steps`. An RL update builds the per-token advantages and KL weights
from the turn ids and rewards with its algorithm's weight builder (rl.algorithms) INSIDE the
step, recomputes policy log-probs at the sampling temperature and reference log-probs
(stop-gradient), and accumulates gradients over micro-batches with a `lax.scan`; the loss uses
the GLOBAL normalizer in the batch, so the update does not depend on sharding or
micro-batching.

Shape letters: b episodes, t stream slots, v vocab, a attempts, m micro-batches.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from score_jax.models.config import ModelConfig
from score_jax.rl import losses, optim
from score_jax.rl.algorithms import Algorithm, Coefficients
from score_jax.rl.experience import Experience
from score_jax.rl.scoring import stream_scores

PyTree = Any


@dataclasses.dataclass(frozen=True)
class StepSetup:
  """What every step binds outside jit: model, loss settings, optimizer, micro-batches,
  shardings."""

  model_cfg: ModelConfig
  loss_cfg: Any  # steps.LossConfig
  optimizer: optax.GradientTransformation
  schedule: Callable | None
  num_microbatches: int
  batch_sh: NamedSharding
  grad_sh: PyTree


def _split_micro(x: jax.Array, m: int) -> jax.Array:
  """[b, ...] -> [m, b/m, ...] with micro-batch j = rows j, j+m, j+2m, ...

  The strided split keeps every micro-batch spread over all batch shards without any data
  movement (each device's contiguous block of rows holds b/(m*shards) rows of every micro-batch).
  """
  return x.reshape((x.shape[0] // m, m) + x.shape[1:]).swapaxes(0, 1)


def _turn_sums(x_bt, m_bt, turn_bt, num_turns: int) -> dict[str, jax.Array]:
  return {a: jnp.sum(x_bt * m_bt * (turn_bt == a)) for a in range(1, num_turns + 1)}


def _accumulate(loss_and_grad: Callable, params: PyTree, grad_sh, mb_tree: PyTree, m: int):
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


def _apply_update(setup: StepSetup, state: optim.TrainState, grads, loss, metrics):
  """AdamW update, skipped as a whole when the loss or the gradient is not finite.

  The skip happens here (not in the train loop) because the old state is donated.
  """
  optimizer, schedule = setup.optimizer, setup.schedule
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


def policy_update(
  setup: StepSetup,
  algorithm: Algorithm,
  state: optim.TrainState,
  ref_params: PyTree,
  batch: Experience,
  coef: Coefficients,
):
  """One REINFORCE update with `algorithm`'s per-token advantages and KL weights."""
  lc, k, m = setup.loss_cfg, setup.loss_cfg.num_attempts, setup.num_microbatches
  # RLOO groups span consecutive rows, so weights come from the FULL batch before splitting.
  adv_bt, kl_bt = algorithm.weights(
    batch.turn, batch.rewards, lc.samples_per_prompt, coef, lc.baseline
  )
  norm = batch.normalizer
  rows = batch.replace(rewards=None, normalizer=None)
  mb_tree = jax.tree.map(lambda x: _split_micro(x, m), (rows, adv_bt, kl_bt))

  def loss_and_grad(params, mb_parts):
    mb_parts = jax.lax.with_sharding_constraint(
      mb_parts, jax.tree.map(lambda _: setup.batch_sh, mb_parts)
    )
    mb, mb_adv, mb_klw = mb_parts
    n = lc.max_loss_tokens  # logits only before the loss tokens (None: at every slot)
    ref_logp_bt, _ = stream_scores(setup.model_cfg, ref_params, mb, lc.temperature, max_scored=n)
    ref_logp_bt = jax.lax.stop_gradient(ref_logp_bt)
    m_bt = mb.loss_mask.astype(jnp.float32)

    def loss_fn(p):
      logp_bt, ent_bt = stream_scores(
        setup.model_cfg, p, mb, lc.temperature, with_entropy=True, max_scored=n
      )
      loss, aux = losses.policy_loss(
        logp_bt,
        ref_logp_bt,
        mb_adv,
        mb_klw,
        mb.loss_mask,
        kl_estimator=lc.kl_estimator,
        aggregation=lc.aggregation,
        normalizer=norm,
        clamp=lc.kl_clamp,
        turn_bt=mb.turn,
        num_turns=k,
      )
      sums = {"pg_loss": aux["pg_loss"], "kl_loss": aux["kl_loss"]}
      ent = _turn_sums(jax.lax.stop_gradient(ent_bt), m_bt, mb.turn, k)
      diff_bt = jnp.abs(jax.lax.stop_gradient(logp_bt) - mb.logp) * m_bt
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

  grads, sums = _accumulate(loss_and_grad, state.params, setup.grad_sh, mb_tree, m)
  return _apply_update(
    setup, state, grads, sums["pg_loss"] + sums["kl_loss"], _policy_metrics(sums, k, adv_bt, batch)
  )


def _policy_metrics(sums, k: int, adv_bt, batch: Experience) -> dict[str, jax.Array]:
  metrics = {"pg_loss": sums["pg_loss"], "kl_loss": sums["kl_loss"]}
  for a in range(1, k + 1):
    n_a = jnp.maximum(sums[f"tokens_turn{a}"], 1.0)
    for name in ("kl_k1", "kl_k3", "entropy"):
      metrics[f"{name}_turn{a}"] = sums[f"{name}_turn{a}"] / n_a
    metrics[f"tokens_turn{a}"] = sums[f"tokens_turn{a}"]
  metrics["logp_diff_max"] = sums["logp_diff_max"]
  metrics.update(_adv_stats(adv_bt, batch.loss_mask, batch.rewards))
  return metrics


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


def sft_update(setup: StepSetup, state: optim.TrainState, batch: Experience):
  """Masked next-token NLL on the stream (pretraining, Pair-SFT, STaR); loss_mask marks targets.

  A batch with `segments` holds several sequences per row (packed), scored apart.
  """
  lc, m = setup.loss_cfg, setup.num_microbatches
  mb_tree = jax.tree.map(lambda x: _split_micro(x, m), batch.replace(normalizer=None))

  def loss_and_grad(params, mb):
    mb = jax.lax.with_sharding_constraint(mb, jax.tree.map(lambda _: setup.batch_sh, mb))

    def loss_fn(p):
      # The SFT targets are data, not samples: scored at temperature 1.
      logp_bt, _ = stream_scores(setup.model_cfg, p, mb, 1.0)
      m_bt = mb.loss_mask.astype(jnp.float32)
      loss = losses.aggregate(-logp_bt, m_bt, lc.aggregation, batch.normalizer)
      return loss, {
        "nll_sum": -jnp.sum(jax.lax.stop_gradient(logp_bt) * m_bt),
        "tokens": jnp.sum(m_bt),
      }

    (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return (loss, {**sums, "loss": loss}), grads

  grads, sums = _accumulate(loss_and_grad, state.params, setup.grad_sh, mb_tree, m)
  metrics = {
    "nll_token_mean": sums["nll_sum"] / jnp.maximum(sums["tokens"], 1.0),
    "tokens": sums["tokens"],
  }
  return _apply_update(setup, state, grads, sums["loss"], metrics)


def logprob_scores(setup: StepSetup, params, ref_params, batch: Experience) -> dict[str, jax.Array]:
  """Policy and reference log-probs of every slot at the loss temperature, [b, t] each."""
  m, temp = setup.num_microbatches, setup.loss_cfg.temperature
  mb_tree = jax.tree.map(lambda x: _split_micro(x, m), batch)

  def score(mb):
    mb = jax.lax.with_sharding_constraint(mb, jax.tree.map(lambda _: setup.batch_sh, mb))
    return {
      "logp": stream_scores(setup.model_cfg, params, mb, temp)[0],
      "ref_logp": stream_scores(setup.model_cfg, ref_params, mb, temp)[0],
    }

  out = jax.lax.map(score, mb_tree)
  # Undo the strided split: [m, b/m, t] -> [b/m, m, t] -> [b, t].
  return jax.tree.map(lambda x: x.swapaxes(0, 1).reshape((-1,) + x.shape[2:]), out)
