"""Sampler invariants: greedy = uncached argmax, distributions, filters, sharding, bad input."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax.generation import sampling
from score_jax.models import decoder, presets
from score_jax.models import sharding as model_sharding
from score_jax.parallel import mesh as mesh_lib
from score_jax.preflight import analysis
from tests import numerics
from tests.helpers import diverse_params

pytestmark = pytest.mark.numerics

FAMILIES = ["tiny-gemma", "tiny-gemma2", "tiny-gemma3", "tiny-llama", "tiny-qwen2", "tiny-mistral"]
FAST_FAMILIES = ("tiny-gemma2",)  # local layers, softcaps, post-norms: the most switches
# Mixed lengths: left padding inside one bucket, and past the sliding window (8) of local layers.
PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18], [3], [40, 41, 42, 43, 44]] * 2
STEPS = 10


def reference_greedy(config, params, prompts, steps):
  """Step-by-step argmax with the full uncached forward pass (rows right-padded, own layout).

  Returns (tokens per row, the logits each step chose from [b, steps, v]).
  """
  length = max(len(p) for p in prompts) + steps
  fwd = jax.jit(functools.partial(decoder.forward, config))
  seqs = [list(p) for p in prompts]
  scores = []
  for _ in range(steps):
    tokens = np.zeros((len(seqs), length), np.int32)
    mask = np.zeros((len(seqs), length), bool)
    for i, s in enumerate(seqs):
      tokens[i, : len(s)], mask[i, : len(s)] = s, True
    positions = np.broadcast_to(np.arange(length, dtype=np.int32), tokens.shape)
    logits, _ = fwd(params, tokens, positions, mask)
    last = np.array([len(s) - 1 for s in seqs])
    scores.append(np.asarray(logits)[np.arange(len(seqs)), last])
    for s, t in zip(seqs, np.argmax(scores[-1], axis=-1)):
      s.append(int(t))
  return [s[len(p) :] for s, p in zip(seqs, prompts)], np.stack(scores, axis=1)


def reference_scores(config, params, prompts, tokens_bg, temperature, rng=None):
  """The scores each generated token was drawn from, by one uncached forward over the stream.

  logits / T of the step's predecessor slot; with `rng`, the sampler's draw in argmax form
  (`inverse_cdf_scores`) with its per-row key fold_in(fold_in(fold_in(rng, row), turn=1), step).
  """
  b, g = tokens_bg.shape
  length = max(len(p) for p in prompts) + g
  tokens = np.zeros((b, length), np.int32)
  for i, p in enumerate(prompts):
    tokens[i, : len(p) + g] = list(p) + tokens_bg[i].tolist()
  logits, _ = jax.jit(functools.partial(decoder.forward, config))(params, tokens)
  steps = np.array([len(p) - 1 for p in prompts])[:, None] + np.arange(g)
  scores = np.asarray(logits)[np.arange(b)[:, None], steps] / max(temperature, 1.0e-30)
  if rng is None:
    return scores
  keys = [[jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(rng, r), 1), i)
           for i in range(g)] for r in range(b)]  # fmt: skip
  u = np.asarray(
    [[1.0 - float(jax.random.uniform(k, (), jnp.float32)) for k in row] for row in keys]
  )
  return inverse_cdf_scores(scores, u)


def inverse_cdf_scores(scores_v, u):
  """The sampler's inverse-CDF draw (first index whose cumulative probability reaches u * total)
  as an argmax over per-token scores on the logit scale, for the near-tie checks.

  Token k is drawn iff C[k-1] < u < C[k] (C the cumulative softmax, total 1 in float64); its
  score is half the log-distance of u to the nearer end of its interval: positive for the drawn
  token, negative for the others. A logit error of d per entry moves each log C by at most
  2d, so each score by at most d: the logit bound carries over unchanged.
  """
  z = np.asarray(scores_v, np.float64)
  p = np.exp(z - z.max(-1, keepdims=True))
  cdf = np.cumsum(p / p.sum(-1, keepdims=True), axis=-1)
  before = np.concatenate([np.zeros_like(cdf[..., :1]), cdf[..., :-1]], axis=-1)
  log_u = np.log(np.asarray(u, np.float64))[..., None]
  with np.errstate(divide="ignore"):
    return np.minimum(log_u - np.log(before), np.log(cdf) - log_u) / 2


def sampler_logit_bound(config, sampler, scores):
  """Cached sampler logits vs an uncached forward; the cache spans prompt + generation buckets."""
  keys = sampler.prompt_buckets[0] + sampler.gen_buckets[0]
  return numerics.logit_bound(config, keys, np.abs(scores).max())


@functools.cache
def _family_sampler(preset):
  """(config, params, sampler) per family, cached so the sharded test reuses its compilation."""
  config = presets.get_preset(preset)
  return config, diverse_params(config), sampling.Sampler(config)


def _family_params(names):
  return [pytest.param(n, marks=() if n in FAST_FAMILIES else pytest.mark.slow) for n in FAMILIES]


@pytest.mark.parametrize("preset", _family_params(FAMILIES))
def test_greedy_equals_uncached_argmax(preset):
  config, params, sampler = _family_sampler(preset)
  steps = STEPS
  want, scores = reference_greedy(config, params, PROMPTS, steps)
  got = sampler.sample(params, PROMPTS, sampling.SamplingParams(steps, 0.0), jax.random.key(0))
  bound = sampler_logit_bound(config, sampler, scores)
  numerics.assert_decodes_match(got.tokens[:, :steps], want, scores, bound, what=preset)
  assert (got.lengths == steps).all()
  assert (got.stop_reason == sampling.StopReason.LENGTH).all()
  assert len({t for row in want for t in row}) > 10  # outputs are diverse, not one token

  # Several stop ids: each row ends at its first stop id, which is kept as its last token.
  # Against the first run's tokens, exactly: the same compiled decode on the same inputs.
  first = got.tokens.tolist()
  stop_ids = (first[0][3], first[1][5])
  got = sampler.sample(
    params, PROMPTS, sampling.SamplingParams(steps, 0.0, stop_ids=stop_ids), jax.random.key(0)
  )
  for row, tokens, length, reason in zip(first, got.tokens, got.lengths, got.stop_reason):
    hits = [i for i, t in enumerate(row) if t in stop_ids]
    end = hits[0] + 1 if hits else steps
    assert length == end and tokens[:end].tolist() == row[:end]
    assert (tokens[end:] == sampler.pad_id).all()
    assert reason == (sampling.StopReason.STOP_ID if hits else sampling.StopReason.LENGTH)


def test_both_decode_layouts_equal_uncached_argmax():
  """The CPU default (per-layer decode layout) and the accelerators' stacked layout."""
  config, params, default = _family_sampler("tiny-gemma2")
  assert default.decode_layout  # these tests run on CPU devices
  stacked = sampling.Sampler(config, decode_layout=False)
  want, scores = reference_greedy(config, params, PROMPTS, STEPS)
  bound = sampler_logit_bound(config, default, scores)
  sp = sampling.SamplingParams(STEPS, 0.0)
  for name, sampler in (("decode layout", default), ("stacked layout", stacked)):
    got = sampler.sample(params, PROMPTS, sp, jax.random.key(0)).tokens[:, :STEPS]
    numerics.assert_decodes_match(got, want, scores, bound, what=name)


