"""Sharded SCoRe steps: sharding and micro-batch invariance, stage semantics, donation, errors."""

import functools
import warnings

import jax
import numpy as np
import pytest

from score_jax.models import decoder, presets
from score_jax.parallel import mesh as mesh_lib
from score_jax.rl import losses, optim, steps
from score_jax.rl.algorithms import Coefficients
from score_jax.rl.experience import Experience
from tests import numerics, streams

pytestmark = pytest.mark.numerics

CFG = presets.get_preset("tiny-gemma")
# Unoptimised XLA CPU code compiles ~3x faster; both sides of every comparison use it.
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
OCFG = optim.OptimConfig(learning_rate=1e-4, warmup_steps=2)
OPT = optim.make_optimizer(OCFG)
B, T = 16, 48
# The paper's MATH coefficients (Table 8).
COEF = Coefficients.of(alpha=10.0, beta1=0.01, beta2=0.1)


_stream_logprobs = jax.jit(streams.stream_logprobs, static_argnums=(0, 5))


@functools.cache
def _batch(seed: int, const_r1: bool) -> Experience:
  return episode_batch(seed, _init_params(), const_r1=const_r1)


def batch_of(seed: int, const_r1: bool = False) -> Experience:
  """A cached episode batch scored by the initial policy (its arrays are copies)."""
  return jax.tree.map(np.copy, _batch(seed, const_r1))


def episode_batch(seed: int, params, b: int = B, t: int = T, const_r1: bool = False) -> Experience:
  """Episode streams as rollout builds them: left padding, prompt, y1, instruction, y2, holes."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, CFG.vocab_size, (b, t)).astype(np.int32)
  turn = np.zeros((b, t), np.int32)
  valid = np.ones((b, t), bool)
  for i in range(b):
    pad, p, a1, a2 = (
      rng.integers(0, 3),
      rng.integers(4, 9),
      rng.integers(3, 12),
      rng.integers(3, 12),
    )
    s1 = pad + p
    s2 = s1 + a1 + 3  # 3 instruction tokens
    turn[i, s1 : s1 + a1] = 1
    turn[i, s2 : s2 + a2] = 2
    valid[i, :pad] = False
    valid[i, s1 + a1 - rng.integers(0, 2) : s1 + a1] = False  # a hole after an early stop
    valid[i, s2 + a2 :] = False
  turn = np.where(valid, turn, 0)
  rewards = rng.integers(0, 2, (b, 2)).astype(np.float32)
  if const_r1:  # r1 equal within each RLOO group of g=2
    rewards[:, 0] = np.repeat(rng.integers(0, 2, b // 2), 2)
  positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0).astype(np.int32)
  tokens = np.where(valid, tokens, 0)
  logp = np.asarray(_stream_logprobs(CFG, params, tokens, positions, valid, 1.0))
  loss_mask = valid & (turn > 0)
  return Experience(
    tokens=tokens, positions=positions, valid=valid, turn=turn, loss_mask=loss_mask,
    logp=np.where(loss_mask, logp, 0.0).astype(np.float32), rewards=rewards,
    normalizer=np.float32(loss_mask.sum()),
  )  # fmt: skip


def mesh_of(shape):
  return mesh_lib.make_mesh(shape, jax.devices()[: int(np.prod(shape))])


def build(shape, lc=None, m=1):
  mesh = mesh_of(shape)
  st = steps.Steps(
    CFG, lc or steps.LossConfig(), OPT, mesh, m, optim.make_schedule(OCFG), compiler_options=FAST
  )
  state = optim.init_train_state(CFG, OPT, mesh, jax.random.key(0), params=_init_params())
  ref = jax.device_put(_ref_params(), st.param_shardings)
  return st, state, ref


def max_diff(a, b) -> float:
  d = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)
  return max(jax.tree.leaves(d))


@functools.cache
def _init_params():
  return jax.device_get(jax.jit(decoder.init_params, static_argnums=0)(CFG, jax.random.key(0)))


@functools.cache
def _ref_params():
  # A reference that differs from the initial policy, so every KL term is non-zero.
  return jax.device_get(jax.jit(decoder.init_params, static_argnums=0)(CFG, jax.random.key(1)))


@pytest.fixture(scope="module")
def init_params():
  """The policy parameters every `build` starts from."""
  return _init_params()


@functools.cache
def _logit_scale() -> float:
  fwd = jax.jit(decoder.forward, static_argnums=0)
  return max(
    float(np.abs(fwd(CFG, p, batch_of(0).tokens)[0]).max()) for p in (_init_params(), _ref_params())
  )


def logp_bound() -> float:
  """Two float32 forwards' log-probs of the same tokens (tests/numerics.py)."""
  logit_err = numerics.logit_bound(CFG, T, _logit_scale())
  return numerics.logprob_bound(logit_err, _logit_scale(), CFG.vocab_size)


