"""Per-slot log-probs of episode streams: the scoring every update step shares.

Streams are in cache-slot layout (rl.experience.Experience): holes are masked and each slot's
token is scored by the logits of the row's previous VALID slot, exactly as the sampler scored it.
"""

from typing import Any

import jax
import jax.numpy as jnp

from score_jax.models import decoder
from score_jax.models.config import ModelConfig
from score_jax.rl import losses
from score_jax.rl.experience import Experience

PyTree = Any


def _stream_alignment(valid_bt: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(next_bt, prev_bt): the next valid slot after each slot, the previous valid slot before it.

  next = t where there is none, prev = -1 where there is none.
  """
  t = valid_bt.shape[1]
  slot_t = jnp.arange(t)
  nxt_bt = jax.lax.cummin(jnp.where(valid_bt, slot_t, t)[:, ::-1], axis=1)[:, ::-1]
  nxt_bt = jnp.concatenate([nxt_bt[:, 1:], jnp.full_like(nxt_bt[:, :1], t)], axis=1)
  prev_bt = jax.lax.cummax(jnp.where(valid_bt, slot_t, -1), axis=1)
  prev_bt = jnp.concatenate([jnp.full_like(prev_bt[:, :1], -1), prev_bt[:, :-1]], axis=1)
  return nxt_bt, prev_bt


def _scored_slots(keep_bt: jax.Array, max_scored: int) -> tuple[jax.Array, jax.Array]:
  """(slot_bk, rank_bt): the first `max_scored` slots of `keep_bt` per row in slot order (0
  after the last), and each slot's rank among them."""
  t = keep_bt.shape[1]
  slot_t = jnp.arange(t, dtype=jnp.int32)
  # A stable sort on (not kept, slot): the kept slots first, in order; no scatter.
  order_bt = jnp.argsort(jnp.where(keep_bt, slot_t, t + slot_t), axis=1)
  k = min(max_scored, t)
  slot_bk = jnp.where(jnp.arange(k) < keep_bt.sum(1, keepdims=True), order_bt[:, :k], 0)
  return slot_bk, jnp.cumsum(keep_bt, axis=1, dtype=jnp.int32) - 1


def stream_scores(
  config: ModelConfig,
  params: PyTree,
  mb: Experience,
  temperature: float,
  with_entropy: bool = False,
  max_scored: int | None = None,
) -> tuple[jax.Array, jax.Array | None]:
  """log p(token in slot t | the row's valid slots before t) at `temperature`, float32 [b, t].

  Gathers through `losses.token_logprobs`: no [b, t, v] log-prob tensor is built. Slots without
  a valid predecessor and holes get 0. Optionally also the entropy of the distribution that
  produced each slot's token (metrics only).

  `max_scored` (static): score only the slots of `mb.loss_mask`, at most this many per row; the
  logits are computed only at the slots before them ([b, max_scored, v], not [b, t, v]), and
  every other slot gets 0. A row with more loss slots gets NaN there: the update's `finite`
  check stops the run instead of training on a truncated row.
  """
  valid_bt = mb.valid.astype(bool)
  # Packed rows: a segment's first slot has no predecessor in its own segment, so it gets 0.
  segments_bt = mb.segments
  nxt_bt, prev_bt = _stream_alignment(valid_bt)
  keep_bt = valid_bt & (prev_bt >= 0)
  src_bt = jnp.maximum(prev_bt, 0)
  if segments_bt is not None:
    keep_bt &= jnp.take_along_axis(segments_bt, src_bt, axis=1) == segments_bt
  if max_scored is not None:
    return _scores_at_loss_slots(
      config, params, mb, temperature, with_entropy, max_scored, keep_bt, src_bt
    )
  logits_btv, _ = decoder.forward(
    config, params, mb.tokens, mb.positions, valid_bt, segments_bt=segments_bt
  )
  t = valid_bt.shape[1]
  next_tok_bt = jnp.take_along_axis(mb.tokens, jnp.minimum(nxt_bt, t - 1), axis=1)
  score_bt = losses.token_logprobs(logits_btv, next_tok_bt, temperature)
  logp_bt = jnp.where(keep_bt, jnp.take_along_axis(score_bt, src_bt, axis=1), 0.0)
  if not with_entropy:
    return logp_bt, None
  ent_bt = losses.token_entropy(logits_btv, temperature)
  return logp_bt, jnp.where(keep_bt, jnp.take_along_axis(ent_bt, src_bt, axis=1), 0.0)


def _scores_at_loss_slots(
  config, params, mb, temperature, with_entropy, max_scored, keep_bt, src_bt
):
  """`stream_scores` with `max_scored`: logits at the sources of the loss slots only."""
  scored_bt = keep_bt & mb.loss_mask.astype(bool)
  slot_bk, rank_bt = _scored_slots(scored_bt, max_scored)
  k = slot_bk.shape[1]
  logits_bkv = decoder.logits_at_slots(
    config,
    params,
    mb.tokens,
    mb.positions,
    mb.valid.astype(bool),
    jnp.take_along_axis(src_bt, slot_bk, axis=1),
    segments_bt=mb.segments,
  )
  score_bk = losses.token_logprobs(
    logits_bkv, jnp.take_along_axis(mb.tokens, slot_bk, axis=1), temperature
  )

  def to_slots(x_bk):  # back to [b, t]: slot t holds its rank's value, NaN past max_scored
    x_bt = jnp.take_along_axis(x_bk, jnp.clip(rank_bt, 0, k - 1), axis=1)
    return jnp.where(scored_bt, jnp.where(rank_bt < k, x_bt, jnp.nan), 0.0)

  if not with_entropy:
    return to_slots(score_bk), None
  return to_slots(score_bk), to_slots(losses.token_entropy(logits_bkv, temperature))