# Chi-square critical value, 9 degrees of freedom (10 bins), alpha = 0.001.
CHI2_CRIT_DF9 = 27.877


def _chi_square(counts, probs, n):
  order = np.argsort(-probs)[:9]
  expected = np.append(probs[order], 1.0 - probs[order].sum()) * n
  observed = np.append(counts[order], n - counts[order].sum())
  assert expected.min() >= 5, expected
  return float(((observed - expected) ** 2 / expected).sum())


@pytest.fixture(scope="module")
def llama():
  """One sampler shared by the distribution tests, so they compile once."""
  config = presets.get_preset("tiny-llama")
  params = decoder.init_params(config, jax.random.key(0))
  logits, _ = decoder.forward(config, params, jnp.asarray([DIST_PROMPT]))
  return config, params, sampling.Sampler(config), np.asarray(logits[0, -1], np.float64)


DIST_PROMPT, DIST_ROWS = [7, 8, 9], 2048


def test_first_token_frequencies_match_softmax(llama):
  config, params, sampler, logits = llama
  temperature = 0.7
  probs = np.asarray(jax.nn.softmax(logits / temperature))
  sp = sampling.SamplingParams(1, temperature)
  out = sampler.sample(params, [DIST_PROMPT], sp, jax.random.key(3), samples_per_prompt=DIST_ROWS)
  counts = np.bincount(out.tokens[:, 0], minlength=config.vocab_size)
  assert _chi_square(counts, probs, DIST_ROWS) < CHI2_CRIT_DF9
  # The same samples against the temperature-1 distribution must fail: the test has power.
  assert _chi_square(counts, np.asarray(jax.nn.softmax(logits)), DIST_ROWS) > CHI2_CRIT_DF9
  # Reported log-probs are log_softmax(logits / T) of the chosen token, the sampler's logits
  # from its cached prefill vs `logits` from an uncached forward.
  bound = numerics.logprob_bound(
    numerics.logit_bound(config, 32, np.abs(logits).max()), np.abs(logits).max(),
    config.vocab_size, temperature,
  )  # fmt: skip
  numerics.assert_close(
    out.logp[:, 0], np.log(probs[out.tokens[:, 0]]), bound, what="sampled token log-probs"
  )


