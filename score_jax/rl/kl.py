"""KL(pi || ref) estimators on sampled tokens, and the adaptive beta2 controller.

Everything here works on GATHERED log-probs of the sampled tokens (`logp_bt`, `ref_logp_bt`),
never on full-vocabulary distributions: a [b, t, v] KL is what runs public SCoRe ports out of
memory. With r = log pi(y_t) - log ref(y_t) (the log-ratio, clamped to [-clamp, clamp] first) and
y_t ~ pi on-policy, the estimators and what their gradients are, EXACTLY, per token (the prefix is
held fixed; tests/rl/kl_test.py checks each identity on a 5-outcome categorical policy):

- 'k1_reward': k1 = r folded into the advantage as a stop-gradient penalty, A_t - beta*sg(r).
  Its gradient is the score-function term beta * E[r grad log pi] = beta * grad KL(pi||ref).
  Unbiased for reverse KL. Recommended default.
- 'k2': 0.5 * r^2 differentiated in the loss. grad = r * grad log pi: the SAME per-sample
  gradient as 'k1_reward' (not merely in expectation), so its expected gradient is exactly
  grad KL(pi||ref). Its VALUE is biased (E[k2] = KL only to second order in r), and so is the
  gradient of the true expectation grad E_pi[k2] (which adds E[k2 grad log pi]); the loss form
  simply never differentiates through the sampling distribution.
- 'k3': exp(-r) - 1 + r differentiated in the loss. Its value is an unbiased, non-negative
  estimate of KL(pi||ref), but its gradient (1 - ref/pi) grad log pi has expectation
  -sum_y ref(y) grad log pi(y) = grad KL(ref || pi): the FORWARD KL (mass-covering). Both agree
  to first order at pi = ref (both are Fisher * (theta - theta_ref)) and diverge away from it.
- 'k1': r differentiated in the loss. grad = grad log pi, whose on-policy expectation is
  sum_y grad pi(y) = 0: NO regularisation at all (one JAX anchor ships this as its default).
  Refused unless `allow_biased=True`; kept only to demonstrate the bug.
- 'none': no KL term.

Sequence level: with discount 0 each token's estimator credits only that token, so all of the
above target the sum of per-token KLs with the prefixes held fixed (the usual token-level KL
penalty), not the gradient of the full sequence KL, which adds score terms through later states.

Clamping: tokens with |r| > clamp get coefficient +-clamp in 'k1_reward' and zero KL gradient in
'k2'/'k3' (the clamp is a guard against overflow of exp(-r), not part of the estimator).
"""

import jax
import jax.numpy as jnp

# Estimators accepted by `policy_loss(kl_estimator=...)`; 'k1' needs allow_biased=True.
ESTIMATORS = ("k1_reward", "k2", "k3", "k1", "none")
LOSS_ESTIMATORS = ("k2", "k3", "k1")  # the ones that are a differentiable term in the loss
DEFAULT_CLAMP = 10.0


def check_estimator(name: str, allow_biased: bool = False) -> None:
  """Raises ValueError unless `name` is a known estimator usable with `allow_biased`."""
  if name not in ESTIMATORS:
    raise ValueError(f"kl_estimator={name!r} is not one of {ESTIMATORS}")
  if name == "k1" and not allow_biased:
    raise ValueError(
      "kl_estimator='k1' (plain k1 differentiated in the loss) has zero expected gradient: it "
      "does not regularise toward the reference. Use 'k1_reward' or 'k2' (exact reverse-KL "
      "gradient) or 'k3' (forward-KL gradient); pass allow_biased=True only to demonstrate it."
    )


def log_ratio(logp_bt: jax.Array, ref_logp_bt: jax.Array, clamp: float = DEFAULT_CLAMP):
  """log pi - log ref on sampled tokens, clamped to [-clamp, clamp]; ref is stop-gradient."""
  r_bt = logp_bt.astype(jnp.float32) - jax.lax.stop_gradient(ref_logp_bt.astype(jnp.float32))
  return jnp.clip(r_bt, -clamp, clamp)


