"""`benchmarks.decode_profile`: a decode call's time per step (differential) and by role."""

import math
import statistics

import jax
import pytest

from score_jax.benchmarks import decode_profile
from score_jax.generation import sampling
from score_jax.models import decoder, flops, presets

PROMPTS = [[5, 6, 7], [8, 9, 10, 11], [3], [40, 41]]


@pytest.fixture(scope="module")
def model():
  config = presets.get_preset("tiny-gemma")
  return config, decoder.init_params(config, jax.random.key(0))


def _profile(model, max_new: int, decode_layout: bool | None = None):
  config, params = model
  sampler = sampling.Sampler(
    config, prompt_buckets=(8,), gen_buckets=(8, 16), decode_layout=decode_layout
  )
  sp = sampling.SamplingParams(temperature=1.0, max_new_tokens=max_new, stop_ids=())
  state = sampler.start(params, PROMPTS, extra_slots=16)
  return decode_profile.breakdown(sampler, params, state, sp, jax.random.key(0))


@pytest.mark.parametrize("decode_layout", [True, False])
def test_breakdown_reports_the_step_time_and_labelled_roles(model, decode_layout):
  out = _profile(model, 16, decode_layout)
  assert out["steps"] == 16
  # A difference of two timed calls: at this size (microseconds a step) beside another test
  # worker it can come out either side of 0, so only its presence is checked here.
  assert math.isfinite(out["wall_ms_per_step"]) and out["profiled_call_ms"] > 0
  pairs = out["wall_ms_per_step_pairs"]
  assert len(pairs) == 5 and out["wall_ms_per_step"] == statistics.median(pairs)
  # The step's ops are found in the trace and labelled: weights are multiplied in every step.
  assert out["roles_ms_per_step"].get("weight matmuls", 0) > 0
  assert out["per_call_ms"] >= 0


def test_one_step_cannot_be_differenced(model):
  with pytest.raises(ValueError, match="max_new_tokens >= 2"):
    _profile(model, 1)


@pytest.mark.parametrize("preset", ["tiny-gemma", "tiny-mistral"])  # tied and untied heads
def test_weight_matmuls_run_every_kernel_of_the_step(preset):
  config = presets.get_preset(preset)
  params = decoder.init_params(config, jax.random.key(0))
  out = decode_profile.weight_matmuls(config, params, rows=4, steps=8, reps=3)
  # Every kernel that enters a matmul in a decode step, and nothing else, at 4 rows.
  assert out["flops_per_step"] == 2 * 4 * flops.matmul_params(config)
  assert len(out["ms_per_step_pairs"]) == 3
  assert out["ms_per_step"] == statistics.median(out["ms_per_step_pairs"])


def test_weight_matmuls_need_two_loop_lengths_and_stacked_layers(model):
  config, params = model
  with pytest.raises(ValueError, match="steps >= 2"):
    decode_profile.weight_matmuls(config, params, rows=4, steps=1)
  with pytest.raises(ValueError, match="stacked 'layers'"):
    decode_profile.weight_matmuls(config, {"embedder": params["embedder"]}, rows=4)