def test_top_k_and_top_p_stay_inside_the_allowed_set(llama):
  _, params, sampler, logits = llama
  temperature = 1.0
  probs = np.asarray(jax.nn.softmax(logits / temperature))
  order = np.argsort(-probs)
  mass_before = np.cumsum(probs[order]) - probs[order]
  for top_k, top_p in [(5, 1.0), (0, 0.3), (20, 0.6), (1, 1.0)]:
    keep = mass_before < top_p
    keep[0] = True
    if top_k:
      keep &= np.arange(len(order)) < top_k
    allowed = set(order[keep].tolist())
    sp = sampling.SamplingParams(1, temperature, top_k, top_p)
    out = sampler.sample(
      params, [DIST_PROMPT], sp, jax.random.key(top_k), samples_per_prompt=DIST_ROWS
    )
    seen = set(out.tokens[:, 0].tolist())
    assert seen <= allowed, (top_k, top_p, seen - allowed)
    assert len(seen) > 1 or len(allowed) == 1  # the filter is not collapsing to greedy
  # Changing temperature / top-k / top-p reuses the compiled functions.
  assert sampler.decode_fn._cache_size() == 1


@pytest.mark.parametrize(
  "mesh_shape, weight_gather",
  [
    ((2, 2, 2), "per_call"),
    ((2, 2, 2), "per_step"),
    pytest.param((1, 8, 1), "per_call", marks=pytest.mark.slow),
  ],
)
def test_sharded_greedy_equals_single_device(mesh_shape, weight_gather):
  config, params, single = _family_sampler("tiny-gemma2")
  prompts = PROMPTS  # 8 rows: one per batch shard at fsdp=8
  sp = sampling.SamplingParams(STEPS, 0.0)
  want = single.sample(params, prompts, sp, jax.random.key(0))
  mesh = mesh_lib.make_mesh(mesh_shape)
  sharded = jax.device_put(params, model_sharding.param_shardings(config, mesh))
  sampler = sampling.Sampler(config, mesh=mesh, weight_gather=weight_gather)
  got = sampler.sample(sharded, prompts, sp, jax.random.key(0))
  assert (got.tokens[:, STEPS:] == want.tokens[:, STEPS:]).all()  # padding past the steps
  want, got = want.tokens[:, :STEPS], got.tokens[:, :STEPS]
  scores = reference_scores(config, params, prompts, want, 1.0)
  bound = sampler_logit_bound(config, single, scores)
  numerics.assert_decodes_match(got, want, scores, bound, what="sharded greedy")
  # Stochastic sampling too: per-row keys make draws independent of the layout. Near ties are
  # judged on the draw's inverse-CDF scores, whose reproduction the first check confirms.
  sp = sampling.SamplingParams(STEPS, 1.0)
  want = single.sample(params, prompts, sp, jax.random.key(1)).tokens[:, :STEPS]
  got = sampler.sample(sharded, prompts, sp, jax.random.key(1)).tokens[:, :STEPS]
  scores = reference_scores(config, params, prompts, want, 1.0, jax.random.key(1))
  numerics.assert_argmax_matches(want, scores, bound, what="single-device samples")
  numerics.assert_decodes_match(got, want, scores, bound, what="sharded samples")


def test_bad_input_fails_before_compiling():
  config = presets.get_preset("tiny-llama")
  params = None  # never reached: every check runs before the parameters are touched
  sampler = sampling.Sampler(config, prompt_buckets=(16, 32))
  key = jax.random.key(0)
  ok = sampling.SamplingParams(4, 1.0)
  cases = [
    ([[1, 2], []], ok, r"prompts\[1\] is empty"),
    ([], ok, "empty batch"),
    ([list(range(1, 40))], ok, "prompt length 39 exceeds the largest bucket 32"),
    ([[1, 2, 400]], ok, r"token id 400 outside \[0, 320\)"),
    ([[1, 2]], sampling.SamplingParams(4, 1.0, stop_ids=(3, 320)), "stop id 320 is outside"),
    ([[1, 2]], sampling.SamplingParams(4, 1.0, top_p=0.0), r"top_p must be in \(0, 1\]"),
    ([[1, 2]], sampling.SamplingParams(4, 1.0, top_p=1.5), r"top_p must be in \(0, 1\]"),
    ([[1, 2]], sampling.SamplingParams(4, -0.5), "temperature must be >= 0"),
    ([[1, 2]], sampling.SamplingParams(4, 1.0, top_k=-1), "top_k must be"),
    ([[1, 2]], sampling.SamplingParams(0, 1.0), "max_new_tokens must be a positive int"),
    ([[1, 2]], sampling.SamplingParams(5000, 1.0), "max_new_tokens length 5000 exceeds"),
  ]
  for prompts, sp, match in cases:
    with pytest.raises(ValueError, match=match):
      sampler.sample(params, prompts, sp, key)
  for fn in sampler.jitted_functions().values():
    assert fn._cache_size() == 0


