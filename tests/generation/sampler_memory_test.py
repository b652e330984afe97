"""What keeps a paper-scale sampler inside one device's memory changes no sample.

- prefill / append compute logits at the last column only (`decoder.forward(last_only=True)`);
- prefill repeats each prompt's cache with a static slice + repeat, not a gather by index;
- `rollout.prompts_per_call` samples a step's prompts a few at a time: every row's RNG comes
  from its global row id, so the episodes are the same tokens;
- on several hosts the sampler's replica is `decoder.cast_for_inference` (weights in the
  compute dtype): the exact numbers each use casts to, so the same logits.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax.generation import offline, rollout, sampling
from score_jax.models import decoder, presets
from tests import numerics
from tests.helpers import diverse_params

pytestmark = pytest.mark.numerics

PROMPTS = [[2, 5, 9, 11, 4], [2, 7, 7], [2, 30, 31, 32, 33, 34, 35], [2, 8], [2, 3, 4, 5], [2, 9]]
INSTRUCTION = [13, 14, 15]


@pytest.fixture(scope="module")
def model():
  config = presets.get_preset("tiny-gemma2", vocab_size=64)
  return config, diverse_params(config)


def test_last_only_logits_equal_the_full_forward_last_column(model):
  config, params = model
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, 64, (3, 9)), jnp.int32)
  full, _ = decoder.forward(config, params, tokens)
  last, _ = decoder.forward(config, params, tokens, last_only=True)
  assert last.shape == (3, 1, config.vocab_size)
  np.testing.assert_allclose(np.asarray(last[:, 0]), np.asarray(full[:, -1]), rtol=1e-5, atol=1e-5)


def _episodes(config, params, prompts_per_call):
  sampler = sampling.Sampler(config, prompt_buckets=(8,), append_buckets=(8,), gen_buckets=(8,))
  rc = rollout.RolloutConfig(2, 2, max_new_tokens=6, temperature=1.0, stop_ids=(1,))
  return offline.training_episodes(
    sampler,
    params,
    params,
    PROMPTS,
    INSTRUCTION,
    rc,
    jax.random.key(3),
    num_offline=0,
    row_offset=4,
    decode=None,
    prompts_per_call=prompts_per_call,
  )


def test_prompts_per_call_gives_the_same_episodes(model):
  config, params = model
  whole = _episodes(config, params, 0)
  exp = whole.experience
  # Another batch size compiles to another summation order: log-probs agree to float32 rounding.
  full, _ = decoder.forward(config, params, exp.tokens, exp.positions, exp.valid)
  scale = float(np.abs(np.asarray(full)[exp.valid]).max())
  logit_err = numerics.logit_bound(config, exp.tokens.shape[1], scale)
  logp_err = numerics.logprob_bound(logit_err, scale, config.vocab_size)
  for per_call in (1, 2, 4):  # 4 leaves a short last call of 2 prompts
    chunked = _episodes(config, params, per_call)
    assert chunked.attempt_tokens == whole.attempt_tokens, per_call
    np.testing.assert_array_equal(chunked.prompt_index, whole.prompt_index)
    np.testing.assert_array_equal(chunked.experience.tokens, exp.tokens)
    numerics.assert_close(
      chunked.experience.logp, exp.logp, logp_err, where=exp.loss_mask, what="chunked log-probs"
    )


def test_inference_cast_is_what_every_use_computes_with():
  config = presets.get_preset("tiny-gemma2", vocab_size=64, dtype="bfloat16")
  params = diverse_params(config)
  cast = decoder.cast_for_inference(config, params)
  dtypes = {jax.tree_util.keystr(k): x.dtype for k, x in jax.tree_util.tree_leaves_with_path(cast)}
  assert all(d == jnp.bfloat16 for k, d in dtypes.items() if "kernel" in k or "embedding" in k)
  assert all(d == jnp.float32 for k, d in dtypes.items() if "scale" in k)  # norms as stored
  tokens = jnp.asarray(np.random.default_rng(1).integers(1, 64, (2, 7)), jnp.int32)
  a, _ = decoder.forward(config, params, tokens)
  b, _ = decoder.forward(config, cast, tokens)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bitwise: the same casts
