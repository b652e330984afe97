"""Float32 rounding-error bounds for the tests' numerical comparisons, and the asserts using them.

Owns the one error model every approximate comparison in the suite derives its tolerance from,
so that no tolerance is fitted to one CPU's summation order. A helper module, not a test module.

The model (forward error analysis, Higham, "Accuracy and Stability of Numerical Algorithms",
2nd ed., ch. 3). With unit roundoff u = 2^-24, a float32 reduction of n terms (dot product,
sum, mean) computed in ANY order, blocking or FMA use satisfies

    |computed - exact| <= gamma(n) * sum_i |a_i b_i|,   gamma(n) = n u / (1 - n u),

so the bound holds on every CPU, not only on the one a test was written on. A chained
computation (a transformer's layers) is a list of such reductions, its `levels`: to first
order each level adds gamma(n_level) relative error and passes earlier ones on with gain ~1
(every layer re-normalises its residual stream, and relative errors survive a norm), so

    |actual - expected| <= sides * sum_levels gamma(n) * magnitude.

Gain ~1 is the model's one leap: a softmax turns a relative error of its scores into an
absolute one of its weights. The worst-case n (where rounding errors typically grow as sqrt(n))
leaves room for it, and the CI rerun under another summation order checks it: measured errors
stay below a tenth of the bound (BUILD_NOTES).

`sides` is 2 when both values are float32 computations of the same math (cache vs full,
sharded vs single device), 1 against an exact (float64 or hand) value. `magnitude` stands in
for sum |a_i b_i| of the last level; by default the largest |expected| among the compared
entries: for random-sign operands that sum is ~sqrt(n) times a typical output, about the
largest output. Elementwise exp/log/tanh/rsqrt count as a level of ELEMENTARY terms.

The bound must also fail a real bug: tests with a deliberately wrong input (a packed row
without segment ids, a changed token in a window) assert its error exceeds the same bound
(`assert_exceeds`). Where the worst case is too loose to say anything (a real 30-layer model:
~2e-2 of the largest logit) a test uses `model="probabilistic"` (Higham & Mary, SIAM J. Sci.
Comput. 2019): lambda * u * sqrt(sum n) with lambda = 8, violated with probability < 1e-13 per
entry if rounding errors are independent and mean zero. Token comparisons allow a
disagreement only at a near tie (scores within 2 x the bound), and stop comparing a decode there.
Adam steps get their own elementwise bound (`adam_step_bound`).

SCORE_NUMERICS_LOG=path appends one JSON line per check (max error, bound, test id): BUILD_NOTES'
table of measured errors under the default and the perturbed summation order comes from it.
"""

import json
import math
import os
from collections.abc import Sequence

import jax
import numpy as np

U32 = 2.0**-24  # float32 unit roundoff (round to nearest)
U_BF16 = 2.0**-8
# Level length charged to one exp/log/tanh/rsqrt/expm1: XLA CPU's approximations measured at
# <= 6 ulp (tanh, expm1) on AVX-512 and SSE4.2 code, jax 0.10.2.
ELEMENTARY = 8
LAMBDA = 8.0  # probabilistic model: P(violation) <= 2 exp(-LAMBDA^2 / 2) ~ 1e-14 per entry


def gamma(n: int, u: float = U32) -> float:
  """Worst-case relative error of an n-term float32 reduction in any order."""
  if n * u >= 1:
    raise ValueError(f"gamma({n}) is unbounded at u={u}: n * u >= 1")
  return n * u / (1 - n * u)


def relative_bound(
  levels: Sequence[int], *, sides: int = 2, u: float = U32, model: str = "worst"
) -> float:
  """Bound on |actual - expected| / magnitude for a computation with these reduction levels."""
  if model == "worst":
    return sides * sum(gamma(n, u) for n in levels)
  if model == "probabilistic":
    return sides * LAMBDA * u * math.sqrt(sum(levels))
  raise ValueError(f"model={model!r}: 'worst' or 'probabilistic'")


def decoder_levels(config, seq_len: int) -> list[int]:
  """Reduction lengths on the critical path of one decoder forward, embedding to logits.

  seq_len: the most keys one query attends (the cache length for cached calls).
  """
  d, f, e = config.embed_dim, config.hidden_dim, ELEMENTARY
  norm = d + e  # mean of squares, then rsqrt
  layer = [norm, d]  # pre-attention norm, q/k/v projections
  layer += [config.head_dim + e] if config.qk_norm else []
  layer += [e, config.head_dim]  # RoPE cos/sin, scores q.k
  layer += [e] if config.attn_logit_softcap else []
  layer += [seq_len + e, seq_len, config.num_heads * config.head_dim]  # softmax, p.v, o_proj
  layer += [norm] if config.use_post_attn_norm else []
  layer += [norm, d, e, f]  # pre-ffw norm, gate/up, activation, down
  layer += [norm] if config.use_post_ffw_norm else []
  return layer * config.num_layers + [norm, d] + ([e] if config.final_logit_softcap else [])