def grad_rel(microbatches: int = 1) -> float:
  """Relative gradient bound: forward, backward, the token sum, the micro-batch sum."""
  return numerics.relative_bound(numerics.gradient_levels(CFG, T, B * T) + [microbatches])


def metric_bounds(batch, coef=COEF, stage="stage2", g=2) -> dict:
  """Absolute bounds of the step metrics between two summation orders.

  Each is a token mean of a per-token term: the term's sensitivity to the log-probs times the
  log-prob bound (policy and reference each), plus the token sum's rounding.
  """
  mask = batch.loss_mask
  n = mask.sum()
  weights = losses.stage2_weights if stage == "stage2" else losses.stage1_weights
  beta1, beta2, alpha = (float(x) for x in (coef.beta1, coef.beta2, coef.alpha))
  args = (alpha, beta1) if stage == "stage2" else (beta1, beta2)
  adv, klw = weights(batch.turn, batch.rewards, g, *args)
  ref = np.asarray(
    _stream_logprobs(CFG, _ref_params(), batch.tokens, batch.positions, batch.valid, 1.0)
  )
  r = np.where(mask, batch.logp - ref, 0.0)

  def turn_mean(x, turn):
    sel = mask & (batch.turn == turn)
    return float((x * sel).sum() / max(sel.sum(), 1))

  dlogp, dr = logp_bound(), 2 * logp_bound()
  rounding = numerics.gamma(B * T)
  term = np.abs(adv) + klw * (1 + np.exp(np.abs(r)))  # |d term / d logp| (k1..k3 estimators)
  loss = (term * mask).sum() / n * dr + rounding * ((term * np.abs(batch.logp)) * mask).sum() / n
  return {
    "loss": loss,
    "pg_loss": loss,
    "kl_k1_turn1": dr + rounding * np.abs(r).max(),
    # k3(r) = e^-r - 1 + r: |dk3/dr| = |1 - e^-r| per token, averaged like the metric.
    "kl_k3_turn2": dr * turn_mean(np.abs(np.expm1(-r)), 2)
    + rounding * turn_mean(np.exp(-r) + np.abs(r), 2),
    "entropy_turn1": dlogp * np.log(CFG.vocab_size),
    "entropy_turn2": dlogp * np.log(CFG.vocab_size),
    "tokens_turn2": 0.0,  # a count: integers below 2^24 add exactly in float32
  }


def assert_step_metrics_close(m, want, keys, batch, grad_rel_, what, **kw):
  bounds = metric_bounds(batch, **kw)
  for key in keys:
    if key == "grad_norm":  # a norm over every parameter of gradients within grad_rel
      bound = (grad_rel_ + 2 * numerics.gamma(decoder.count_params(CFG))) * float(want[key])
    else:
      bound = bounds[key]
    numerics.assert_close(float(m[key]), float(want[key]), bound, what=f"{what}: {key}")


@pytest.fixture(scope="module")
def single_device(init_params):
  """Stage II on one device: the state before and after each of 3 steps, and the metrics."""
  st, state, ref = build((1, 1, 1))
  states, metrics = [jax.device_get(state)], []
  for i in range(3):
    state, m = st.update("stage2")(state, ref, batch_of(i), COEF)
    states.append(jax.device_get(state))
    metrics.append(jax.device_get(m))
  return st, state, ref, states, metrics


def lr_at(step: int) -> float:
  return float(optim.make_schedule(OCFG)(step))


