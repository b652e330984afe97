"""The training sets of the SFT baselines, built from scored two-attempt episodes.

STaR (multi-turn, Zelikman et al. 2022 as the paper runs it): keep the model's own episodes whose
second attempt is correct: incorrect -> correct (D), plus correct -> correct (D+). The kept
stream is trained on its second attempt (the correction), given the problem, the first attempt
and the instruction: the paper's tuples (x, y-, y+) ask for y+ given x and y-.

Pair-SFT (Welleck et al. 2023, one model, as in the paper): pair each incorrect first attempt of
the base model with a correct response to the same problem drawn at random from ALL first- and
second-attempt samples (D); D+ also pairs each correct first attempt with a random correct
response (never itself when another exists). The stream `[x][y-][instruction][y+]` is trained on
y+. Problems without a correct sample give no pair.

Pure host-side numpy: no sampling here (the trainer collects, `trainer.collect`).
Shape letters: b episodes, s stream slots, a attempts.
"""

from collections.abc import Sequence

import numpy as np

from score_jax.rl.experience import Experience

Response = tuple[int, int]  # (episode row, attempt index 0..a-1)


def star_keep(rewards_ba: np.ndarray, plus: bool) -> np.ndarray:
  """[b] bool: the episodes STaR trains on (first attempt wrong or, with `plus`, right; last
  attempt right)."""
  r = np.asarray(rewards_ba) > 0
  if r.ndim != 2 or r.shape[1] < 2:
    raise ValueError(f"star_keep needs [b, a>=2] rewards, got shape {r.shape}")
  first, last = r[:, 0], r[:, -1]
  return last & (~first | plus)


def star_rows(exp: Experience, keep_b: np.ndarray) -> Experience:
  """The kept episodes as SFT rows: loss on the last attempt's sampled tokens only."""
  keep_b = np.asarray(keep_b, bool)
  turn = np.asarray(exp.turn)[keep_b]
  last = int(turn.max(initial=0))
  pick = lambda x: np.asarray(x)[keep_b]
  return Experience(
    tokens=pick(exp.tokens),
    positions=pick(exp.positions),
    valid=pick(exp.valid),
    turn=turn,
    loss_mask=pick(exp.valid) & (turn == last) & (last > 0),
  )


def pair_responses(
  prompt_index: np.ndarray, rewards_ba: np.ndarray, rng: np.random.Generator, plus: bool
) -> list[tuple[Response, Response]]:
  """(first attempt, target) pairs of Pair-SFT's D (or D+ with `plus`), in episode order.

  Args:
    prompt_index: [b] the problem each episode answers.
    rewards_ba: [b, a] rewards; > 0 is correct.
    rng: draws the random correct target.
    plus: also pair correct first attempts (D+).
  """
  r = np.asarray(rewards_ba) > 0
  prompt_index = np.asarray(prompt_index)
  if r.ndim != 2 or r.shape[0] != prompt_index.shape[0]:
    raise ValueError(f"pair_responses: rewards {r.shape} do not match {prompt_index.shape} rows")
  correct: dict[int, list[Response]] = {}
  for row, attempt in zip(*np.nonzero(r)):
    correct.setdefault(int(prompt_index[row]), []).append((int(row), int(attempt)))
  pairs = []
  for row in range(r.shape[0]):
    if r[row, 0] and not plus:
      continue
    pool = correct.get(int(prompt_index[row]), [])
    if r[row, 0]:  # D+: a correct first attempt pairs with ANOTHER correct response if any
      pool = [x for x in pool if x != (row, 0)] or pool
    if pool:
      pairs.append(((row, 0), pool[int(rng.integers(len(pool)))]))
  return pairs


def pair_streams(
  prompts: Sequence[Sequence[int]],
  prompt_index: np.ndarray,
  attempt_tokens: Sequence[Sequence[Sequence[int]]],
  truncated_ba: np.ndarray,
  pairs: Sequence[tuple[Response, Response]],
  instruction: Sequence[int],
  close_ids: Sequence[int],
  multiple: int = 1,
) -> Experience:
  """SFT rows `[x][y-][instruction][y+]` for `pairs` (see `pair_responses`), loss on y+.

  A truncated first attempt is closed with `close_ids` before the instruction, as the chat
  template renders it; y+ keeps its sampled stop id. Streams are padded to a multiple of
  `multiple` slots; turn ids are 1 on y- and 2 on y+.
  """
  rows = []
  for (r1, a1), (r2, a2) in pairs:
    first = list(attempt_tokens[r1][a1]) + (list(close_ids) if truncated_ba[r1, a1] else [])
    parts = [(prompts[prompt_index[r1]], 0), (first, 1), (instruction, 0)]
    rows.append(parts + [(attempt_tokens[r2][a2], 2)])
  if not rows:
    raise ValueError("pair_streams: no pairs (no problem had both kinds of responses)")
  lengths = [sum(len(p) for p, _ in parts) for parts in rows]
  s = -(-max(lengths) // multiple) * multiple
  tokens, turn = np.zeros((len(rows), s), np.int32), np.zeros((len(rows), s), np.int32)
  for i, parts in enumerate(rows):
    tokens[i, : lengths[i]] = np.concatenate([np.asarray(p, np.int32) for p, _ in parts])
    turn[i, : lengths[i]] = np.concatenate([np.full(len(p), t, np.int32) for p, t in parts])
  valid = np.arange(s)[None, :] < np.asarray(lengths)[:, None]
  positions = np.where(valid, np.arange(s, dtype=np.int32)[None, :], 0).astype(np.int32)
  return Experience(
    tokens=tokens, positions=positions, valid=valid, turn=turn, loss_mask=valid & (turn == 2)
  )