def logit_bound(config, seq_len: int, magnitude: float, *, sides: int = 2, **kw) -> float:
  """Bound on the logit difference of two float32 forwards of the same model and tokens."""
  return relative_bound(decoder_levels(config, seq_len), sides=sides, **kw) * magnitude


def logprob_bound(logit_err: float, logit_magnitude: float, vocab: int, temperature=1.0) -> float:
  """Bound on log_softmax(z / T)[y] differences given |dz| <= logit_err on every logit.

  log p = z_y / T - logsumexp(z / T): dz moves each term by <= logit_err / T; both sides'
  logsumexp (a V-term sum of exps, then a log) adds rounding relative to |z| / T and 1.
  """
  t = temperature if temperature > 0 else 1.0
  scale = 1.0 + 2.0 * logit_magnitude / t
  return 2.0 * logit_err / t + 2.0 * gamma(vocab + 2 * ELEMENTARY) * scale


def loss_levels(config, seq_len: int, tokens: int) -> list[int]:
  """A token-mean loss: forward, log-softmax over the vocabulary, sum over `tokens`."""
  return decoder_levels(config, seq_len) + [config.vocab_size + 2 * ELEMENTARY, tokens]


def gradient_levels(config, seq_len: int, tokens: int) -> list[int]:
  """Gradient of that loss: forward, its mirror image backwards, then the sum over tokens."""
  forward = loss_levels(config, seq_len, tokens)[:-1]
  return forward + forward[::-1] + [tokens]


def _log(record: dict) -> None:
  path = os.environ.get("SCORE_NUMERICS_LOG")
  if path:
    record["test"] = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    with open(path, "a") as f:
      f.write(json.dumps(record, default=float) + "\n")


def _select(actual, expected, where):
  a = np.asarray(actual, np.float64)
  e = np.broadcast_to(np.asarray(expected, np.float64), a.shape)
  if where is None:
    return a, e, np.ones(a.shape, bool)
  where = np.asarray(where, bool)  # a leading-axes mask ([b, t] of [b, t, v]) covers the rest
  where = where.reshape(where.shape + (1,) * (a.ndim - where.ndim))
  return a, e, np.broadcast_to(where, a.shape)


def assert_close(actual, expected, bound, *, what: str, where=None, note: str = "") -> float:
  """Asserts |actual - expected| <= bound (a scalar or elementwise array) on `where`.

  Returns the largest error. The failure message names the worst entry and the bound's terms.
  """
  a, e, sel = _select(actual, expected, where)
  bound_arr = np.broadcast_to(np.asarray(bound, np.float64), a.shape)
  err = np.where(sel, np.abs(a - e), 0.0)
  over = sel & ~(err <= bound_arr)  # NaN counts as over
  max_err = float(err.max()) if err.size else 0.0
  ratio = float((err / np.maximum(bound_arr, 1e-300))[sel].max()) if sel.any() else 0.0
  _log({"what": what, "max_err": max_err, "bound": float(bound_arr[sel].max(initial=0.0)),
        "ratio": ratio, "n": int(sel.sum())})  # fmt: skip
  if over.any():
    idx = np.unravel_index(
      np.argmax(np.where(over, err / np.maximum(bound_arr, 1e-300), -1)), a.shape
    )
    raise AssertionError(
      f"{what}: {int(over.sum())} of {int(sel.sum())} entries exceed the float32 error bound;"
      f" worst at index {tuple(int(i) for i in idx)}: actual {a[idx]!r}, expected {e[idx]!r},"
      f" |diff| {err[idx]:.3e} > bound {bound_arr[idx]:.3e} (max |diff| {max_err:.3e}). {note}"
    )
  return max_err


def assert_close_f32(
  actual,
  expected,
  *,
  levels: Sequence[int],
  what: str,
  magnitude=None,
  sides: int = 2,
  where=None,
  u: float = U32,
  model: str = "worst",
) -> float:
  """assert_close with bound = relative_bound(levels, sides) * magnitude (see module doc).

  magnitude: a scalar (default: the largest |expected| compared), or |expected| itself for
  elementwise computations, whose error is relative to each entry.
  """
  _, e, sel = _select(actual, expected, where)
  if magnitude is None:
    magnitude = float(np.abs(e[sel]).max(initial=0.0))
  rel = relative_bound(levels, sides=sides, u=u, model=model)
  mag = np.asarray(magnitude, np.float64)
  note = (
    f"Bound = {rel:.3e} ({model}: {sides} side(s) x {len(levels)} levels, longest"
    f" {max(levels, default=0)}) x magnitude {mag.max(initial=0.0):.3e}"
    f"{' (elementwise)' if mag.ndim else ''}."
  )
  return assert_close(actual, expected, rel * magnitude, what=what, where=where, note=note)


