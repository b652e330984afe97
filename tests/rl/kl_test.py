"""KL estimators: exact expected gradients on a 5-outcome categorical policy, clamps, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax.rl import kl as kl_lib
from score_jax.rl import losses
from tests import numerics

pytestmark = pytest.mark.numerics
E = numerics.ELEMENTARY
# A per-sample gradient: two log-softmaxes over 5 outcomes, a log-ratio, the softmax of its
# score function, products; the expectation adds a 5-term sum. The reference gradient of
# the closed-form KL takes the same kind of path.
GRAD_LEVELS = [5 + 2 * E] * 3 + [1, 1, 5]

THETA = jnp.array([0.3, -1.2, 0.8, 0.0, 2.0])  # policy logits
PHI = jnp.array([1.0, 0.5, -0.7, 0.2, -1.5])  # reference logits, far from THETA


def _sample_loss(theta, x, phi, estimator, adv=0.0):
  """policy_loss for ONE sampled outcome x, built from the real gather and loss functions."""
  target = jnp.reshape(x, (1, 1))
  logp = losses.token_logprobs(theta[None, None, :], target)
  ref = losses.token_logprobs(phi[None, None, :], target)
  one = jnp.ones((1, 1))
  loss, _ = losses.policy_loss(
    logp, ref, adv * one, one, one, kl_estimator=estimator, normalizer=1.0, allow_biased=True
  )
  return loss


def _per_sample_grads(estimator, theta=THETA, phi=PHI):
  g = jax.grad(_sample_loss)
  return jax.vmap(lambda x: g(theta, x, phi, estimator))(jnp.arange(5))


def _expected_grad(estimator, theta=THETA, phi=PHI):
  """E_{x~pi}[grad of the sampled loss], exactly: a sum over the 5 outcomes weighted by pi.

  The grad of the sampled loss is the score-function term sg(k1) grad log pi for 'k1_reward'
  (estimator in the reward) and the pathwise grad of the estimator for the in-loss ones.
  """
  pi = jax.nn.softmax(theta)
  return jnp.sum(pi[:, None] * _per_sample_grads(estimator, theta, phi), axis=0)


def _reverse_kl(theta, phi=PHI):
  lp, lq = jax.nn.log_softmax(theta), jax.nn.log_softmax(phi)
  return jnp.sum(jnp.exp(lp) * (lp - lq))


def _forward_kl(theta, phi=PHI):
  lp, lq = jax.nn.log_softmax(theta), jax.nn.log_softmax(phi)
  return jnp.sum(jnp.exp(lq) * (lq - lp))


def _grad_scale(estimator):
  """max |per-sample gradient|: what the expectation's sum of pi-weighted terms rounds against."""
  return float(np.abs(_per_sample_grads(estimator)).max())


def assert_grads_close(got, want, estimator, what):
  numerics.assert_close_f32(
    got, want, levels=GRAD_LEVELS, magnitude=_grad_scale(estimator), what=what
  )


def test_k1_reward_expected_gradient_is_exact_reverse_kl_gradient():
  want = jax.grad(_reverse_kl)(THETA)
  assert_grads_close(_expected_grad("k1_reward"), want, "k1_reward", "E[k1_reward grad]")


def test_k2_in_loss_is_the_k1_reward_gradient_sample_by_sample():
  # grad 0.5 r^2 = r grad log pi = sg(r) grad log pi: identical per sample, hence exact in
  # expectation, although E[k2] != KL and grad E_pi[k2] (through the sampler) != grad KL.
  assert_grads_close(_per_sample_grads("k2"), _per_sample_grads("k1_reward"), "k2", "k2 vs k1")
  exact = jax.grad(_reverse_kl)(THETA)
  assert_grads_close(_expected_grad("k2"), exact, "k2", "E[k2 grad]")

  def true_expectation_k2(theta):
    lp, lq = jax.nn.log_softmax(theta), jax.nn.log_softmax(PHI)
    return jnp.sum(jnp.exp(lp) * 0.5 * jnp.square(lp - lq))

  assert np.abs(jax.grad(true_expectation_k2)(THETA) - exact).max() > 0.1


def test_k1_in_loss_has_zero_expected_gradient():
  per_sample = _per_sample_grads("k1")
  assert np.abs(per_sample).max() > 0.5  # each sample pushes, the pushes cancel
  assert_grads_close(_expected_grad("k1"), np.zeros(5), "k1", "E[k1 grad]")
  assert np.abs(jax.grad(_reverse_kl)(THETA)).max() > 0.1  # while the true gradient is not 0


def test_k3_in_loss_follows_the_forward_kl_gradient():
  got = _expected_grad("k3")
  assert_grads_close(got, jax.grad(_forward_kl)(THETA), "k3", "E[k3 grad]")
  reverse = jax.grad(_reverse_kl)(THETA)
  assert np.linalg.norm(got - reverse) > 0.2 * np.linalg.norm(reverse)  # biased far from ref


def test_k3_agrees_with_reverse_kl_to_first_order_near_the_reference():
  direction = jnp.array([1.0, -0.5, 0.3, 0.7, -1.0])
  rel = []
  for eps in (1e-1, 1e-2):
    theta = PHI + eps * direction
    rev = jax.grad(_reverse_kl)(theta)
    rel.append(float(jnp.linalg.norm(_expected_grad("k3", theta) - rev) / jnp.linalg.norm(rev)))
  assert rel[1] < 0.03
  assert 5.0 < rel[0] / rel[1] < 20.0  # relative bias is O(eps)


