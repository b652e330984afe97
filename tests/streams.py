"""A reference scorer of episode streams for tests: the plain log_softmax path.

The update steps score streams through `rl.scoring.stream_scores` (gathered log-probs, no
[b, s, v] tensor); this is the straightforward version they are checked against.
"""

import jax
import jax.numpy as jnp

from score_jax.models import decoder


def stream_logprobs(config, params, tokens_bs, positions_bs, valid_bs, temperature):
  """log_softmax(logits / T) of each slot's token given the stream before it (T=0 -> T=1).

  The token in slot j is scored with the logits of the row's previous VALID slot; slots with no
  valid predecessor and invalid slots get 0. Returns float32 [b, s].
  """
  valid_bs = jnp.asarray(valid_bs, bool)
  logits_bsv, _ = decoder.forward(config, params, tokens_bs, positions_bs, valid_bs)
  t = jnp.where(jnp.asarray(temperature) > 0, temperature, 1.0)
  logp_bsv = jax.nn.log_softmax(logits_bsv.astype(jnp.float32) / t, axis=-1)
  s = valid_bs.shape[1]
  slot_s = jnp.arange(s)
  nxt_bs = jax.lax.cummin(jnp.where(valid_bs, slot_s, s)[:, ::-1], axis=1)[:, ::-1]
  nxt_bs = jnp.concatenate([nxt_bs[:, 1:], jnp.full_like(nxt_bs[:, :1], s)], axis=1)
  next_tok_bs = jnp.take_along_axis(tokens_bs, jnp.minimum(nxt_bs, s - 1), axis=1)
  score_bs = jnp.take_along_axis(logp_bsv, next_tok_bs[..., None], axis=-1)[..., 0]
  prev_bs = jax.lax.cummax(jnp.where(valid_bs, slot_s, -1), axis=1)
  prev_bs = jnp.concatenate([jnp.full_like(prev_bs[:, :1], -1), prev_bs[:, :-1]], axis=1)
  out_bs = jnp.take_along_axis(score_bs, jnp.maximum(prev_bs, 0), axis=1)
  return jnp.where(valid_bs & (prev_bs >= 0), out_bs, 0.0)
