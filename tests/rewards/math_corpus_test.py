"""Labelled regression corpus for the MATH checker, scored next to math-verify.

tests/rewards/math_corpus.jsonl holds (gold, pred, label) answer pairs: the facts of public
graders' test suites (each `source` names repo@commit:path) plus our own MATH500-style cases
(`source` "own: ..."). Where a public label conflicts with one of our conventions (module
docstrings of math_reward and math_normalize) the case carries our label and a one-line `reason`.

Both checkers see the same extracted answers: ours through `is_equivalent(pred, gold)`,
math-verify through `verify(parse(f"${gold}$"), parse(f"${pred}$"))` (its LaTeX extraction needs
the delimiters; unwrapped strings score far lower, so the wrapped figure is the fair one).
"""

import collections
import json
import logging
import pathlib
import re
import time

import math_verify

from score_jax.rewards import math_reward

_CORPUS = pathlib.Path(__file__).with_name("math_corpus.jsonl")
_SOURCE_RE = re.compile(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40}:\S+$|^own: .+$")


def _cases() -> list[dict]:
  rows = []
  for n, line in enumerate(_CORPUS.read_text().splitlines(), 1):
    row = json.loads(line)
    assert {"gold", "pred", "label", "source"} <= set(row) <= {*row, "reason"}, f"{_CORPUS}:{n}"
    assert isinstance(row["label"], bool), f"{_CORPUS}:{n}: label must be true/false"
    assert _SOURCE_RE.match(row["source"]), f"{_CORPUS}:{n}: source {row['source']!r}"
    rows.append(row)
  return rows


def _math_verify(gold: str, pred: str) -> bool:
  try:
    return bool(math_verify.verify(math_verify.parse(f"${gold}$"), math_verify.parse(f"${pred}$")))
  except Exception:  # a parse or comparison math-verify cannot make counts as "not equivalent"
    return False


def _figures(cases: list[dict], said: list[bool]) -> dict:
  fp = sum(s and not c["label"] for c, s in zip(cases, said))
  fn = sum(c["label"] and not s for c, s in zip(cases, said))
  return {"accuracy": 1 - (fp + fn) / len(cases), "fp": fp, "fn": fn}


def test_corpus_is_large_sourced_and_unique():
  cases = _cases()
  assert len(cases) >= 400
  assert len({(c["gold"], c["pred"]) for c in cases}) == len(cases), "duplicate (gold, pred)"
  by_source = collections.Counter(c["source"].split("@")[0].split(":")[0] for c in cases)
  assert len(by_source) >= 4, by_source  # several public suites besides our own cases


def test_ours_beats_math_verify_with_no_false_positive():
  cases = _cases()
  start = time.perf_counter()
  ours = [math_reward.is_equivalent(c["pred"], c["gold"]) for c in cases]
  ours_s = time.perf_counter() - start
  logging.disable(logging.WARNING)  # math-verify logs every parse failure
  try:
    start = time.perf_counter()
    theirs = [_math_verify(c["gold"], c["pred"]) for c in cases]
    theirs_s = time.perf_counter() - start
  finally:
    logging.disable(logging.NOTSET)
  mine, mv = _figures(cases, ours), _figures(cases, theirs)
  sources = collections.Counter(c["source"].split("@")[0] for c in cases)
  print(f"\ncorpus: {len(cases)} cases, {sum(not c['label'] for c in cases)} non-equivalent")
  for name, n in sources.most_common():
    print(f"  {n:4d} {name}")
  for name, f, s in (("ours", mine, ours_s), ("math-verify", mv, theirs_s)):
    print(f"{name:12s} accuracy {f['accuracy']:.3f}  FP {f['fp']:2d}  FN {f['fn']:2d}  ({s:.1f}s)")
  for c, o in zip(cases, ours):
    if o != c["label"]:
      print(f"  ours {'FP' if o else 'FN'}: gold {c['gold']!r} pred {c['pred']!r}")
  false_pos = [c for c, o in zip(cases, ours) if o and not c["label"]]
  assert not false_pos, "\n".join(map(str, false_pos))
  assert mine["accuracy"] >= mv["accuracy"], (mine, mv)
