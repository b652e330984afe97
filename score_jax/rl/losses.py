"""The SCoRe objective as small pure functions: log-probs, RLOO, per-turn weights, aggregation.

Owns: gathered token log-probs and entropy, RLOO advantages, the per-token advantage / KL-weight
arrays of Stage I, Stage II and the baselines (built from the turn ids of an episode stream),
reward shaping, loss aggregation with GLOBAL normalizers, the REINFORCE policy loss and the SFT
loss. The KL estimators and the adaptive beta2 controller live in `score_jax.rl.kl`.

Conventions:
- Batch layout is prompt-major: row i answers prompt i // g (b = p * g).
- turn_bt: 0 = tokens we wrote (prompt, instruction, padding), a = attempt a (1..K).
- rewards_ba: host-side float rewards per episode and attempt (binary in the paper).
- Weight builders are pure array code: NumPy in -> NumPy out (no device transfer on the host),
  jax arrays in -> jax arrays out (also under jit).

Shape letters: b batch (episodes), t tokens, v vocab, g samples per prompt, p prompts (b = p*g),
a attempts.
"""

import jax
import jax.numpy as jnp
import numpy as np

from score_jax.rl import kl as kl_lib

BASELINES = ("rloo", "mean", "none")
AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "constant")


def _xp(*arrays):
  """NumPy when every input is host data, else jax.numpy."""
  return jnp if any(isinstance(x, jax.Array) for x in arrays) else np


def _concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def shift_targets(tokens_bt, fill: int = 0):
  """Targets for logits: logits at position t predict token t+1, so targets[:, t] = tokens[:, t+1].

  The last position has no next token and gets `fill`; mask it out. Per-token arrays indexed by
  token (turn ids, loss masks) shift the same way to line up with `token_logprobs`.
  """
  xp = _xp(tokens_bt)
  pad = xp.full_like(tokens_bt[:, :1], fill)
  return xp.concatenate([tokens_bt[:, 1:], pad], axis=1)


def _check_temperature(temperature) -> None:
  if isinstance(temperature, (int, float)) and temperature <= 0:
    raise ValueError(
      f"temperature must be > 0 for training log-probs, got {temperature} (greedy samples "
      "have no on-policy log-probs)"
    )


