"""SCoRe's metrics and collapse diagnostics, host-side NumPy only.

- `self_correction_metrics`: the paper's Accuracy@t1, Accuracy@t2, Delta(t1,t2), Delta_i->c and
  Delta_c->i (Section 3 / Table 1), generalised to K attempts.
- `edit_distance_ratio` / `answer_change_rate`: the collapse diagnostics of Figure 5 (how much a
  second attempt differs from the first, in text and in final answer).
- rollout statistics (lengths, truncation, per-turn KL/entropy means, tokens/s) and `PhaseTimer`.

Legend: b batch (episodes), a attempt, t time.
"""

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np


def _check_correct(correct_ba: Any) -> np.ndarray:
  arr = np.asarray(correct_ba)
  if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
    raise ValueError(f"correct_ba must have shape (episodes, attempts), both > 0; got {arr.shape}")
  if arr.dtype != bool:
    if not np.issubdtype(arr.dtype, np.number) or not np.all((arr == 0) | (arr == 1)):
      raise ValueError(f"correct_ba must be boolean or 0/1; got dtype {arr.dtype}")
    arr = arr.astype(bool)
  return arr


def self_correction_metrics(correct_ba: Any) -> dict[str, float]:
  """The paper's self-correction metrics from per-attempt correctness, shape (b, a).

  All fractions are over ALL b problems, so delta(tj,tk) = delta_i->c - delta_c->i holds exactly.
  For K attempts: `acc@t{j}` per attempt and the three deltas between consecutive attempts.
  """
  c = _check_correct(correct_ba)
  out: dict[str, float] = {}
  for j in range(c.shape[1]):
    out[f"acc@t{j + 1}"] = float(c[:, j].mean())
  for j in range(c.shape[1] - 1):
    prev, nxt = c[:, j], c[:, j + 1]
    tag = f"(t{j + 1},t{j + 2})"
    i2c, c2i = float((~prev & nxt).mean()), float((prev & ~nxt).mean())
    out[f"delta{tag}"] = i2c - c2i
    out[f"delta_i->c{tag}"] = i2c
    out[f"delta_c->i{tag}"] = c2i
  return out


def _shared_len(a: Any, b: Any, cut: Callable[[Any, int], Any]) -> int:
  """Longest n with cut(a, n) == cut(b, n), by binary search over C-speed slice compares."""
  lo, hi = 0, min(len(a), len(b))
  while lo < hi:
    mid = (lo + hi + 1) // 2
    if cut(a, mid) == cut(b, mid):
      lo = mid
    else:
      hi = mid - 1
  return lo


def levenshtein(a: str | Sequence[Any], b: str | Sequence[Any]) -> int:
  """Levenshtein distance (unit insert/delete/substitute) by Myers/Hyyrö bit-parallel DP.

  One column of the DP table is two bit-vectors (vertical +1/-1 deltas) held in Python ints, so
  each character of the longer string costs a handful of big-int operations over the shorter
  one: O(len(a) * len(b) / 64) machine words instead of O(len(a) * len(b)) interpreter steps.
  """
  # Trimming the shared prefix/suffix is exact and makes near-copies (the collapse case) cheap.
  start = _shared_len(a, b, lambda s, n: s[:n])
  a, b = a[start:], b[start:]
  end = _shared_len(a, b, lambda s, n: s[len(s) - n :])
  a, b = a[: len(a) - end], b[: len(b) - end]
  if len(a) < len(b):
    a, b = b, a
  m = len(b)
  if m == 0:
    return len(a)
  peq: dict[Any, int] = {}
  for i, ch in enumerate(b):
    peq[ch] = peq.get(ch, 0) | (1 << i)
  full = (1 << m) - 1
  top = 1 << (m - 1)
  pv, mv, score = full, 0, m
  for ch in a:
    eq = peq.get(ch, 0)
    xv = eq | mv
    xh = (((eq & pv) + pv) ^ pv) | eq
    ph = (mv | ~(xh | pv)) & full
    mh = pv & xh
    if ph & top:
      score += 1
    elif mh & top:
      score -= 1
    # The carried-in 1 is the first row of the global DP (D[0][j] = j).
    ph = (ph << 1) | 1
    mh <<= 1
    pv = (mh | ~(xv | ph)) & full
    mv = ph & xv
  return score


