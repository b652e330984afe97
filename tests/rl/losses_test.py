"""The SCoRe objective: hand-computed RLOO, per-turn weights, aggregation and log-prob values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax.rl import losses
from tests import numerics

pytestmark = pytest.mark.numerics

# One episode stream: [prompt x2][attempt 1 x3][instruction x2][attempt 2 x2][padding x1].
TURN_T = np.array([0, 0, 1, 1, 1, 0, 0, 2, 2, 0], np.int32)
Y1, Y2, OURS = TURN_T == 1, TURN_T == 2, TURN_T == 0
# (r1, r2) per row: i->c, c->c, i->i, c->i.
REWARDS_BA = np.array([[0, 1], [1, 1], [0, 0], [1, 0]], np.float32)
TURN_BT = np.tile(TURN_T, (4, 1))
# RLOO with g = 2 on 0/1 rewards (2 * (r - mean of two)) gives small integers and halves, and
# KL weights are copies of float32(beta): exact in float32, so those checks are exact.
exact = np.testing.assert_array_equal
F32 = np.float32


def test_rloo_hand_example_and_baselines():
  adv = losses.rloo_advantages(np.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0]), 3)
  assert isinstance(adv, np.ndarray)  # host in, host out
  # g / (g - 1) * (r - mean): a 3-term mean, a subtraction, a product; magnitude g/(g-1) * 1.
  numerics.assert_close_f32(
    adv, [1.0, -0.5, -0.5, -1.0, 0.5, 0.5], levels=[3, 1, 1], sides=1, magnitude=1.5,
    what="RLOO g=3",
  )  # fmt: skip
  mean = losses.rloo_advantages(jnp.array([1.0, 0.0, 0.0]), 3, baseline="mean")
  assert isinstance(mean, jax.Array)
  # r - sum(r) / 3: a 3-term sum, a division, a subtraction, against exact thirds.
  numerics.assert_close_f32(
    mean, [2 / 3, -1 / 3, -1 / 3], levels=[3, 1, 1], sides=1, magnitude=1.0, what="mean baseline"
  )
  exact(losses.rloo_advantages(np.array([1.0, 0.0]), 1, "none"), [1.0, 0.0])
  per_attempt = losses.rloo_advantages(REWARDS_BA, 2)  # trailing axis handled per column
  exact(per_attempt, [[-1, 0], [1, 0], [-1, 0], [1, 0]])


def test_rloo_errors():
  with pytest.raises(ValueError, match=r"num_samples >= 2.*got 1.*baseline='none'"):
    losses.rloo_advantages(np.ones(4), 1)
  with pytest.raises(ValueError, match=r"not a multiple of g=3"):
    losses.rloo_advantages(np.ones(4), 3)
  with pytest.raises(ValueError, match=r"baseline='ppo' is not one of"):
    losses.rloo_advantages(np.ones(4), 2, baseline="ppo")


def test_shaped_rewards_alpha_10():
  exact(losses.shaped_rewards(REWARDS_BA, 10.0)[:, 1], [11, 1, 0, -10])
  exact(losses.shaped_rewards(REWARDS_BA, 10.0)[:, 0], REWARDS_BA[:, 0])


def test_stage2_weights_hand_values():
  adv_bt, kl_bt = losses.stage2_weights(TURN_BT, REWARDS_BA, g=2, alpha=10.0, beta1=0.01)
  # Pairs (i->c, c->c) and (i->i, c->i). Turn 1: RLOO of r1 = (0,1),(0,1) -> -1, +1.
  # Turn 2: RLOO of shaped (11, 1) -> +10, -10 and (0, -10) -> +10, -10.
  for row, (a1, a2) in enumerate([(-1, 10), (1, -10), (-1, 10), (1, -10)]):
    exact(adv_bt[row][Y1], np.full(Y1.sum(), a1, F32))
    exact(adv_bt[row][Y2], np.full(Y2.sum(), a2, F32))
  exact(adv_bt[:, OURS], np.zeros_like(adv_bt[:, OURS]))
  exact(kl_bt[:, Y1 | Y2], np.full_like(kl_bt[:, Y1 | Y2], F32(0.01)))
  exact(kl_bt[:, OURS], np.zeros_like(kl_bt[:, OURS]))
  assert adv_bt.dtype == np.float32 and isinstance(adv_bt, np.ndarray)


def test_stage1_naive_and_single_turn_weights():
  adv_bt, kl_bt = losses.stage1_weights(TURN_BT, REWARDS_BA, g=4, beta1=0.01, beta2=0.1)
  exact(adv_bt[:, Y1], np.zeros_like(adv_bt[:, Y1]))  # no reward term on attempt 1
  exact(kl_bt[:, Y1], np.full_like(kl_bt[:, Y1], F32(0.1)))
  # r2 = (1, 1, 0, 0), g = 4: r_i - mean of the other three = +-2/3 (sum, divide, subtract).
  numerics.assert_close_f32(
    adv_bt[:, Y2][:, 0], [2 / 3, 2 / 3, -2 / 3, -2 / 3], levels=[3, 1, 1], sides=1,
    magnitude=1.0, what="RLOO g=4",
  )  # fmt: skip
  exact(kl_bt[:, Y2], np.full_like(kl_bt[:, Y2], F32(0.01)))
  exact(adv_bt[:, OURS], np.zeros_like(adv_bt[:, OURS]))
  exact(kl_bt[:, OURS], np.zeros_like(kl_bt[:, OURS]))
  naive_adv, naive_kl = losses.naive_multiturn_weights(TURN_BT, REWARDS_BA, g=4, beta1=0.01)
  exact(naive_adv, adv_bt)  # the same host function on the same rewards
  exact(naive_kl[:, Y1 | Y2], np.full_like(naive_kl[:, Y1 | Y2], F32(0.01)))
  single_adv, single_kl = losses.single_turn_weights(TURN_BT, REWARDS_BA, g=2, beta1=0.01)
  exact(single_adv[:, Y1][:, 0], [-1, 1, -1, 1])
  exact(single_adv[:, ~Y1], np.zeros_like(single_adv[:, ~Y1]))
  exact(single_kl[:, Y1], np.full_like(single_kl[:, Y1], F32(0.01)))
  exact(single_kl[:, ~Y1], np.zeros_like(single_kl[:, ~Y1]))


def test_three_attempts_generalise():
  turn_bt = np.array([[1, 0, 2, 0, 3]] * 2, np.int32)
  r_ba = np.array([[0, 1, 1], [1, 0, 1]], np.float32)
  adv_bt, kl_bt = losses.stage2_weights(turn_bt, r_ba, g=2, alpha=10.0, beta1=0.01)
  # shaped: row0 (0, 11, 1), row1 (1, -10, 11); RLOO over the pair.
  exact(adv_bt, [[-1, 0, 21, 0, -10], [1, 0, -21, 0, 10]])
  _, kl1_bt = losses.stage1_weights(turn_bt, r_ba, g=2, beta1=0.01, beta2=0.1)
  exact(kl1_bt[0], np.array([0.1, 0, 0.1, 0, 0.01], F32))


def test_weights_work_under_jit_on_device_arrays():
  fn = jax.jit(lambda t, r: losses.stage2_weights(t, r, 2, 10.0, 0.01))
  adv_bt, kl_bt = fn(jnp.asarray(TURN_BT), jnp.asarray(REWARDS_BA))
  host_adv, host_kl = losses.stage2_weights(TURN_BT, REWARDS_BA, 2, 10.0, 0.01)
  exact(adv_bt, host_adv)  # integer rewards: exact on device and host alike
  exact(kl_bt, host_kl)


def test_weight_validation_errors():
  bad_turn = TURN_BT.copy()
  bad_turn[2, 5] = 3
  with pytest.raises(ValueError, match=r"turn_bt\[2, 5\] = 3 is outside 0..2"):
    losses.stage2_weights(bad_turn, REWARDS_BA, 2, 10.0, 0.01)
  nan_r = REWARDS_BA.copy()
  nan_r[1, 0] = np.nan
  with pytest.raises(ValueError, match=r"rewards_ba\[1, 0\] = nan is not finite"):
    losses.stage1_weights(TURN_BT, nan_r, 2, 0.01, 0.1)
  with pytest.raises(ValueError, match=r"3 rows but rewards_ba has 4"):
    losses.stage2_weights(TURN_BT[:3], REWARDS_BA, 2, 10.0, 0.01)
  with pytest.raises(ValueError, match=r"1 attempt column\(s\); this objective needs 2"):
    losses.stage1_weights(TURN_BT, REWARDS_BA[:, :1], 2, 0.01, 0.1)


def _random_batch(seed=0, b=8, t=12):
  rng = np.random.default_rng(seed)
  mask = rng.random((b, t)) < 0.6
  mask[3] = False  # a sequence with no loss tokens
  arrays = dict(
    logp_bt=jnp.asarray(-rng.random((b, t)) * 3, jnp.float32),
    ref_logp_bt=jnp.asarray(-rng.random((b, t)) * 3, jnp.float32),
    adv_bt=jnp.asarray(rng.normal(size=(b, t)), jnp.float32),
    kl_bt=jnp.asarray(rng.choice([0.01, 0.1], size=(b, t)), jnp.float32),
    loss_mask_bt=jnp.asarray(mask),
  )
  return arrays, mask


def _loss_terms(arrays, estimator: str) -> np.ndarray:
  """|per-token loss term| upper bounds: what a token sum's rounding is relative to."""
  a = {k: np.asarray(v, np.float64) for k, v in arrays.items()}
  r = np.abs(a["logp_bt"] - a["ref_logp_bt"])
  kl = r if estimator == "k1_reward" else np.expm1(r) + r  # |k3| <= e^|r| - 1 + |r|
  return (np.abs(a["adv_bt"]) + a["kl_bt"] * r) * np.abs(a["logp_bt"]) + a["kl_bt"] * kl