def token_logprobs(logits_btv: jax.Array, targets_bt: jax.Array, temperature=1.0) -> jax.Array:
  """log_softmax(logits / T) gathered at the targets, float32 [b, t].

  Computed as z[target] - logsumexp(z): the only [b, t, v] values are the scaled logits, no
  probability or KL tensor over the vocabulary is built. Use `shift_targets` for alignment.
  """
  _check_temperature(temperature)
  if logits_btv.shape[:2] != targets_bt.shape:
    raise ValueError(
      f"logits_btv {logits_btv.shape} and targets_bt {targets_bt.shape} disagree on [b, t]"
    )
  z_btv = logits_btv.astype(jnp.float32) / temperature
  picked_bt = jnp.take_along_axis(z_btv, targets_bt[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return picked_bt - jax.nn.logsumexp(z_btv, axis=-1)


def sequence_logprobs(logits_btv: jax.Array, tokens_bt: jax.Array, temperature=1.0) -> jax.Array:
  """Log-probs indexed by TOKEN: out[:, t] = log p(tokens[t] | tokens[<t]), out[:, 0] = 0.

  The same convention as `rl.scoring.stream_scores` (without holes), so turn ids and loss masks of
  the stream apply unshifted.
  """
  logp_bt = token_logprobs(logits_btv[:, :-1], tokens_bt[:, 1:], temperature)
  return jnp.concatenate([jnp.zeros_like(logp_bt[:, :1]), logp_bt], axis=1)


def token_entropy(logits_btv: jax.Array, temperature=1.0) -> jax.Array:
  """Entropy of softmax(logits / T) per position, float32 [b, t]; for metrics only."""
  _check_temperature(temperature)
  z_btv = jax.lax.stop_gradient(logits_btv.astype(jnp.float32)) / temperature
  logz_bt = jax.nn.logsumexp(z_btv, axis=-1)
  # H = logZ - E_p[z]; XLA fuses exp and the product into the reduction.
  return logz_bt - jnp.sum(jnp.exp(z_btv - logz_bt[..., None]) * z_btv, axis=-1)


def rloo_advantages(rewards_b, num_samples: int, baseline: str = "rloo"):
  """Per-sample advantages over each prompt's g consecutive samples (prompt-major layout).

  Args:
    rewards_b: [b, ...] rewards; trailing axes (e.g. attempts) are handled independently.
    num_samples: g samples per prompt; b must be a multiple of g.
    baseline: 'rloo' r_i - mean_{j!=i} r_j (Ahmadian et al. 2024, the paper's estimator; g>=2);
      'mean' r_i - mean_j r_j (GRPO-style, biased by a factor (g-1)/g, g>=2); 'none' plain
      REINFORCE without a baseline (ablations).

  Returns:
    float32 advantages, same shape and array type as rewards_b.
  """
  xp = _xp(rewards_b)
  r = xp.asarray(rewards_b, dtype=xp.float32)
  g = num_samples
  if baseline not in BASELINES:
    raise ValueError(f"baseline={baseline!r} is not one of {BASELINES}")
  if not isinstance(g, (int, np.integer)) or g < 1:
    raise ValueError(f"num_samples must be a positive int, got {g!r}")
  if r.ndim < 1 or r.shape[0] % g:
    raise ValueError(f"rewards shape {r.shape}: batch {r.shape[:1]} is not a multiple of g={g}")
  if baseline == "none":
    return r
  if g < 2:
    raise ValueError(
      f"baseline={baseline!r} needs num_samples >= 2 per prompt (got {g}): with one sample "
      "the leave-one-out / group mean is undefined or cancels the reward; use baseline='none'"
    )
  r_pg = r.reshape((r.shape[0] // g, g) + r.shape[1:])
  mean_pg = r_pg.mean(axis=1, keepdims=True)
  scale = g / (g - 1) if baseline == "rloo" else 1.0  # r_i - (sum - r_i)/(g-1)
  return (scale * (r_pg - mean_pg)).reshape(r.shape)


def shaped_rewards(rewards_ba, alpha: float):
  """Stage II rewards: attempt 1 keeps r1; attempt a >= 2 gets r_a + alpha * (r_a - r_{a-1})."""
  xp = _xp(rewards_ba)
  r = xp.asarray(rewards_ba, dtype=xp.float32)
  bonus = alpha * (r[:, 1:] - r[:, :-1])
  return xp.concatenate([r[:, :1], r[:, 1:] + bonus], axis=1)


def _validate(turn_bt, rewards_ba, g: int, min_attempts: int):
  if turn_bt.ndim != 2 or rewards_ba.ndim != 2:
    raise ValueError(
      f"turn_bt must be [b, t] and rewards_ba [b, a], got {turn_bt.shape} and {rewards_ba.shape}"
    )
  b, a = rewards_ba.shape
  if turn_bt.shape[0] != b:
    raise ValueError(f"turn_bt has {turn_bt.shape[0]} rows but rewards_ba has {b}")
  if a < min_attempts:
    raise ValueError(f"rewards_ba has {a} attempt column(s); this objective needs {min_attempts}")
  if b % g:
    raise ValueError(f"batch {b} is not a multiple of num_samples g={g}")
  if _concrete(turn_bt):
    t = np.asarray(turn_bt)
    if t.size and (t.min() < 0 or t.max() > a):
      row, col = np.argwhere((t < 0) | (t > a))[0]
      raise ValueError(f"turn_bt[{row}, {col}] = {t[row, col]} is outside 0..{a} (a = {a})")
  if _concrete(rewards_ba):
    r = np.asarray(rewards_ba, dtype=np.float64)
    if not np.isfinite(r).all():
      row, col = np.argwhere(~np.isfinite(r))[0]
      raise ValueError(f"rewards_ba[{row}, {col}] = {r[row, col]} is not finite")


def _per_token(turn_bt, adv_ba, kl_a):
  """Spreads per-attempt advantages [b, a] and KL weights [a] over the stream's tokens."""
  xp = _xp(turn_bt, adv_ba)
  turn_bt = xp.asarray(turn_bt)
  a = adv_ba.shape[1]
  idx_bt = xp.clip(turn_bt - 1, 0, a - 1).astype(xp.int32)
  on_bt = turn_bt > 0
  adv_bt = xp.where(on_bt, xp.take_along_axis(adv_ba, idx_bt, axis=1), 0.0)
  kl_bt = xp.where(on_bt, xp.asarray(kl_a, dtype=xp.float32)[idx_bt], 0.0)
  return adv_bt.astype(xp.float32), kl_bt.astype(xp.float32)


def _last_attempt_only(rewards_ba, g, baseline):
  xp = _xp(rewards_ba)
  adv_b = rloo_advantages(rewards_ba[:, -1], g, baseline)
  zeros = xp.zeros_like(xp.asarray(rewards_ba, dtype=xp.float32)[:, :-1])
  return xp.concatenate([zeros, adv_b[:, None]], axis=1)


def stage1_weights(turn_bt, rewards_ba, g: int, beta1: float, beta2: float, baseline="rloo"):
  """Stage I (paper Eq. 3): reward only the last attempt; pin the earlier ones to the reference.

  Attempts 1..K-1: advantage 0, KL weight beta2. Attempt K: RLOO advantage of r_K, KL weight
  beta1. With K = 3 this is the paper's Stage 1(b) (App. A.1) given the Stage 1(a) reference.

  Returns:
    (adv_bt, kl_bt) float32; tokens with turn 0 get 0 in both.
  """
  _validate(turn_bt, rewards_ba, g, min_attempts=2)
  a = rewards_ba.shape[1]
  return _per_token(
    turn_bt, _last_attempt_only(rewards_ba, g, baseline), [beta2] * (a - 1) + [beta1]
  )


def stage2_weights(turn_bt, rewards_ba, g: int, alpha: float, beta1: float, baseline="rloo"):
  """Stage II (paper Eq. 4 + bonus): each attempt credited with its own shaped reward (gamma 0).

  Attempt 1: RLOO advantage of r1. Attempt a >= 2: RLOO advantage of r_a + alpha*(r_a - r_{a-1})
  (the baseline is taken over the shaped rewards). KL weight beta1 on every attempt.
  """
  _validate(turn_bt, rewards_ba, g, min_attempts=2)
  adv_ba = rloo_advantages(shaped_rewards(rewards_ba, alpha), g, baseline)
  return _per_token(turn_bt, adv_ba, [beta1] * rewards_ba.shape[1])


def naive_multiturn_weights(turn_bt, rewards_ba, g: int, beta1: float, baseline="rloo"):
  """The paper's naive multi-turn RL baseline: reward on the last attempt only, KL beta1 on all.

  No Stage I and no bonus; equal to `stage1_weights` with beta2 = beta1.
  """
  _validate(turn_bt, rewards_ba, g, min_attempts=2)
  a = rewards_ba.shape[1]
  return _per_token(turn_bt, _last_attempt_only(rewards_ba, g, baseline), [beta1] * a)


def single_turn_weights(turn_bt, rewards_ba, g: int, beta1: float, baseline="rloo"):
  """'w/o multi-turn training': RLOO of r1 and KL beta1 on attempt-1 tokens; later attempts 0."""
  _validate(turn_bt, rewards_ba, g, min_attempts=1)
  xp = _xp(rewards_ba)
  adv_b = rloo_advantages(rewards_ba[:, 0], g, baseline)
  a = rewards_ba.shape[1]
  adv_ba = xp.concatenate([adv_b[:, None], xp.zeros((adv_b.shape[0], a - 1), xp.float32)], axis=1)
  return _per_token(turn_bt, adv_ba, [beta1] + [0.0] * (a - 1))


def aggregation_normalizers(loss_mask_bt, aggregation: str, constant: float | None = None) -> float:
  """Host-side denominator over the WHOLE global batch for `policy_loss` / `sft_loss`.

  'token_mean': number of loss tokens; 'seq_mean_token_mean': number of sequences with at least
  one loss token; 'constant': `constant` (default: b * t of the global batch, Dr.GRPO style).
  Computing it once per global batch makes the loss independent of sharding and micro-batching.
  """
  m = np.asarray(loss_mask_bt, dtype=bool)
  if m.ndim != 2:
    raise ValueError(f"loss_mask_bt must be [b, t], got shape {m.shape}")
  if aggregation == "token_mean":
    return float(max(m.sum(), 1))
  if aggregation == "seq_mean_token_mean":
    return float(max(m.any(axis=1).sum(), 1))
  if aggregation == "constant":
    c = float(m.size if constant is None else constant)
    if c <= 0:
      raise ValueError(f"constant normalizer must be > 0, got {c}")
    return c
  raise ValueError(f"aggregation={aggregation!r} is not one of {AGGREGATIONS}")


def aggregate(x_bt: jax.Array, loss_mask_bt: jax.Array, aggregation: str, normalizer) -> jax.Array:
  """Masked sum of a per-token quantity divided by a global normalizer (see above)."""
  m_bt = loss_mask_bt.astype(jnp.float32)
  if aggregation in ("token_mean", "constant"):
    return jnp.sum(x_bt * m_bt) / normalizer
  if aggregation == "seq_mean_token_mean":
    seq_b = jnp.sum(x_bt * m_bt, axis=1) / jnp.maximum(jnp.sum(m_bt, axis=1), 1.0)
    return jnp.sum(seq_b) / normalizer
  raise ValueError(f"aggregation={aggregation!r} is not one of {AGGREGATIONS}")


def _masked_mean(x_bt, m_bt):
  return jnp.sum(x_bt * m_bt) / jnp.maximum(jnp.sum(m_bt), 1.0)


def policy_loss(
  logp_bt: jax.Array,
  ref_logp_bt: jax.Array,
  adv_bt: jax.Array,
  kl_bt: jax.Array,
  loss_mask_bt: jax.Array,
  *,
  kl_estimator: str = "k1_reward",
  aggregation: str = "token_mean",
  normalizer=1.0,
  clamp: float = kl_lib.DEFAULT_CLAMP,
  allow_biased: bool = False,
  turn_bt: jax.Array | None = None,
  num_turns: int = 2,
) -> tuple[jax.Array, dict]:
  """On-policy REINFORCE surrogate with a per-token KL term, aggregated with a global normalizer.

  Per token: -(A_t - w_t * sg(k1_t)) * logp_t for 'k1_reward'; -A_t * logp_t + w_t * k_t for an
  in-loss estimator k ('k2', 'k3', or 'k1' with allow_biased). The samples must come from the
  current policy (one update per batch); logp_bt at the sampling temperature.

  Args:
    logp_bt: policy log-probs of the sampled tokens (differentiated).
    ref_logp_bt: frozen reference log-probs of the same tokens.
    adv_bt: per-token advantages; kl_bt: per-token KL weights (from a `*_weights` builder).
    loss_mask_bt: tokens that enter the loss.
    kl_estimator: one of `kl.ESTIMATORS`.
    aggregation: one of AGGREGATIONS; normalizer from `aggregation_normalizers`.
    clamp: |log-ratio| clamp before any estimator.
    allow_biased: permit 'k1' in the loss.
    turn_bt: optional turn ids for per-turn metrics (turns 1..num_turns).
    num_turns: how many attempts to report metrics for.

  Returns:
    (loss, aux): aux holds the aggregated pg and KL terms, advantage stats, k1/k3 KL means overall
    and per turn (`kl_k1_turn{a}`, `kl_k3_turn{a}`, `adv_abs_mean_turn{a}`, `tokens_turn{a}`).
  """
  kl_lib.check_estimator(kl_estimator, allow_biased)
  if aggregation not in AGGREGATIONS:
    raise ValueError(f"aggregation={aggregation!r} is not one of {AGGREGATIONS}")
  inputs = dict(logp_bt=logp_bt, ref_logp_bt=ref_logp_bt, adv_bt=adv_bt, kl_bt=kl_bt)
  shapes = {k: v.shape for k, v in {**inputs, "loss_mask_bt": loss_mask_bt}.items()}
  if len(set(shapes.values())) != 1:
    raise ValueError(f"policy_loss inputs must share one [b, t] shape, got {shapes}")
  logp_bt = logp_bt.astype(jnp.float32)
  adv_bt = jnp.asarray(adv_bt, jnp.float32)
  kl_bt = jnp.asarray(kl_bt, jnp.float32)
  m_bt = jnp.asarray(loss_mask_bt).astype(jnp.float32)
  r_bt = kl_lib.log_ratio(logp_bt, ref_logp_bt, clamp)

  eff_adv_bt = adv_bt
  kl_term_bt = jnp.zeros_like(logp_bt)
  if kl_estimator == "k1_reward":
    eff_adv_bt = adv_bt - kl_bt * jax.lax.stop_gradient(r_bt)
  elif kl_estimator != "none":
    kl_term_bt = kl_bt * kl_lib.kl_values(r_bt, kl_estimator)
  pg_bt = -jax.lax.stop_gradient(eff_adv_bt) * logp_bt
  pg_loss = aggregate(pg_bt, m_bt, aggregation, normalizer)
  kl_loss = aggregate(kl_term_bt, m_bt, aggregation, normalizer)

  aux = {"pg_loss": pg_loss, "kl_loss": kl_loss}
  aux.update(_policy_stats(r_bt, adv_bt, m_bt, turn_bt, num_turns))
  return pg_loss + kl_loss, aux


def _policy_stats(r_bt, adv_bt, m_bt, turn_bt, num_turns: int) -> dict[str, jax.Array]:
  """KL (k1, k3) and advantage statistics over the loss tokens, overall and per turn."""
  r_sg = jax.lax.stop_gradient(r_bt)
  k1_bt, k3_bt = r_sg, kl_lib.kl_values(r_sg, "k3")
  n = jnp.maximum(jnp.sum(m_bt), 1.0)
  adv_mean = jnp.sum(adv_bt * m_bt) / n
  aux = {
    "kl_k1": _masked_mean(k1_bt, m_bt),
    "kl_k3": _masked_mean(k3_bt, m_bt),
    "adv_mean": adv_mean,
    "adv_std": jnp.sqrt(jnp.sum(jnp.square(adv_bt - adv_mean) * m_bt) / n),
    "adv_min": jnp.min(jnp.where(m_bt > 0, adv_bt, jnp.inf)),
    "adv_max": jnp.max(jnp.where(m_bt > 0, adv_bt, -jnp.inf)),
    "tokens": jnp.sum(m_bt),
  }
  if turn_bt is not None:
    for a in range(1, num_turns + 1):
      ma_bt = m_bt * (turn_bt == a)
      aux[f"kl_k1_turn{a}"] = _masked_mean(k1_bt, ma_bt)
      aux[f"kl_k3_turn{a}"] = _masked_mean(k3_bt, ma_bt)
      aux[f"adv_abs_mean_turn{a}"] = _masked_mean(jnp.abs(adv_bt), ma_bt)
      aux[f"tokens_turn{a}"] = jnp.sum(ma_bt)
  return aux


def sft_loss(
  logits_btv: jax.Array,
  targets_bt: jax.Array,
  loss_mask_bt: jax.Array,
  normalizer,
  aggregation: str = "token_mean",
) -> tuple[jax.Array, dict]:
  """Masked next-token NLL for the Pair-SFT / STaR baselines; mask aligned with the targets.

  Returns (loss, aux) with aux['nll_token_mean'] (local mean) and aux['tokens'].
  """
  nll_bt = -token_logprobs(logits_btv, targets_bt)
  m_bt = jnp.asarray(loss_mask_bt).astype(jnp.float32)
  loss = aggregate(nll_bt, m_bt, aggregation, normalizer)
  return loss, {"nll_token_mean": _masked_mean(nll_bt, m_bt), "tokens": jnp.sum(m_bt)}