def test_sharded_steps_equal_single_device(single_device, init_params):
  _, _, _, want, want_metrics = single_device
  assert want_metrics[0]["finite"] and want_metrics[0]["logp_diff_max"] <= logp_bound()
  numerics.assert_close_f32(  # lr * min(1, (s + 1) / warmup): three float32 operations
    want_metrics[0]["lr"], OCFG.learning_rate / 2, levels=[1, 1, 1], sides=1, what="warmup lr"
  )
  assert max_diff(want[1].params, init_params) > 1e-5  # the step really moves the params
  for shape in [(1, 2, 4), (1, 8, 1)]:
    st, state, ref = build(shape)
    # Each step starts from the single-device state before it: a difference can then only be
    # this step's rounding (Adam would amplify an earlier step's, see numerics.adam_step_bound).
    shardings = optim.train_state_shardings(CFG, OPT, mesh_of(shape))
    with warnings.catch_warnings():
      warnings.simplefilter("error")  # e.g. "Some donated buffers were not usable"
      for i in range(3):
        old = state if i == 0 else jax.device_put(want[i], shardings)
        state, m = st.update("stage2")(old, ref, batch_of(i), COEF)
        assert all(x.is_deleted() for x in jax.tree.leaves(old)), "state was not donated"
        what = f"mesh {shape} step {i + 1}"
        numerics.assert_adam_step_close(
          jax.device_get(state), want[i], want[i + 1], lr=lr_at(i), grad_rel=grad_rel(),
          cfg=OCFG, what=what,
        )  # fmt: skip
        keys = ("loss", "kl_k1_turn1", "kl_k3_turn2", "entropy_turn2", "grad_norm")
        assert_step_metrics_close(m, want_metrics[i], keys, batch_of(i), grad_rel(), what)
    assert st.update("stage2").cache_size() == 1, "recompiled between steps"
    emb = state.params["embedder"]["input_embedding"]
    assert emb.sharding == st.param_shardings["embedder"]["input_embedding"]


def test_microbatches_equal_full_batch(single_device, init_params):
  _, _, _, want, want_metrics = single_device
  st, state, ref = build((1, 2, 1), m=4)
  state, m = st.update("stage2")(state, ref, batch_of(0), COEF)
  numerics.assert_adam_step_close(
    jax.device_get(state), want[0], want[1], lr=lr_at(0), grad_rel=grad_rel(4), cfg=OCFG,
    what="4 micro-batches",
  )  # fmt: skip
  # grad_norm too: clipping and Adam hide a wrongly scaled gradient from params and moments.
  keys = ("loss", "pg_loss", "kl_k1_turn1", "kl_k3_turn2", "entropy_turn1", "tokens_turn2")
  keys += ("grad_norm",)
  assert_step_metrics_close(m, want_metrics[0], keys, batch_of(0), grad_rel(4), "micro-batches")
  assert float(m["logp_diff_max"]) <= logp_bound()


def test_non_finite_loss_skips_the_update(single_device, init_params):
  st, state, ref, _, _ = single_device
  before = jax.device_get(state.params), int(state.step)
  batch = batch_of(5).replace(normalizer=np.float32(1e-45))  # > 0, but the loss overflows
  state, m = st.update("stage2")(state, ref, batch, COEF)
  assert not m["finite"]
  # Exact: a skipped update keeps the old arrays (jnp.where picks them bit for bit).
  assert int(state.step) == before[1] and max_diff(state.params, before[0]) == 0.0


def test_logprob_step_matches_the_reference_scorer(init_params):
  st, state, ref = build((1, 2, 4))
  batch = batch_of(0)
  out = st.logprob(state.params, ref, batch.only(steps.SCORE_FIELDS))
  args = (batch.tokens, batch.positions, batch.valid, 1.0)
  want = streams.stream_logprobs(CFG, init_params, *args)
  mask = batch.valid
  numerics.assert_close(out["logp"], want, logp_bound(), where=mask, what="logprob step")
  ref_want = streams.stream_logprobs(CFG, jax.device_get(ref), *args)
  numerics.assert_close(out["ref_logp"], ref_want, logp_bound(), where=mask, what="ref logprobs")


def test_stage1_attempt1_gradient_comes_only_from_beta2_kl(init_params):
  # Only attempt-1 tokens in the loss; the policy differs from the reference (KL != 0).
  coef = Coefficients.of(alpha=10.0, beta1=0.0, beta2=0.0)
  st, state, ref = build((1, 1, 1))
  batch = batch_of(1)
  mask = batch.loss_mask & (batch.turn == 1)
  batch = batch.replace(loss_mask=mask, normalizer=np.float32(mask.sum()))
  p0 = jax.device_get(state.params)
  state, m = st.update("stage1")(state, ref, batch, coef)
  # Stage I gives attempt 1 no reward term: with beta2 = 0 nothing moves, whatever r1 is.
  # Exact: every per-token weight is exactly 0, so is every gradient and Adam step.
  assert float(m["grad_norm"]) == 0.0 and max_diff(state.params, p0) == 0.0
  st2, state2, ref2 = build((1, 1, 1))
  state2, m2 = st2.update("stage2")(state2, ref2, batch, coef)  # Stage II rewards attempt 1
  assert float(m2["grad_norm"]) > 1e-3 and max_diff(state2.params, p0) > 1e-5