@pytest.mark.parametrize("aggregation", losses.AGGREGATIONS)
@pytest.mark.parametrize("estimator", ["k1_reward", "k3"])
def test_micro_batches_with_global_normalizer_sum_to_full_batch(aggregation, estimator):
  arrays, mask = _random_batch()
  norm = losses.aggregation_normalizers(mask, aggregation, constant=100.0)
  kw = dict(kl_estimator=estimator, aggregation=aggregation, normalizer=norm)

  def loss_fn(logp, rest):
    return losses.policy_loss(logp, **rest, **kw)[0]

  def split(i):
    return {k: v[2 * i : 2 * i + 2] for k, v in arrays.items() if k != "logp_bt"}

  rest = {k: v for k, v in arrays.items() if k != "logp_bt"}
  full, full_grad = jax.value_and_grad(loss_fn)(arrays["logp_bt"], rest)
  parts = [
    jax.value_and_grad(loss_fn)(arrays["logp_bt"][2 * i : 2 * i + 2], split(i)) for i in range(4)
  ]
  # Per-token terms (~4 elementwise ops each), summed over 96 tokens in one order or in four
  # parts plus a 4-term sum; divided by the normalizer (a per-sequence mean adds a 12-term one).
  terms = _loss_terms(arrays, estimator) * mask
  levels = [4, 12, mask.size, 4, 1]
  numerics.assert_close_f32(
    sum(p[0] for p in parts), full, levels=levels, magnitude=terms.sum() / norm, what="loss"
  )
  # The gradient is per token, the same few ops in both: relative to each token's own weights.
  a = {k: np.abs(np.asarray(v)) for k, v in arrays.items()}
  r = np.abs(np.asarray(arrays["logp_bt"]) - np.asarray(arrays["ref_logp_bt"]))
  scale = (a["adv_bt"] + a["kl_bt"] * (1 + np.exp(r))) / norm
  numerics.assert_close_f32(
    jnp.concatenate([p[1] for p in parts]), full_grad, levels=[4, 1], magnitude=scale,
    what="grad",
  )  # fmt: skip


