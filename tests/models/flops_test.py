"""The analytic FLOP counts behind MFU: the output head counted only where logits are made."""

import pytest

from score_jax.models import flops, presets

CFG = presets.get_preset(
  "gemma-2b", vocab_size=1000, embed_dim=64, hidden_dim=256, num_layers=2, head_dim=16
)


def test_head_at_every_slot_by_default():
  assert flops.forward(CFG, 3, 40) == flops.forward(CFG, 3, 40, head_tokens=40)
  assert flops.policy_update(CFG, 3, 40) == 4 * flops.forward(CFG, 3, 40)


@pytest.mark.parametrize("head", [0, 7, 40])
def test_head_tokens_remove_exactly_the_skipped_logits(head):
  skipped = 2.0 * 3 * CFG.vocab_size * CFG.embed_dim * (40 - head)
  assert flops.forward(CFG, 3, 40) - flops.forward(CFG, 3, 40, head_tokens=head) == skipped
  assert flops.policy_update(CFG, 3, 40) - flops.policy_update(CFG, 3, 40, head) == 4 * skipped


def test_head_tokens_past_the_stream_count_as_the_stream():
  assert flops.forward(CFG, 3, 40, head_tokens=99) == flops.forward(CFG, 3, 40)


def test_body_is_the_non_head_matmuls():
  # A tied Gemma: the head is the embedding table, counted once; the rest are the layers.
  head = CFG.vocab_size * CFG.embed_dim
  body = flops.matmul_params(CFG) - head
  assert body > 0
  assert flops.forward(CFG, 1, 1, keys=0, head_tokens=0) == 2.0 * body