@pytest.mark.slow
def test_stages_coincide_without_bonus(init_params):
  # alpha = 0, beta1 = beta2 and r1 constant within each group: Stage I, Stage II and naive
  # multi-turn weights coincide (turn-1 RLOO advantage is 0), so do the updates.
  lc = steps.LossConfig(kl_estimator="k3")
  coef = Coefficients.of(alpha=0.0, beta1=0.05, beta2=0.05)
  batch = batch_of(2, const_r1=True)
  out = []
  for name in ("stage1", "stage2", "naive_multiturn"):
    st, state, ref = build((1, 1, 1), lc)
    before = jax.device_get(state)
    state, m = st.update(name)(state, ref, batch, coef)
    out.append((jax.device_get(state), float(m["grad_norm"])))
  assert out[0][1] > 1e-3
  for other, name in ((out[1][0], "stage2"), (out[2][0], "naive")):
    numerics.assert_adam_step_close(
      other, before, out[0][0], lr=lr_at(0), grad_rel=grad_rel(), cfg=OCFG, what=name
    )


@pytest.mark.slow
def test_sft_step_lowers_the_nll(init_params):
  st, state, _ = build((1, 2, 4), m=2)
  sft = batch_of(3).only(steps.SFT_FIELDS)
  nll = []
  for _ in range(4):
    state, m = st.update("sft")(state, sft)
    nll.append(float(m["nll_token_mean"]))
  assert nll[-1] < nll[0] - 1e-3, nll


def test_bad_inputs_fail_before_compiling(init_params):
  mesh = mesh_of((1, 8, 1))
  st = steps.Steps(CFG, steps.LossConfig(), OPT, mesh)  # abstract only: nothing compiles
  state = ref = None  # validation runs before the state is ever looked at
  good = batch_of(0)
  small = jax.tree.map(lambda v: v[:12] if np.ndim(v) else v, good)
  stage1, stage2 = st.update("stage1"), st.update("stage2")
  with pytest.raises(ValueError, match=r"global batch 12 .* data\*fsdp=8"):
    stage2(state, ref, small, COEF)
  with pytest.raises(ValueError, match=r"Experience.turn\[0, \d+\] = 3 is outside 0..2"):
    stage2(state, ref, good.replace(turn=np.where(good.turn == 2, 3, good.turn)), COEF)
  with pytest.raises(ValueError, match=r"Experience.rewards has shape \(16, 3\)"):
    stage1(state, ref, good.replace(rewards=np.zeros((B, 3), np.float32)), COEF)
  with pytest.raises(ValueError, match=r"missing \['normalizer'\]"):
    stage1(state, ref, good.replace(normalizer=None), COEF)
  with pytest.raises(TypeError, match="Coefficients"):
    stage1(state, ref, good)
  with pytest.raises(TypeError, match="Experience"):
    stage1(state, ref, {"tokens": good.tokens}, COEF)
  with pytest.raises(ValueError, match="num_microbatches=3"):
    steps.Steps(CFG, steps.LossConfig(), OPT, mesh_of((1, 2, 1)), 3).update("stage2")(
      None, None, good, COEF
    )
  with pytest.raises(ValueError, match="unknown algorithm 'stage3'; registered: .*naive_multiturn"):
    st.update("stage3")
  with pytest.raises(ValueError, match="Coefficients.beta2 must be a finite number >= 0"):
    Coefficients.of(beta2=-1.0)
  assert stage2.cache_size() == 0  # nothing was compiled
  with pytest.raises(ValueError, match="LossConfig.kl_estimator.*'k2'"):
    steps.LossConfig(kl_estimator="k4")
  with pytest.raises(ValueError, match="LossConfig.kl_estimator"):
    steps.LossConfig(kl_estimator="k1")  # zero expected gradient: refused
  with pytest.raises(ValueError, match="LossConfig.aggregation"):
    steps.LossConfig(aggregation="mean")