def test_token_mean_vs_seq_mean_hand_example():
  # Per-token losses (pg term with adv -1, no KL) are the log-probs: row0 [4], row1 [1, 1, 1].
  logp = jnp.array([[4.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
  mask = np.array([[1, 0, 0], [1, 1, 1]], bool)
  zeros = jnp.zeros_like(logp)
  results = {}
  for agg in losses.AGGREGATIONS:
    norm = losses.aggregation_normalizers(mask, agg)
    results[agg], _ = losses.policy_loss(
      logp, logp, -jnp.ones_like(logp), zeros, jnp.asarray(mask), aggregation=agg, normalizer=norm
    )
  exact(results["token_mean"], 7 / 4)  # integer sums, then a division by 4 or 2: exact
  exact(results["seq_mean_token_mean"], (4 + 1) / 2)
  numerics.assert_close_f32(  # default constant: b * t; 7 / 6 rounds once
    results["constant"], 7 / 6, levels=[1], sides=1, what="constant aggregation"
  )
  with pytest.raises(ValueError, match=r"aggregation='sum' is not one of"):
    losses.aggregation_normalizers(mask, "sum")


def test_policy_loss_k1_reward_gradient_and_turn_metrics():
  logp = jnp.array([[-1.0, -2.0, -0.5, 0.0]])
  ref = jnp.array([[-1.5, -1.0, -0.5, 0.0]])
  adv = jnp.array([[1.0, 1.0, -2.0, 0.0]])
  kl_w = jnp.array([[0.1, 0.1, 0.01, 0.0]])
  mask = jnp.array([[True, True, True, False]])
  turn = jnp.array([[1, 1, 2, 0]])
  fn = lambda lp: losses.policy_loss(lp, ref, adv, kl_w, mask, normalizer=3.0, turn_bt=turn)
  (loss, aux), grad = jax.value_and_grad(fn, has_aux=True)(logp)
  eff = np.array([1 - 0.1 * 0.5, 1 - 0.1 * -1.0, -2.0, 0.0])  # A - w * (logp - ref)
  # float32(0.1) (one rounding), w * r, A - w r, / 3 against float64 hand values.
  numerics.assert_close_f32(
    grad[0], -eff * [1, 1, 1, 0] / 3.0, levels=[1] * 4, sides=1, magnitude=np.abs(eff) / 3,
    what="k1_reward grad",
  )  # fmt: skip
  logp_h = np.array([-1.0, -2.0, -0.5])
  numerics.assert_close_f32(
    loss, -(eff[:3] * logp_h).sum() / 3, levels=[1, 1, 1, 1, 3, 1], sides=1,
    magnitude=np.abs(eff[:3] * logp_h).sum() / 3, what="k1_reward loss",
  )  # fmt: skip
  # r = logp - ref of halves and integers: the k1 mean, counts and advantages are exact.
  exact(aux["kl_k1_turn1"], (0.5 - 1.0) / 2)
  k3 = lambda r: np.expm1(-r) + r
  numerics.assert_close_f32(
    aux["kl_k3_turn1"], (k3(0.5) + k3(-1.0)) / 2, levels=[numerics.ELEMENTARY, 1, 2, 1],
    sides=1, magnitude=(abs(np.expm1(-0.5)) + 0.5 + np.expm1(1.0) + 1.0) / 2, what="k3 mean",
  )  # fmt: skip
  exact(aux["kl_k1_turn2"], 0.0)
  exact(aux["adv_abs_mean_turn2"], 2.0)
  exact(aux["tokens_turn1"], 2.0)
  exact([aux["adv_min"], aux["adv_max"]], [-2.0, 1.0])
  with pytest.raises(ValueError, match=r"share one \[b, t\] shape"):
    losses.policy_loss(logp, ref[:, :3], adv, kl_w, mask)


def test_token_logprobs_match_log_softmax_with_temperature():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(2, 5, 7)) * 3, jnp.float32)
  tokens = jnp.asarray(rng.integers(0, 7, size=(2, 5)), jnp.int32)
  targets = losses.shift_targets(tokens)
  exact(targets[:, :-1], tokens[:, 1:])  # integer shifts
  exact(targets[:, -1], 0)
  got = losses.token_logprobs(logits, targets, temperature=0.7)
  ref = jax.nn.log_softmax(logits / 0.7, axis=-1)
  bi, ti = np.meshgrid(np.arange(2), np.arange(5), indexing="ij")
  # The same logits on both sides: only the two log-softmax computations' rounding.
  bound = numerics.logprob_bound(0.0, float(np.abs(logits).max()), 7, 0.7)
  numerics.assert_close(got, ref[bi, ti, np.asarray(targets)], bound, what="token_logprobs")
  numerics.assert_exceeds(got, losses.token_logprobs(logits, targets), bound, what="T=1")
  seq = losses.sequence_logprobs(logits, tokens, temperature=0.7)
  numerics.assert_close(seq[:, 1:], got[:, :-1], bound, what="sequence_logprobs")
  exact(seq[:, 0], 0.0)  # set, not computed
  with pytest.raises(ValueError, match=r"temperature must be > 0"):
    losses.token_logprobs(logits, targets, temperature=0.0)
  with pytest.raises(ValueError, match=r"logits_btv \(2, 5, 7\) and targets_bt \(2, 4\)"):
    losses.token_logprobs(logits, targets[:, :4])


def test_token_entropy():
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.normal(size=(2, 3, 11)), jnp.float32)
  p = jax.nn.softmax(logits / 2.0, axis=-1)
  # Two formulas of H (softmax, an 11-term sum of exps and one of p log p) on the same logits:
  # relative to |z| / T + log V, the size of log p.
  e = numerics.ELEMENTARY
  magnitude = float(np.abs(logits).max()) / 2.0 + np.log(11)
  numerics.assert_close_f32(
    losses.token_entropy(logits, 2.0), -jnp.sum(p * jnp.log(p), axis=-1),
    levels=[11 + 2 * e, 11 + e], magnitude=magnitude, what="entropy",
  )  # fmt: skip
  numerics.assert_close_f32(
    losses.token_entropy(jnp.zeros((1, 2, 11))), np.log(11), levels=[11 + 2 * e, 11 + e],
    sides=1, what="uniform entropy",
  )  # fmt: skip