def assert_exceeds(actual, expected, bound: float, *, what: str, where=None) -> float:
  """The check has power: this (deliberately wrong) value differs by more than the bound."""
  a, e, sel = _select(actual, expected, where)
  max_err = float(np.abs(a - e)[sel].max())
  assert max_err > bound, f"{what}: max |diff| {max_err:.3e} is within the bound {bound:.3e}"
  return max_err


def _gap(scores_v, a: int, b: int) -> float:
  return abs(float(scores_v[a]) - float(scores_v[b]))


def assert_argmax_matches(tokens, scores, bound: float, *, what: str, where=None) -> int:
  """tokens[...] = argmax(scores[..., :]) wherever the top choice is not a near tie.

  `scores` come from a computation within `bound` (per entry) of the one that picked the
  tokens; each token had the top score there, so it may differ from argmax(scores) only if
  the two candidates' scores are within 2 * bound. Returns the number of near-tie flips.
  """
  tokens, scores = np.asarray(tokens), np.asarray(scores)
  best = scores.argmax(-1)
  sel = np.ones(tokens.shape, bool) if where is None else np.asarray(where, bool)
  flips = 0
  for idx in zip(*np.nonzero(sel & (tokens != best))):
    gap = _gap(scores[idx], tokens[idx], best[idx])
    assert gap <= 2 * bound, (
      f"{what}: at {tuple(int(i) for i in idx)} token {tokens[idx]} != argmax {best[idx]}, score"
      f" gap {gap:.3e} > 2 x float32 bound {bound:.3e}: not a rounding near tie"
    )
    flips += 1
  _log({"what": what, "near_tie_flips": flips, "bound": bound, "n": int(sel.sum())})
  return flips


def assert_decodes_match(got_bg, want_bg, scores_bgv, bound: float, *, what: str) -> int:
  """Two decodes of the same rows agree token by token up to a near tie.

  scores_bgv: a reference computation's scores (logits / T, plus the sampler's noise) on the
  `want` stream, within `bound` of both decodes' own. A row may first differ only where the
  two tokens' reference scores are within 2 * bound; after that the streams differ and the
  rest of the row is not compared. Returns the number of rows that diverged.
  """
  got_bg, want_bg, scores_bgv = np.asarray(got_bg), np.asarray(want_bg), np.asarray(scores_bgv)
  diverged = 0
  for r in range(got_bg.shape[0]):
    differ = np.flatnonzero(got_bg[r] != want_bg[r])
    if differ.size == 0:
      continue
    j = differ[0]
    gap = _gap(scores_bgv[r, j], got_bg[r, j], want_bg[r, j])
    assert gap <= 2 * bound, (
      f"{what}: row {r} step {j}: token {got_bg[r, j]} vs {want_bg[r, j]}, reference score gap"
      f" {gap:.3e} > 2 x float32 bound {bound:.3e}: not a rounding near tie"
    )
    diverged += 1
  _log({"what": what, "diverged_rows": diverged, "bound": bound, "n": int(got_bg.shape[0])})
  return diverged


def adam_step_bound(g, dg, mu, nu, count: int, lr: float, *, b1, b2, eps, dmu=0.0, dnu=0.0):
  """Elementwise bound on how far one Adam step can move a parameter when its gradient is
  known only to within `dg` (and the incoming moments mu, nu to within dmu, dnu).

  Interval arithmetic on optax.scale_by_adam: m = b1 mu + (1 - b1) g, v = b2 nu + (1 - b2) g^2,
  r = m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps), step = lr * r, over g' in [g - dg, g + dg].
  Where |g| >> dg the step is stable (~ lr * eps * dg / g^2); where |g| ~ dg the sign of the
  step is undetermined and the bound is ~ 2 lr: Adam's normalisation amplifies rounding there,
  which no tolerance on the parameters alone could separate from a bug (compare the moments).
  Returns (param_bound, mu_bound, nu_bound) after the step, for chaining steps.
  """
  g, dg, mu, nu = (np.asarray(x, np.float64) for x in (g, dg, mu, nu))
  c1, c2 = 1.0 - b1**count, 1.0 - b2**count
  m = b1 * mu + (1 - b1) * g
  m_lo, m_hi = m - (b1 * dmu + (1 - b1) * dg), m + (b1 * dmu + (1 - b1) * dg)
  g2_lo = np.where(np.abs(g) <= dg, 0.0, (np.abs(g) - dg) ** 2)
  g2_hi = (np.abs(g) + dg) ** 2
  v = b2 * nu + (1 - b2) * g**2
  v_lo = np.maximum(0.0, b2 * (nu - dnu) + (1 - b2) * g2_lo)
  v_hi = b2 * (nu + dnu) + (1 - b2) * g2_hi
  den, den_lo, den_hi = (np.sqrt(x / c2) + eps for x in (v, v_lo, v_hi))
  r = m / c1 / den
  r_hi = np.where(m_hi >= 0, m_hi / c1 / den_lo, m_hi / c1 / den_hi)
  r_lo = np.where(m_lo >= 0, m_lo / c1 / den_hi, m_lo / c1 / den_lo)
  # The interval ignores that m and v come from the same gradients; Cauchy-Schwarz on those
  # histories caps any Adam step: |m_hat| / sqrt(v_hat) <= r_max (1 at the first step).
  k = np.arange(count)
  r_max = (
    math.sqrt(c2)
    / c1
    * math.sqrt(float(((1 - b1) ** 2 * b1 ** (2 * k) / ((1 - b2) * b2**k)).sum()))
  )
  dr = np.minimum(np.maximum(r_hi - r, r - r_lo), np.abs(r) + r_max)
  dr = dr + 2 * 10 * U32 * np.abs(r)  # plus the optimizer's own ~10 float32 operations per side
  return lr * dr, m_hi - m, v_hi - v


