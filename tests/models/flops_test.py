"""The analytic FLOP counts behind MFU: the output head counted only where logits are made."""

import dataclasses

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


@pytest.mark.parametrize("queries", [0, 7, 40])
def test_last_layer_queries_remove_exactly_its_query_side(queries):
  # One layer's q_proj, o_proj and MLP matmuls, and its attention, at the skipped tokens.
  d, h, k, f = CFG.embed_dim, CFG.num_heads, CFG.head_dim, CFG.hidden_dim
  query_side = 2 * d * h * k + 3 * d * f
  skipped = (40 - queries) * 3 * (2.0 * query_side + 4.0 * 40 * h * k)
  full = flops.forward(CFG, 3, 40)
  assert full - flops.forward(CFG, 3, 40, last_layer_queries=queries) == skipped
  want = 4 * flops.forward(CFG, 3, 40, head_tokens=queries, last_layer_queries=queries)
  assert flops.policy_update(CFG, 3, 40, queries) == want


def test_an_untied_input_embedding_is_a_gather():
  untied = presets.get_preset("tiny-mistral")
  assert not untied.tie_embeddings
  tied = dataclasses.replace(untied, tie_embeddings=True)
  assert flops.matmul_params(untied) == flops.matmul_params(tied)
  assert flops.forward(untied, 2, 9) == flops.forward(tied, 2, 9)


def test_head_tokens_past_the_stream_count_as_the_stream():
  assert flops.forward(CFG, 3, 40, head_tokens=99) == flops.forward(CFG, 3, 40)


def test_body_is_the_non_head_matmuls():
  # A tied Gemma: the head is the embedding table, counted once; the rest are the layers.
  head = CFG.vocab_size * CFG.embed_dim
  body = flops.matmul_params(CFG) - head
  assert body > 0
  assert flops.forward(CFG, 1, 1, keys=0, head_tokens=0) == 2.0 * body


def test_rl_step_single_attempt_is_prefill_decode_and_update():
  # 2 prompts x 3 samples, 10 prompt slots, 4 new tokens: each part written out by hand.
  got = flops.rl_step(CFG, 2, 3, 10, 4)
  prefill = flops.forward(CFG, 2, 10, head_tokens=1)
  decode = 4 * flops.forward(CFG, 6, 1, keys=14)
  update = 4 * flops.forward(CFG, 6, 14, head_tokens=4, last_layer_queries=4)
  assert got == {"sample": prefill + decode, "update": update, "total": prefill + decode + update}


def test_rl_step_second_attempt_appends_the_instruction_and_reads_further():
  one, two = flops.rl_step(CFG, 2, 3, 10, 4), flops.rl_step(CFG, 2, 3, 10, 4, 2, 5)
  append = flops.forward(CFG, 6, 5, keys=19, head_tokens=1)
  decode = 4 * flops.forward(CFG, 6, 1, keys=23)
  assert two["sample"] == one["sample"] + append + decode
  assert two["update"] == 4 * flops.forward(CFG, 6, 23, head_tokens=8, last_layer_queries=8)


def test_rl_step_two_attempt_ratio_falls_with_longer_prompts():
  # The shared prompt dilutes the second attempt's extra work.
  ratio = [
    flops.rl_step(CFG, 8, 4, p, 32, 2, 16)["total"] / flops.rl_step(CFG, 8, 4, p, 32)["total"]
    for p in (64, 256, 1024)
  ]
  assert 2.0 > ratio[0] > ratio[1] > ratio[2] > 1.0