@pytest.mark.parametrize("stage", ["stage2", "naive_multiturn"])
def test_an_update_raises_rewarded_attempts_and_lowers_the_rest(init_params, stage):
  # The sign of the whole path (advantages -> surrogate -> gradient -> Adam): with no KL, one
  # step must make the rewarded attempt-2 samples likelier than the unrewarded ones.
  st, state, ref = build((1, 1, 1))
  batch = batch_of(4)
  batch.rewards[:, 1] = np.tile([1.0, 0.0], B // 2)  # one of each RLOO pair (g=2) rewarded
  state, _ = st.update(stage)(state, ref, batch, Coefficients.of())
  args = (batch.tokens, batch.positions, batch.valid)
  new = np.asarray(_stream_logprobs(CFG, jax.device_get(state.params), *args, 1.0))
  mask = batch.loss_mask & (batch.turn == 2)
  gain_b = ((new - batch.logp) * mask).sum(1) / mask.sum(1)
  rewarded = batch.rewards[:, 1] > 0
  assert gain_b[rewarded].mean() > 0 > gain_b[~rewarded].mean(), gain_b


def test_compacted_streams_give_the_same_update(init_params):
  """Dropping the sampler's holes (Experience.compact) changes shapes, not the update."""
  batch = batch_of(3)
  b, t = batch.tokens.shape
  compact = batch.compact(8)
  longest = int(batch.valid.sum(1).max())
  assert compact.tokens.shape == (b, -(-longest // 8) * 8) and compact.num_slots < t
  for f in ("tokens", "positions", "valid", "turn", "loss_mask", "logp"):  # copies, exact
    np.testing.assert_array_equal(
      getattr(compact, f)[compact.valid], getattr(batch, f)[batch.valid].ravel()
    )
  assert compact.rewards is batch.rewards and compact.normalizer is batch.normalizer
  updated = []
  coef = Coefficients.of(beta1=0.1, beta2=1.0)
  for bt in (batch, compact):
    st, state, ref = build((1, 1, 1))
    before = jax.device_get(state)
    state, m = st.update("stage1")(state, ref, bt, coef)
    updated.append((jax.device_get(state), jax.device_get(m)))
  numerics.assert_adam_step_close(
    updated[1][0], before, updated[0][0], lr=lr_at(0), grad_rel=grad_rel(), cfg=OCFG,
    what="compacted streams",
  )  # fmt: skip
  loss_bound = metric_bounds(batch, coef, "stage1")["loss"]
  numerics.assert_close(updated[1][1]["loss"], updated[0][1]["loss"], loss_bound, what="loss")


def test_coefficients_are_traced_not_compiled_in(init_params):
  """The adaptive controller changes beta2 every Stage I step: no step may recompile for it."""
  st, state, ref = build((1, 1, 1))
  stage1 = st.update("stage1")
  for beta2 in (0.1, 0.37, 2.5):
    state, m = stage1(state, ref, batch_of(0), Coefficients.of(beta1=0.01, beta2=beta2))
    assert m["finite"]
  assert stage1.cache_size() == 1


def test_single_turn_step_trains_attempt_1_only(init_params):
  """'w/o multi-turn training': one-attempt episodes, r1's RLOO advantage on attempt 1."""
  st, state, ref = build((1, 1, 1))
  full = batch_of(4)
  one = full.replace(
    turn=np.where(full.turn == 2, 0, full.turn),
    loss_mask=full.loss_mask & (full.turn == 1),
    valid=full.valid & (full.turn != 2),
    rewards=np.tile([[1.0], [0.0]], (B // 2, 1)).astype(np.float32),
  )
  one = one.replace(normalizer=np.float32(one.loss_mask.sum()))
  with pytest.raises(
    ValueError, match=r"Experience.rewards has shape \(16, 2\), expected \(16, 1\)"
  ):
    st.update("single_turn")(state, ref, full, Coefficients.of())
  state, m = st.update("single_turn")(state, ref, one, Coefficients.of())
  assert m["finite"] and "tokens_turn2" not in m and float(m["tokens_turn1"]) == one.loss_mask.sum()
  new = np.asarray(
    _stream_logprobs(CFG, jax.device_get(state.params), one.tokens, one.positions, one.valid, 1.0)
  )
  gain_b = ((new - one.logp) * one.loss_mask).sum(1) / one.loss_mask.sum(1)
  rewarded = one.rewards[:, 0] > 0
  assert gain_b[rewarded].mean() > 0 > gain_b[~rewarded].mean(), gain_b
