"""Testbed v2's findings: each pre-registered claim holds on runs built to support it, and fails
on runs built against it (a finding that cannot fail checks nothing)."""

import math
import re
import zlib

import numpy as np
import pytest

from score_jax.testbed import findings, grid_report

SEEDS = [(p, s) for p in range(3) for s in range(3)]
N = 300

# method -> (P(attempt 1 right), P(fix | wrong), P(break | right), P(vote2 / long1 right),
#            P(fixed-first fix), P(change | right) without breaking)
GOOD = {
  "base": (0.45, 0.02, 0.02, 0.46, 0.02, 0.0),
  "score": (0.45, 0.60, 0.02, 0.50, 0.60, 0.0),
  "naive": (0.55, 0.10, 0.02, 0.56, 0.10, 0.0),
  "naive_multiturn_eq1": (0.55, 0.10, 0.02, 0.56, 0.10, 0.0),
  "single_turn": (0.60, 0.02, 0.02, 0.62, 0.02, 0.0),
  "no_stage1": (0.55, 0.15, 0.02, 0.56, 0.15, 0.0),
  "no_shaping": (0.45, 0.30, 0.02, 0.46, 0.30, 0.0),
  "star_plus": (0.45, 0.20, 0.02, 0.46, 0.20, 0.0),
  "pair_sft": (0.45, 0.25, 0.02, 0.46, 0.25, 0.0),
}


def _run(method, pseed, seed, spec, ids_prefix="p"):
  p1, fix, brk, v2, ff, flip = spec
  rng = np.random.default_rng([zlib.crc32(method.encode()), pseed, seed])
  first = rng.random(N) < p1
  second = np.where(first, rng.random(N) >= brk, rng.random(N) < fix)
  # A wrong attempt 2 after a wrong attempt 1 keeps its answer; any change of outcome changes it.
  changed = (first != second) | (first & (rng.random(N) < flip))
  base_first = rng.random(N) < 0.45
  fixed = np.stack([base_first, np.where(base_first, True, rng.random(N) < ff)], 1)
  return {
    "method": method,
    "pretrain_seed": pseed,
    "seed": seed,
    "ids": [f"{ids_prefix}{i}" for i in range(N)],
    "correct": np.stack([first, second], 1).tolist(),
    "changed": changed.tolist(),
    "vote2": (rng.random(N) < v2).tolist(),
    "long1": (rng.random(N) < v2).tolist(),  # one attempt with two attempts' tokens
    "fixed_first": fixed.tolist(),
  }


def _runs(spec, prefix="p"):
  return [_run(m, p, s, v, prefix) for m, v in spec.items() for p, s in SEEDS]


def _by_claim(found):
  return {f["claim"]: f["holds"] for f in found}


def test_sign_flip_p_is_exact():
  assert findings.sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(1 / 8)
  assert findings.sign_flip_p([-1.0, -2.0]) == 1.0
  assert findings.sign_flip_p([1.0, -1.0]) == pytest.approx(3 / 4)  # ties count as extreme
  assert math.isnan(findings.sign_flip_p([]))


def test_compare_pairs_seeds_and_problems():
  runs = _runs({"score": GOOD["score"], "naive": GOOD["naive"]})
  out = findings.compare(runs, "score", "naive", findings.acc(2))
  assert out["n"] == 9 and out["mean"] > 0.1 and out["p"] == pytest.approx(1 / 512)
  assert out["ci"][0] < out["mean"] < out["ci"][1]
  # Only shared seeds are paired: drop one naive run, 8 pairs remain.
  assert findings.compare(runs[:-1], "score", "naive", findings.acc(2))["n"] == 8


def test_every_claim_holds_on_supporting_runs():
  found = findings.findings(_runs(GOOD), held_out=_runs(GOOD, "h"))
  assert all(f["holds"] for f in found), [f for f in found if not f["holds"]]
  assert len(found) == 2 + len(findings.PAIRED_CLAIMS) + 1


def _flipped(method, **changes):
  spec = dict(GOOD)
  names = ("p1", "fix", "brk", "v2", "ff", "flip")
  vals = list(spec[method])
  for k, v in changes.items():
    vals[names.index(k)] = v
  spec[method] = tuple(vals)
  return spec


# Each claim and a change of the runs that must make it fail.
AGAINST = {
  "SCoRe Acc@t2 > naive multi-turn RL Acc@t2 (reward on attempt 2)": _flipped("naive", fix=0.9),
  "SCoRe Acc@t2 > single-turn RL Acc@t2": _flipped("single_turn", p1=0.95),
  "SCoRe Acc@t2 > single-turn RL's majority vote of 2 samples (matched token budget)": _flipped(
    "single_turn", v2=0.95
  ),
  "SCoRe Acc@t2 > single-turn RL's one attempt with two attempts' tokens (matched budget)": (
    _flipped("single_turn", v2=0.95)
  ),
  "SCoRe Acc@t2 > SCoRe w/o Stage I Acc@t2": _flipped("no_stage1", fix=0.9),
  "SCoRe Acc@t2 > STaR Acc@t2": _flipped("star_plus", fix=0.9),
  "SCoRe Acc@t2 > Pair-SFT Acc@t2": _flipped("pair_sft", fix=0.9),
  "SCoRe Delta(t1,t2) > 0": _flipped("score", fix=0.0, brk=0.1),
  # Always changing, right or wrong: correction that does not depend on attempt 1.
  "SCoRe's correction depends on attempt-1 correctness: P(change | wrong) > P(change | right)": (
    _flipped("score", flip=1.0)
  ),
  "SCoRe fixes more of the base model's fixed wrong first attempts than naive multi-turn RL": (
    _flipped("naive", ff=0.9)
  ),
  "No method's mean Acc@t2 reaches 90% (room above the best)": _flipped("score", fix=0.99, p1=0.9),
  "Base model Acc@t1 inside [20%, 70%]": _flipped("base", p1=0.9),
}