def test_k1_and_k3_values_are_unbiased_k2_is_not():
  pi = jax.nn.softmax(THETA)
  r = jax.nn.log_softmax(THETA) - jax.nn.log_softmax(PHI)
  kl = _reverse_kl(THETA)
  # Softmax and log-softmaxes over 5, the estimator (expm1 for k3), a 5-term expectation; both
  # sides float32, relative to sum |pi k| <= the largest |k|.
  levels = [5 + 2 * E] * 2 + [E, 1, 5]
  for est in ("k1", "k3"):
    k = kl_lib.kl_values(r, est)
    numerics.assert_close_f32(
      jnp.sum(pi * k), kl, levels=levels, magnitude=float(np.abs(k).max()), what=f"E[{est}]"
    )
  assert abs(float(jnp.sum(pi * kl_lib.kl_values(r, "k2")) - kl)) > 0.1
  assert float(jnp.min(kl_lib.kl_values(r, "k3"))) >= 0.0


def test_clamp_bounds_values_and_stops_in_loss_gradients():
  logp = jnp.array([[-25.0, -1.0]])
  ref = jnp.array([[-1.0, -1.2]])
  r = kl_lib.log_ratio(logp, ref, clamp=10.0)
  # -1.0 - float32(-1.2): one subtraction of operands ~1 against the decimal 0.2; the clamp
  # returns -10 exactly, and the clamped entry's gradient is exactly 0.
  one_op = dict(levels=[1, 1], sides=1, magnitude=1.2)
  numerics.assert_close_f32(r, [[-10.0, 0.2]], what="clamped log-ratio", **one_op)
  k3 = kl_lib.kl_loss(logp, ref, "k3", clamp=10.0)
  numerics.assert_close_f32(
    k3[0, 0], np.exp(10.0) - 1.0 - 10.0, levels=[E, 1], sides=1, what="k3 at the clamp"
  )
  g = jax.grad(lambda lp: jnp.sum(kl_lib.kl_loss(lp, ref, "k2")))(logp)
  numerics.assert_close_f32(g, [[0.0, 0.2]], what="k2 grad", **one_op)
  pen = kl_lib.reward_penalty(logp, ref)
  numerics.assert_close_f32(pen, [[-10.0, 0.2]], what="k1 penalty", **one_op)


def test_estimator_errors_name_the_field():
  lp = jnp.zeros((1, 2))
  with pytest.raises(ValueError, match=r"kl_estimator='k4'.*'k1_reward', 'k2', 'k3'"):
    kl_lib.kl_loss(lp, lp, "k4")
  with pytest.raises(ValueError, match=r"kl_estimator='k1'.*zero expected gradient"):
    kl_lib.kl_loss(lp, lp, "k1")
  with pytest.raises(ValueError, match=r"kl_estimator='k1'"):
    losses.policy_loss(lp, lp, lp, lp, lp, kl_estimator="k1")
  with pytest.raises(ValueError, match=r"kl_estimator='k1_reward' has no loss term"):
    kl_lib.kl_loss(lp, lp, "k1_reward")
  # (0 + 1) - 0: exact.
  np.testing.assert_array_equal(kl_lib.kl_loss(lp + 1.0, lp, "k1", allow_biased=True), lp + 1.0)


def test_adaptive_beta2_controller():
  # A ratio, a log, a clip, a product with the rate, an exp, a product with beta2 and the
  # float32 roundings of the decimal inputs: ~10 operations, relative to each result.
  ops = dict(levels=[E, E] + [1] * 8, magnitude=0.11)
  up = kl_lib.adaptive_beta2_update(0.1, kl_turn1=0.01, pg_turn2=1.0, target_ratio=0.1, rate=0.05)
  numerics.assert_close_f32(up, 0.1 * np.exp(0.05), sides=1, what="clipped step up", **ops)
  same = kl_lib.adaptive_beta2_update(0.1, kl_turn1=1.0, pg_turn2=1.0, target_ratio=0.1)
  numerics.assert_close_f32(same, 0.1, sides=1, what="at the target", **ops)
  # ratio 0.1*2/1 = 0.2, twice the target: a proportional (unclipped) step down in log space.
  down = kl_lib.adaptive_beta2_update(0.1, kl_turn1=2.0, pg_turn2=1.0, target_ratio=0.1, rate=0.5)
  want = 0.1 * np.exp(0.5 * np.log(0.5))
  numerics.assert_close_f32(down, want, sides=1, what="proportional step down", **ops)
  capped = kl_lib.adaptive_beta2_update(9.9, 0.0, 1.0, 0.1, rate=1.0, max_beta2=10.0)
  np.testing.assert_array_equal(capped, 10.0)  # exact: the clip returns its bound
  jitted = jax.jit(kl_lib.adaptive_beta2_update, static_argnums=(3, 4))
  got = jitted(jnp.float32(0.1), 0.01, 1.0, 0.1, 0.05)
  numerics.assert_close_f32(got, up, what="jitted vs eager", **ops)
  with pytest.raises(ValueError, match="target_ratio"):
    kl_lib.adaptive_beta2_update(0.1, 0.1, 1.0, 0.0)