def kl_values(r_bt: jax.Array, estimator: str) -> jax.Array:
  """The per-token value of estimator 'k1', 'k2' or 'k3' from a (clamped) log-ratio."""
  if estimator in ("k1", "k1_reward"):
    return r_bt
  if estimator == "k2":
    return 0.5 * jnp.square(r_bt)
  if estimator == "k3":
    # expm1 keeps precision for small r, where exp(-r) - 1 and r nearly cancel.
    return jnp.expm1(-r_bt) + r_bt
  raise ValueError(f"kl_estimator={estimator!r}: values exist for 'k1', 'k2', 'k3' only")


def kl_loss(
  logp_bt: jax.Array,
  ref_logp_bt: jax.Array,
  estimator: str,
  *,
  clamp: float = DEFAULT_CLAMP,
  allow_biased: bool = False,
) -> jax.Array:
  """The per-token differentiable KL term of an in-loss estimator ('k2', 'k3', or 'k1').

  'k1_reward' is not a loss term: it enters through the advantage (see `reward_penalty`).
  """
  check_estimator(estimator, allow_biased)
  if estimator not in LOSS_ESTIMATORS:
    raise ValueError(
      f"kl_estimator={estimator!r} has no loss term; kl_loss takes one of {LOSS_ESTIMATORS}"
    )
  return kl_values(log_ratio(logp_bt, ref_logp_bt, clamp), estimator)


def reward_penalty(
  logp_bt: jax.Array, ref_logp_bt: jax.Array, clamp: float = DEFAULT_CLAMP
) -> jax.Array:
  """sg(k1) per token, to subtract (times the KL weight) from the advantage ('k1_reward')."""
  return jax.lax.stop_gradient(log_ratio(logp_bt, ref_logp_bt, clamp))


def adaptive_beta2_update(
  beta2,
  kl_turn1,
  pg_turn2,
  target_ratio: float,
  rate: float = 0.05,
  *,
  min_beta2: float = 1e-4,
  max_beta2: float = 10.0,
  eps: float = 1e-8,
):
  """One step of the optional adaptive beta2 controller of Stage I (paper section 2.3).

  The paper only says beta2 may adapt "to balance the magnitudes of the first-attempt KL
  regularization and the second-attempt policy objective"; the controller is ours. It measures
  ratio = beta2 * kl_turn1 / pg_turn2, with kl_turn1 the mean per-token KL of attempt-1 tokens
  (e.g. the k3 value, always >= 0) and pg_turn2 the mean |advantage| of attempt-2 tokens, and
  moves beta2 multiplicatively toward target_ratio, like the adaptive KL controller of Ziegler et
  al. (2019) but in log space:
    beta2 <- clip(beta2 * exp(rate * clip(log(target_ratio / ratio), -1, 1)), min, max).
  A first attempt drifting from the reference (ratio below target) raises beta2; a strong pin
  that dwarfs the attempt-2 signal lowers it. Works on floats, NumPy and traced values.

  Args:
    beta2: current beta2 (> 0).
    kl_turn1: mean KL estimate on attempt-1 tokens.
    pg_turn2: mean |advantage| on attempt-2 tokens (scale of the attempt-2 objective).
    target_ratio: desired beta2 * KL / |A| (> 0).
    rate: log-space gain per update; |log change| <= rate.
    min_beta2: lower bound of the result.
    max_beta2: upper bound of the result.
    eps: guards the ratio when the KL or the advantages vanish.

  Returns:
    The new beta2.
  """
  if isinstance(target_ratio, (int, float)) and target_ratio <= 0:
    raise ValueError(f"target_ratio must be > 0, got {target_ratio}")
  if isinstance(beta2, (int, float)) and beta2 <= 0:
    raise ValueError(f"beta2 must be > 0 for the multiplicative controller, got {beta2}")
  num = target_ratio * (jnp.abs(pg_turn2) + eps)
  den = beta2 * jnp.maximum(kl_turn1, 0.0) + eps
  err = jnp.clip(jnp.log(num) - jnp.log(den), -1.0, 1.0)
  return jnp.clip(beta2 * jnp.exp(rate * err), min_beta2, max_beta2)