def edit_distance_ratio(a: str, b: str) -> float:
  """Levenshtein distance over characters divided by len(a) + len(b) (0 = same, 1 = disjoint).

  Characters rather than tokens: the ratio then does not depend on the tokenizer, so numbers
  compare across models (the paper's Figure 5a). Two empty strings give 0.
  """
  total = len(a) + len(b)
  return levenshtein(a, b) / total if total else 0.0


def edit_distance_ratios(first: Sequence[str], second: Sequence[str]) -> np.ndarray:
  """`edit_distance_ratio` of each pair (attempt 1, attempt 2), shape (b,)."""
  if len(first) != len(second):
    raise ValueError(f"edit_distance_ratios: {len(first)} first vs {len(second)} second attempts")
  return np.array([edit_distance_ratio(x, y) for x, y in zip(first, second)], dtype=np.float64)


def _same_text(x: str | None, y: str | None) -> bool:
  return (x is None and y is None) or (x is not None and y is not None and x.strip() == y.strip())


def answer_change_rate(
  answers_1: Sequence[str | None],
  answers_2: Sequence[str | None],
  equivalent: Callable[[str | None, str | None], bool] = _same_text,
) -> float:
  """Fraction of episodes whose attempt-2 final answer differs from attempt 1's (Figure 5b).

  `None` stands for "no final answer extracted"; the default equivalence compares stripped text
  and treats two missing answers as the same. Pass the math checker for semantic equivalence.
  """
  if len(answers_1) != len(answers_2):
    raise ValueError(f"answer_change_rate: {len(answers_1)} vs {len(answers_2)} answers")
  if not answers_1:
    raise ValueError("answer_change_rate: no episodes")
  changed = sum(not equivalent(x, y) for x, y in zip(answers_1, answers_2))
  return changed / len(answers_1)


def length_stats(lengths_b: Any, max_length: int, prefix: str = "len") -> dict[str, float]:
  """Mean/min/max response length and the truncation rate (length reached `max_length`).

  A response that hit the limit without its stop token is cut: the truncation rate is the
  fraction of those, so pass lengths that include the stop token when one was sampled.
  """
  arr = np.asarray(lengths_b)
  if arr.ndim != 1 or arr.size == 0:
    raise ValueError(f"{prefix}: lengths must be a non-empty 1-D array; got shape {arr.shape}")
  if np.any(arr < 0) or np.any(arr > max_length):
    raise ValueError(
      f"{prefix}: lengths must lie in [0, {max_length}]; got {arr.min()}..{arr.max()}"
    )
  return {
    f"{prefix}/mean": float(arr.mean()),
    f"{prefix}/min": float(arr.min()),
    f"{prefix}/max": float(arr.max()),
    f"{prefix}/truncation_rate": float((arr >= max_length).mean()),
  }


def per_turn_means(
  values_bt: Any, turn_bt: Any, mask_bt: Any, name: str, num_turns: int = 2
) -> dict[str, float]:
  """Token-mean of `values_bt` (e.g. KL, entropy) over mask & turn == k, for k = 1..num_turns.

  A turn with no tokens in the batch gives NaN (logged as such, never a misleading 0).
  """
  v, turn, mask = np.asarray(values_bt), np.asarray(turn_bt), np.asarray(mask_bt).astype(bool)
  if not (v.shape == turn.shape == mask.shape):
    raise ValueError(
      f"{name}: values {v.shape}, turn {turn.shape} and mask {mask.shape} must share one shape"
    )
  out = {}
  for k in range(1, num_turns + 1):
    sel = mask & (turn == k)
    n = int(sel.sum())
    out[f"{name}/turn{k}"] = float(v[sel].sum() / n) if n else float("nan")
  return out


def tokens_per_second(num_tokens: int, seconds: float) -> float:
  """Throughput; `seconds` must be positive."""
  if seconds <= 0:
    raise ValueError(f"tokens_per_second: seconds must be > 0; got {seconds}")
  return num_tokens / seconds


