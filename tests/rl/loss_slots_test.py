"""Logits only before the loss tokens (LossConfig.max_new_tokens): the same update, less work."""

import jax
import numpy as np
import pytest

from score_jax.rl import scoring, steps
from tests import numerics
from tests.rl import steps_test as st_test

pytestmark = pytest.mark.numerics

# steps_test.episode_batch samples attempts of 3..11 tokens.
MAX_NEW = 11


def test_scoring_at_loss_slots_equals_every_slot():
  batch = st_test.batch_of(0)
  params = st_test._init_params()
  full = jax.jit(scoring.stream_scores, static_argnums=(0, 3, 4))
  part = jax.jit(scoring.stream_scores, static_argnums=(0, 3, 4, 5))
  want_logp, want_ent = full(st_test.CFG, params, batch, 1.0, True)
  logp, ent = part(st_test.CFG, params, batch, 1.0, True, 2 * MAX_NEW)
  mask = batch.loss_mask
  bound = st_test.logp_bound()
  numerics.assert_close(logp, want_logp, bound, where=mask, what="log-probs at loss slots")
  numerics.assert_close(ent, want_ent, bound, where=mask, what="entropies at loss slots")
  assert not np.asarray(logp)[~mask].any() and not np.asarray(ent)[~mask].any()
  # A row with more loss slots than max_scored gets NaN past it, never a silent truncation.
  counts = mask.sum(1)
  short, _ = part(st_test.CFG, params, batch, 1.0, False, int(counts.min()))
  short = np.asarray(short)
  rank = np.cumsum(mask, axis=1) - 1
  assert np.isnan(short[mask & (rank >= counts.min())]).all()
  assert np.isfinite(short[mask & (rank < counts.min())]).all()


@pytest.mark.parametrize("stage", ["stage2", "single_turn"])
def test_an_update_at_loss_slots_equals_the_full_update(stage):
  batch = st_test.batch_of(1)
  keys = ("loss", "kl_k1_turn1", "entropy_turn1", "grad_norm")
  bounds_batch = batch
  if stage == "single_turn":  # its episodes stop after attempt 1
    batch = batch.replace(
      turn=np.where(batch.turn == 2, 0, batch.turn),
      loss_mask=batch.loss_mask & (batch.turn == 1),
      valid=batch.valid & (batch.turn != 2),
      rewards=batch.rewards[:, :1],
    )
    batch = batch.replace(normalizer=np.float32(batch.loss_mask.sum()))
    keys = keys[1:]  # metric_bounds' loss bound is Stage I/II's; its others ignore the rewards
    bounds_batch = batch.replace(rewards=np.repeat(batch.rewards, 2, axis=1))
  out = []
  for lc in (steps.LossConfig(), steps.LossConfig(max_new_tokens=MAX_NEW)):
    st, state, ref = st_test.build((1, 1, 1), lc)
    before = jax.device_get(state)
    state, m = st.update(stage)(state, ref, batch, st_test.COEF)
    out.append((jax.device_get(state), jax.device_get(m)))
  numerics.assert_adam_step_close(
    out[1][0], before, out[0][0], lr=st_test.lr_at(0), grad_rel=st_test.grad_rel(),
    cfg=st_test.OCFG, what=f"{stage} at loss slots",
  )  # fmt: skip
  st_test.assert_step_metrics_close(
    out[1][1], out[0][1], keys, bounds_batch, st_test.grad_rel(), f"{stage} at loss slots"
  )


def test_a_row_over_the_bound_is_refused_before_compiling():
  st = steps.Steps(
    st_test.CFG, steps.LossConfig(max_new_tokens=3), st_test.OPT, st_test.mesh_of((1, 1, 1))
  )
  with pytest.raises(ValueError, match=r"loss_mask row \d+ has \d+ loss tokens, more than .* \(6 "):
    st.update("stage2")(None, None, st_test.batch_of(0), st_test.COEF)
  assert st.update("stage2").cache_size() == 0
  with pytest.raises(ValueError, match="LossConfig.max_new_tokens"):
    steps.LossConfig(max_new_tokens=0)