@pytest.mark.parametrize("claim", sorted(AGAINST))
def test_each_claim_can_fail(claim):
  found = _by_claim(findings.findings(_runs(AGAINST[claim]), held_out=_runs(GOOD, "h")))
  assert claim in found, sorted(found)
  assert found[claim] is False


def test_matched_budget_claims_read_their_own_rows():
  # Single-turn RL's long attempt alone beats SCoRe: that claim fails, the vote-of-2 one holds.
  runs = _runs(GOOD)
  for r in runs:
    if r["method"] == "single_turn":
      r["long1"] = [True] * N
  found = _by_claim(findings.findings(runs))
  long_claim = (
    "SCoRe Acc@t2 > single-turn RL's one attempt with two attempts' tokens (matched budget)"
  )
  assert found[long_claim] is False
  assert found["SCoRe Acc@t2 > single-turn RL's majority vote of 2 samples (matched token budget)"]


def test_claims_of_methods_not_run_do_not_hold():
  runs = _runs({m: GOOD[m] for m in ("base", "score")})
  found = _by_claim(findings.findings(runs))
  assert found["SCoRe Acc@t2 > naive multi-turn RL Acc@t2 (reward on attempt 2)"] is False
  assert (
    found["Held-out variant: SCoRe Acc@t2 > naive multi-turn RL Acc@t2 (reward on attempt 2)"]
    is False
  )
  assert found["SCoRe Delta(t1,t2) > 0"] is True


def test_too_few_runs_or_no_runs_print_not_tested_and_never_hold():
  # README command 1 has one (base, seed) cell: the exact test's smallest p is 1/2, so no claim
  # can hold; its lines say "not tested", not "does not hold". Five runs can reach p < 0.05.
  one = [r for r in _runs({m: GOOD[m] for m in ("base", "score", "naive")}) if r["seed"] == 0]
  one = [r for r in one if r["pretrain_seed"] == 0]
  found = findings.findings(one)
  delta = next(f for f in found if f["claim"] == "SCoRe Delta(t1,t2) > 0")
  assert (
    delta["holds"] is False and delta["tested"] is False and "needs >= 5 runs" in delta["evidence"]
  )
  eq1 = next(f for f in found if "Eq. 1" in f["claim"])
  assert eq1["tested"] is False and eq1["evidence"].startswith("not run")
  text = findings.findings_text(found)
  assert "- [not tested] SCoRe Delta(t1,t2) > 0" in text and "[HOLDS] SCoRe" not in text
  five = [
    r
    for r in _runs({m: GOOD[m] for m in ("base", "score")})
    if (r["pretrain_seed"], r["seed"]) in SEEDS[:5]
  ]
  delta5 = next(f for f in findings.findings(five) if f["claim"] == "SCoRe Delta(t1,t2) > 0")
  assert delta5["tested"] is True and delta5["holds"] is True
  assert findings.MIN_TESTABLE_RUNS == 5


def test_held_out_claim_fails_on_its_own_runs():
  held = _runs(_flipped("naive", fix=0.9), "h")
  found = _by_claim(findings.findings(_runs(GOOD), held_out=held))
  assert (
    found["Held-out variant: SCoRe Acc@t2 > naive multi-turn RL Acc@t2 (reward on attempt 2)"]
    is False
  )


def test_summary_has_sample_std():
  runs = _runs({"score": GOOD["score"]})
  s = findings.summary(runs, "score", findings.acc(2))
  vals = [findings.acc(2)(r, np.arange(N)) for r in runs]
  assert s["std"] == pytest.approx(np.std(vals, ddof=1))
  assert s["n"] == 9


def test_the_vote_is_read_only_where_it_was_evaluated():
  # The grid evaluates the vote of 2 for testbed.vote_methods and long1 for single-turn RL only.
  voted = ("base", "score", "single_turn")
  runs = _runs(GOOD)
  for r in runs:
    if r["method"] not in voted:
      del r["vote2"]
    if r["method"] != "single_turn":
      del r["long1"]
  found = findings.findings(runs, held_out=_runs(GOOD, "h"))
  assert all(f["holds"] for f in found), [f for f in found if not f["holds"]]
  lines = grid_report.table(runs).splitlines()
  split = lambda line: [c.strip() for c in re.split(r"(?<!\\)\|", line)]  # "\|" is in a cell
  assert len({len(split(line)) for line in lines}) == 1  # every row has the header's columns
  col = split(lines[0]).index("Vote of 2 samples")
  cells = [split(line)[col] for line in lines[2:]]
  methods = list(dict.fromkeys(r["method"] for r in runs))
  assert [c == "-" for c in cells] == [m not in voted for m in methods], cells