def assert_adam_step_close(new, before, after, *, lr: float, grad_rel: float, cfg, what: str):
  """One optimizer step from the same TrainState `before`: `new` vs the reference `after`.

  Both took score_jax.rl.optim's chain (clip, Adam, [decay], lr) with gradients that agree to
  `grad_rel` x the largest |g| of each leaf (e.g. relative_bound(gradient_levels(...))). The
  moments are linear/quadratic in the gradient and are compared tightly: that is where a wrong
  gradient shows. The parameters get adam_step_bound's elementwise amplification.
  """
  adam0, adam1, adam_new = before.opt_state[1], after.opt_state[1], new.opt_state[1]
  t = int(adam1.count)
  leaves = lambda tree: [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]
  names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(after.params)]
  n_params = sum(x.size for x in leaves(after.params))
  g_all = [(m1 - cfg.b1 * m0) / (1 - cfg.b1) for m0, m1 in zip(leaves(adam0.mu), leaves(adam1.mu))]
  # Clipping scales every gradient by max_norm / |g| (a reduction over all parameters) when it
  # binds on either side; it may bind on one side only if |g| is within rounding of max_norm.
  norm = math.sqrt(sum(float((g**2).sum()) for g in g_all))
  clip_rel = 0.0
  if cfg.max_grad_norm and norm * (1 + grad_rel) >= cfg.max_grad_norm * (1 - grad_rel):
    clip_rel = grad_rel + 2 * gamma(n_params)
  rows = zip(names, g_all, *(leaves(x) for x in (adam0.mu, adam0.nu, adam1.mu, adam1.nu)))
  news = zip(leaves(new.params), leaves(after.params), leaves(adam_new.mu), leaves(adam_new.nu))
  for (name, g, mu0, nu0, mu1, nu1), (p_new, p_ref, mu_new, nu_new) in zip(rows, news):
    # g is rebuilt from the moments: its own rounding is ~ u |mu0| / (1 - b1) per operation.
    dg = grad_rel * np.abs(g).max(initial=0.0) + clip_rel * np.abs(g)
    dg = dg + 4 * U32 * (np.abs(mu0) * cfg.b1 + np.abs(mu1)) / (1 - cfg.b1)
    p_bound, mu_bound, nu_bound = adam_step_bound(
      g, dg, mu0, nu0, t, lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps
    )
    # Each side also rounds its moment updates (3 ops) and the parameter update (2 ops).
    mu_bound = mu_bound + 2 * 3 * U32 * np.abs(mu1)
    nu_bound = nu_bound + 2 * 3 * U32 * np.abs(nu1)
    p_bound = (
      p_bound + 2 * 2 * U32 * np.abs(p_ref) + 2 * lr * cfg.weight_decay * U32 * np.abs(p_ref)
    )
    assert_close(mu_new, mu1, mu_bound, what=f"{what}: Adam mu {name}")
    assert_close(nu_new, nu1, nu_bound, what=f"{what}: Adam nu {name}")
    assert_close(p_new, p_ref, p_bound, what=f"{what}: params {name}")


def subprocess_xla_flags(devices: int) -> str:
  """XLA_FLAGS for a JAX subprocess: `devices` host devices, the session's summation order."""
  flags = os.environ.get("SCORE_NUMERICS_XLA_FLAGS", "")
  return f"{flags} --xla_force_host_platform_device_count={devices}".strip()
