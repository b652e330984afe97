"""Reward checking overlapped with sampling: the sink's call order, and the same rewards."""

import jax
import numpy as np
import pytest

from score_jax import tasks
from score_jax.data import records
from score_jax.generation import offline, rollout, sampling
from score_jax.models import decoder, presets
from score_jax.rewards import pool as pool_lib
from score_jax.trainer import overlapped_rewards

RIGHT = "Final Answer: The final answer is {}. I hope it is correct."


class RecordingSink:
  def __init__(self):
    self.calls = []

  def attempt_done(self, rows, attempt, texts):
    self.calls.append(("done", attempt, [int(r) for r in rows], list(texts)))

  def device_busy(self):
    self.calls.append(("busy",))


def _decode(ids):
  return " ".join(map(str, ids))


@pytest.fixture(scope="module")
def tiny():
  config = presets.get_preset("tiny-llama")
  params = decoder.init_params(config, jax.random.key(0))
  return config, params, sampling.Sampler(config, prompt_buckets=(8,), gen_buckets=(6,))


def test_each_attempt_reaches_the_sink_while_the_next_decodes(tiny):
  config, params, sampler = tiny
  rc = rollout.RolloutConfig(2, 2, 6, 1.0)
  sink = RecordingSink()
  prompts = [[5, 6, 7], [8, 9]]
  ep = rollout.run_episodes(
    sampler, params, prompts, [11, 12], rc, jax.random.key(1), decode=_decode, sink=sink,
    sink_row0=10,
  )  # fmt: skip
  rows = [10, 11, 12, 13]
  # Attempt 1 is handed over (and the host may work) after attempt 2's decode is dispatched.
  assert [c[:3] for c in sink.calls] == [
    ("busy",), ("done", 1, rows), ("busy",), ("done", 2, rows)
  ]  # fmt: skip
  assert sink.calls[1][3] == [t[0] for t in ep.texts]
  assert sink.calls[3][3] == [t[1] for t in ep.texts]
  # Chunked steps: each call's rows keep their place in the step's numbering.
  chunked = RecordingSink()
  offline.training_episodes(
    sampler, params, params, prompts, [11, 12], rc, jax.random.key(1), num_offline=0,
    row_offset=0, decode=_decode, prompts_per_call=1, sink=chunked,
  )  # fmt: skip
  done = [(c[1], c[2]) for c in chunked.calls if c[0] == "done"]
  assert done == [(1, [0, 1]), (2, [0, 1]), (1, [2, 3]), (2, [2, 3])]
  # Every hand-over is followed by a busy device, the first call's attempt 2 by the second
  # call's attempt 1 decode: only the step's last attempt is left for the critical path.
  assert [c[0] for c in chunked.calls] == ["busy", "done"] * 4


def test_scorer_gives_the_rewards_of_scoring_all_at_once():
  task = tasks.load_task("math", "train")
  examples = [records.Example(id=f"t/{i}", question="q", answer=str(i)) for i in range(4)]
  rows = [ex for ex in examples for _ in range(2)]  # g = 2, prompt-major
  texts = [
    [RIGHT.format(ex.answer if (r + a) % 3 else "x"), RIGHT.format(ex.answer if r % 2 else 7)]
    for r, ex in enumerate(rows)
    for a in [r % 2]
  ]
  with pool_lib.RewardPool(2, warm=("math",)) as pool:
    want = tasks.score_attempts(pool, task, rows, texts)
    scorer = overlapped_rewards.OverlappedScorer(pool, task, rows, 2)
    first = np.arange(4)  # rows 4..7 never reach the sink (like base-model continuations)
    scorer.attempt_done(first, 1, [texts[r][0] for r in first])
    scorer.device_busy()
    scorer.attempt_done(first, 2, [texts[r][1] for r in first])
    assert (scorer.outcomes[:4, 0] >= 0).all() and (scorer.outcomes[:, 1] == -1).all()
    with pytest.raises(ValueError, match="do not follow"):
      scorer.finish(rows[::-1], texts)
    got = scorer.finish(rows, texts)
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_array_equal(got[1], want[1])
  assert got[2] == want[2] and 0 < want[0].sum() < want[0].size
  assert scorer.overlapped_s > 0
