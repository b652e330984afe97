"""Per-slot log-probs of episode streams: the scoring every update step shares.

Streams are in cache-slot layout (rl.experience.Experience): holes are masked and each slot's token is
scored by the logits of the row's previous VALID slot, exactly as the sampler scored it.
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


def stream_scores(
  config: ModelConfig,
  params: PyTree,
  mb: Experience,
  temperature: float,
  with_entropy: bool = False,
) -> tuple[jax.Array, jax.Array | None]:
  """log p(token in slot t | the row's valid slots before t) at `temperature`, float32 [b, t].

  Gathers through `losses.token_logprobs`: no [b, t, v] log-prob tensor is built. Slots without
  a valid predecessor and holes get 0. Optionally also the entropy of the distribution that
  produced each slot's token (metrics only).
  """
  valid_bt = mb.valid.astype(bool)
  # Packed rows: a segment's first slot has no predecessor in its own segment, so it gets 0.
  segments_bt = mb.segments
  logits_btv, _ = decoder.forward(
    config, params, mb.tokens, mb.positions, valid_bt, segments_bt=segments_bt
  )
  nxt_bt, prev_bt = _stream_alignment(valid_bt)
  t = valid_bt.shape[1]
  next_tok_bt = jnp.take_along_axis(mb.tokens, jnp.minimum(nxt_bt, t - 1), axis=1)
  score_bt = losses.token_logprobs(logits_btv, next_tok_bt, temperature)
  keep_bt = valid_bt & (prev_bt >= 0)
  src_bt = jnp.maximum(prev_bt, 0)
  if segments_bt is not None:
    keep_bt &= jnp.take_along_axis(segments_bt, src_bt, axis=1) == segments_bt
  logp_bt = jnp.where(keep_bt, jnp.take_along_axis(score_bt, src_bt, axis=1), 0.0)
  if not with_entropy:
    return logp_bt, None
  ent_bt = losses.token_entropy(logits_btv, temperature)
  return logp_bt, jnp.where(keep_bt, jnp.take_along_axis(ent_bt, src_bt, axis=1), 0.0)