def test_sft_loss_is_masked_nll_over_global_tokens():
  rng = np.random.default_rng(3)
  logits = jnp.asarray(rng.normal(size=(2, 4, 6)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 6, size=(2, 4)), jnp.int32)
  mask = np.array([[1, 1, 0, 0], [1, 1, 1, 0]], bool)
  nll = -np.asarray(jax.nn.log_softmax(logits, -1))[
    np.arange(2)[:, None], np.arange(4)[None, :], np.asarray(targets)
  ]
  loss, aux = losses.sft_loss(logits, targets, jnp.asarray(mask), normalizer=10.0)
  # Log-softmax over 6 logits (its rounding is relative to |z| + log V), an 8-term sum, a divide.
  levels = [6 + 2 * numerics.ELEMENTARY, 8, 1]
  nll_mag = (np.abs(np.asarray(logits)).max() + np.log(6)) * mask.sum()
  numerics.assert_close_f32(
    loss, (nll * mask).sum() / 10.0, levels=levels, magnitude=nll_mag / 10, what="sft loss"
  )
  numerics.assert_close_f32(
    aux["nll_token_mean"], (nll * mask).sum() / 5, levels=levels, magnitude=nll_mag / 5,
    what="nll_token_mean",
  )  # fmt: skip
  grad = jax.grad(lambda lg: losses.sft_loss(lg, targets, jnp.asarray(mask), 5.0)[0])(logits)
  exact(grad[0, 2:], np.zeros_like(grad[0, 2:]))  # masked positions: exactly 0 gradient
  assert np.abs(grad[0, :2]).max() > 0.01


def test_policy_loss_is_the_same_sharded_over_8_devices():
  arrays, mask = _random_batch(seed=4)
  norm = losses.aggregation_normalizers(mask, "seq_mean_token_mean")
  fn = jax.jit(
    lambda a: losses.policy_loss(
      **a, kl_estimator="k2", aggregation="seq_mean_token_mean", normalizer=norm
    )[0]
  )
  mesh = jax.make_mesh((8,), ("data",))
  sharded = jax.device_put(arrays, jax.NamedSharding(mesh, jax.P("data")))
  assert len(sharded["logp_bt"].sharding.device_set) == 8
  # Per-token terms, 12-term per-sequence sums, then an 8-term mean: partial sums per device.
  terms = _loss_terms(arrays, "k2") * mask
  numerics.assert_close_f32(
    fn(sharded), fn(arrays), levels=[4, 12, 8, 1], magnitude=terms.sum() / norm,
    what="sharded policy loss",
  )  # fmt: skip