def _converts_in_loops(jaxpr, inside=False):
  """Shapes converted float32 -> bfloat16 inside any while loop of a (closed) jaxpr."""
  out = []
  for eqn in jaxpr.eqns:
    if inside and eqn.primitive.name == "convert_element_type":
      aval = eqn.invars[0].aval
      if aval.dtype == jnp.float32 and eqn.params["new_dtype"] == jnp.bfloat16:
        out.append(tuple(aval.shape))
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else [value]:
        sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
        if hasattr(sub, "eqns"):
          out += _converts_in_loops(sub, inside or eqn.primitive.name == "while")
  return out


@pytest.mark.parametrize("decode_layout", [False, True])
def test_decode_loop_casts_float32_weights_once_per_call(decode_layout):
  """float32 master weights with bfloat16 compute (the paper configs): the decode program casts
  the weights before its loop. Cast at each use inside the loop, they were converted every step
  (an H200 compile showed each step reading float32 and writing bfloat16 copies of all of them)."""
  cfg = presets.get_preset("tiny-gemma", dtype="bfloat16", param_dtype="float32")
  params = diverse_params(cfg)
  weights = set()
  for x in jax.tree.leaves(params):
    weights |= {tuple(x.shape), tuple(x.shape[1:])}  # stacked, and one layer's slice
  sampler = sampling.Sampler(
    cfg, prompt_buckets=(16,), gen_buckets=(8,), decode_layout=decode_layout
  )
  state = sampler.start(params, PROMPTS[:3], extra_slots=8)
  sp = sampling.SamplingParams(max_new_tokens=8, temperature=1.0)
  fn, args = sampler.decode_call(params, state, sp, jax.random.key(0))
  in_loop = _converts_in_loops(fn.trace(*args).jaxpr.jaxpr)
  assert in_loop, "the loop converts no activations at all: the check sees nothing"
  assert not [s for s in in_loop if s in weights], f"weights cast inside the decode loop: {in_loop}"


@pytest.mark.parametrize("decode_layout", [False, True])
def test_fsdp_weights_are_gathered_once_per_call_not_in_every_step(decode_layout):
  """On an FSDP mesh of one process (8 CPU devices here; one 8-GPU node), "per_call" gathers
  the weights before the decode loop, "per_step" leaves the gathers to the loop's steps."""
  cfg = presets.get_preset("tiny-gemma")
  mesh = mesh_lib.make_mesh((1, 8, 1))
  params = jax.device_put(diverse_params(cfg), model_sharding.param_shardings(cfg, mesh))
  in_loops = {}
  for gather in sampling.programs.WEIGHT_GATHERS:
    sampler = sampling.Sampler(
      cfg,
      mesh=mesh,
      prompt_buckets=(16,),
      gen_buckets=(8,),
      decode_layout=decode_layout,
      weight_gather=gather,
    )
    state = sampler.start(params, PROMPTS, extra_slots=8)
    fn, args = sampler.decode_call(
      params, state, sampling.SamplingParams(8, 1.0), jax.random.key(0)
    )
    with sampler.context():
      text = fn.lower(*args).compile().as_text()
    assert analysis.count_collectives(text).get("all-gather", 0) > 0, gather  # sharded weights
    in_loops[gather] = analysis.count_collectives(text, in_loops=True).get("all-gather", 0)
  assert in_loops["per_call"] == 0 and in_loops["per_step"] > 0, in_loops


def test_unknown_weight_gather_is_refused():
  with pytest.raises(ValueError, match="weight_gather must be one of"):
    sampling.Sampler(presets.get_preset("tiny-gemma"), weight_gather="sometimes")


def test_gathered_specs_drop_only_the_fsdp_axis():
  cfg = presets.get_preset("tiny-gemma")
  mesh = mesh_lib.make_mesh((1, 4, 2))
  is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)
  gathered = jax.tree.leaves(
    sampling.programs.fsdp_gathered_specs(cfg, decoder.abstract_params(cfg), mesh), is_leaf=is_spec
  )
  placed = [s.spec for s in jax.tree.leaves(model_sharding.param_shardings(cfg, mesh))]
  assert any("fsdp" in str(s) for s in placed) and any("tensor" in str(s) for s in placed)
  for got, was in zip(gathered, placed, strict=True):
    want = [None if entry == "fsdp" else entry for entry in was]
    assert list(got) + [None] * (len(want) - len(got)) == want, (got, was)
