"""The error model of tests/numerics.py: its bounds hold, its asserts fail where they should."""

import numpy as np
import optax
import pytest

from tests import numerics

pytestmark = pytest.mark.numerics


def test_reduction_bound_holds_in_any_summation_order():
  rng = np.random.default_rng(0)
  n = 512
  a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
  exact = float(np.dot(a.astype(np.float64), b.astype(np.float64)))
  bound = numerics.gamma(n) * float(np.abs(a.astype(np.float64) * b).sum())
  errs = []
  for _ in range(50):  # sequential float32 sums in random orders, with and without pairing
    order = rng.permutation(n)
    prods = a[order] * b[order]
    errs.append(abs(float(np.cumsum(prods, dtype=np.float32)[-1]) - exact))
    errs.append(abs(float(prods.reshape(-1, 8).sum(0, dtype=np.float32).sum()) - exact))
  assert 0 < max(errs) <= bound


def test_gamma_and_levels():
  assert numerics.gamma(1) == pytest.approx(numerics.U32)
  with pytest.raises(ValueError, match="unbounded"):
    numerics.gamma(2**24)
  assert numerics.relative_bound([4, 4], sides=1) == pytest.approx(2 * numerics.gamma(4))
  assert numerics.relative_bound([100] * 4, model="probabilistic") == pytest.approx(
    2 * numerics.LAMBDA * numerics.U32 * 20.0
  )


def test_assert_close_reports_the_worst_entry():
  want = np.array([[1.0, 2.0], [3.0, 4.0]])
  numerics.assert_close_f32(want + 1e-7, want, levels=[64], what="small")
  got = want.copy()
  got[1, 0] += 1e-3
  with pytest.raises(AssertionError, match=r"big: 1 of 4 entries .* index \(1, 0\)"):
    numerics.assert_close_f32(got, want, levels=[64], what="big")
  numerics.assert_close_f32(got, want, levels=[64], where=[True, False], what="masked row")
  with pytest.raises(AssertionError, match="within the bound"):
    numerics.assert_exceeds(want + 1e-9, want, 1e-6, what="no power")


def test_token_checks_allow_only_near_ties():
  scores = np.zeros((2, 3, 4))
  scores[:, :, 1] = 1.0
  scores[0, 1, 2] = 1.0 - 1e-6  # a near tie at row 0, step 1
  want = np.ones((2, 3), int)
  got = want.copy()
  got[0, 1:] = [2, 3]  # diverges at the near tie; step 2 is then not compared
  assert numerics.assert_decodes_match(got, want, scores, 1e-5, what="tie") == 1
  got[0, 1] = 3  # gap 1.0: a real disagreement
  with pytest.raises(AssertionError, match="not a rounding near tie"):
    numerics.assert_decodes_match(got, want, scores, 1e-5, what="no tie")
  assert numerics.assert_argmax_matches([[1, 2, 1]], scores[:1], 1e-5, what="argmax") == 1
  with pytest.raises(AssertionError, match="not a rounding near tie"):
    numerics.assert_argmax_matches([[3, 1, 1]], scores[:1], 1e-5, what="argmax")


def test_adam_step_bound_covers_perturbed_gradients():
  rng = np.random.default_rng(1)
  g = rng.standard_normal(2000).astype(np.float32) * np.logspace(-12, 0, 2000).astype(np.float32)
  mu = rng.standard_normal(2000).astype(np.float32) * 1e-3
  nu = (rng.standard_normal(2000).astype(np.float32) * 1e-3) ** 2
  dg = 1e-9 + 1e-4 * np.abs(g)
  count, lr = 3, 1e-3
  bound, _, _ = numerics.adam_step_bound(g, dg, mu, nu, count, lr, b1=0.9, b2=0.999, eps=1e-8)
  adam = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)
  state = optax.ScaleByAdamState(count=np.int32(count - 1), mu=mu, nu=nu)
  step = lambda grad: lr * np.asarray(adam.update(grad, state)[0], np.float64)
  ref = step(g)
  for sign in (-1.0, 1.0, None):
    shift = dg * (rng.uniform(-1, 1, g.shape) if sign is None else sign)
    moved = np.abs(step((g + shift).astype(np.float32)) - ref)
    assert (moved <= bound).all(), float((moved / bound).max())
  # A first step (no history): where |g| < dg (>> eps) the step's sign is open, the bound
  # ~ 2 lr; where |g| >> dg the step is lr * sign(g) whatever the rounding.
  g, dg = np.array([1e-7, 1e-3]), np.array([1e-6, 1e-9])
  first, _, _ = numerics.adam_step_bound(g, dg, 0 * g, 0 * g, 1, lr, b1=0.9, b2=0.999, eps=1e-8)
  assert first[0] > 1.8 * lr and first[1] < 1e-5 * lr