class PhaseTimer:
  """Wall time per phase of a step: `with timer("sampling"): ...`, then `timer.summary()`.

  JAX dispatches asynchronously: block on a phase's results (`jax.block_until_ready`) inside its
  `with` block, otherwise its time is charged to whichever phase next waits on the device.
  """

  def __init__(self):
    self.seconds: dict[str, float] = {}
    self.start = time.perf_counter()  # the step's wall clock: what the phases leave is host time

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  @contextlib.contextmanager
  def __call__(self, phase: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
      yield
    finally:
      self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

  def summary(self, prefix: str = "time") -> dict[str, float]:
    """`{prefix}/{phase}_s` seconds and `{prefix}/{phase}_frac` share of the timed total."""
    total = sum(self.seconds.values())
    out = {}
    for phase, sec in self.seconds.items():
      out[f"{prefix}/{phase}_s"] = sec
      out[f"{prefix}/{phase}_frac"] = sec / total if total > 0 else 0.0
    return out

  def reset(self) -> None:
    """Forgets all phases (call once per step)."""
    self.seconds.clear()


def correction_rate(correct_ba: Any) -> float:
  """Fraction of incorrect first attempts that the second attempt fixes: i->c / (1 - acc@t1).

  NaN when every first attempt is correct: there is nothing to fix, and 0 would read as failure.
  """
  c = _check_correct(correct_ba)
  if c.shape[1] < 2:
    raise ValueError(f"correction_rate needs >= 2 attempts; got shape {c.shape}")
  wrong = ~c[:, 0]
  return float((wrong & c[:, 1]).sum() / wrong.sum()) if wrong.any() else float("nan")


def per_level_metrics(correct_ba: Any, levels: Sequence[Any]) -> dict[str, dict[str, float]]:
  """`self_correction_metrics` (+ num_examples) of each difficulty level (MATH Figure 7).

  Keys are str(level) in ascending order; a problem without a level (None) counts as 'unknown'.
  """
  c = _check_correct(correct_ba)
  if len(levels) != c.shape[0]:
    raise ValueError(f"per_level_metrics: {len(levels)} levels for {c.shape[0]} problems")
  names = np.array(["unknown" if x is None else str(x) for x in levels])
  order = sorted(set(names), key=lambda s: (s == "unknown", len(s), s))  # 2 before 10
  out = {}
  for name in order:
    rows = c[names == name]
    out[name] = {**self_correction_metrics(rows), "num_examples": float(len(rows))}
  return out


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k of n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

  Chen et al. (2021)'s product form: the binomials overflow floats for n in the hundreds.
  """
  if not (0 <= c <= n and 1 <= k <= n):
    raise ValueError(f"pass_at_k: need 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
  if n - c < k:
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def vote_groups(
  answers: Sequence[str | None], equal: Callable[[str | None, str | None], bool]
) -> np.ndarray:
  """Group id of each answer (-1 for None): an answer joins the first earlier group whose first
  answer it equals, so a prefix of the samples is grouped exactly as the prefix alone would be.
  Answers equal after stripping share a group without calling `equal` (the math checker is slow).
  """
  reps: list[str] = []
  seen: dict[str, int] = {}
  ids = np.full(len(answers), -1, np.int64)
  for i, a in enumerate(answers):
    if a is None:
      continue
    key = a.strip()
    if key not in seen:
      seen[key] = next((g for g, rep in enumerate(reps) if equal(rep, a)), len(reps))
      if seen[key] == len(reps):
        reps.append(a)
    ids[i] = seen[key]
  return ids


def majority_vote(groups: Any, correct: Any) -> bool:
  """Whether the majority answer is correct (self-consistency). `groups` from `vote_groups`.

  Samples without an answer (-1) do not vote. Ties go to the group sampled first; the vote is
  correct when that group's first sample earned reward 1. No answers at all: incorrect.
  """
  g, ok = np.asarray(groups), np.asarray(correct, bool)
  if g.shape != ok.shape or g.ndim != 1:
    raise ValueError(f"majority_vote: groups {g.shape} and correct {ok.shape} must be [n]")
  voted = g >= 0
  if not voted.any():
    return False
  counts = np.bincount(g[voted])
  # Group ids are numbered in order of first appearance: the lowest id wins a tie.
  winner = int(np.argmax(counts))
  return bool(ok[int(np.argmax(g == winner))])
