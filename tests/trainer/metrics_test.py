"""SCoRe metrics on hand examples, edit distance vs a reference DP, and the metric writers."""

import io
import json
import random
import struct

import numpy as np
import pytest
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c

from score_jax.trainer import metric_writers, metrics


def test_self_correction_metrics_hand_example():
  # 5 problems: c->c, i->c, i->c, c->i, i->i.
  correct = np.array([[1, 1], [0, 1], [0, 1], [1, 0], [0, 0]], dtype=bool)
  m = metrics.self_correction_metrics(correct)
  assert m["acc@t1"] == pytest.approx(0.4) and m["acc@t2"] == pytest.approx(0.6)
  assert m["delta_i->c(t1,t2)"] == pytest.approx(0.4)
  assert m["delta_c->i(t1,t2)"] == pytest.approx(0.2)
  assert m["delta(t1,t2)"] == pytest.approx(0.2)


def test_self_correction_metrics_k_attempts_identity():
  rng = np.random.default_rng(0)
  correct = rng.random((200, 4)) < 0.5
  m = metrics.self_correction_metrics(correct.astype(np.int32))
  for j in range(1, 4):
    tag = f"(t{j},t{j + 1})"
    assert m[f"delta{tag}"] == pytest.approx(m[f"acc@t{j + 1}"] - m[f"acc@t{j}"])
    assert m[f"delta{tag}"] == pytest.approx(m[f"delta_i->c{tag}"] - m[f"delta_c->i{tag}"])
  assert "delta(t1,t3)" not in m


def test_self_correction_metrics_rejects_bad_input():
  with pytest.raises(ValueError, match=r"shape \(episodes, attempts\)"):
    metrics.self_correction_metrics(np.ones(3, bool))
  with pytest.raises(ValueError, match="boolean or 0/1"):
    metrics.self_correction_metrics(np.array([[0.5, 1.0]]))


def _reference_levenshtein(a, b):
  prev = list(range(len(b) + 1))
  for i, ca in enumerate(a, 1):
    cur = [i] + [0] * len(b)
    for j, cb in enumerate(b, 1):
      cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
    prev = cur
  return prev[-1]


def test_edit_distance_matches_reference_dp():
  rng = random.Random(0)
  for _ in range(400):
    # Small alphabets make many matches; lengths cross the 64-bit word boundary.
    a = "".join(rng.choice("abc") for _ in range(rng.randint(0, 90)))
    b = "".join(rng.choice("abcd") for _ in range(rng.randint(0, 90)))
    if rng.random() < 0.3:
      b = a[: rng.randint(0, len(a))] + b[:5] + a[rng.randint(0, len(a)) :]
    assert metrics.levenshtein(a, b) == _reference_levenshtein(a, b), (a, b)
    total = len(a) + len(b)
    want = _reference_levenshtein(a, b) / total if total else 0.0
    assert metrics.edit_distance_ratio(a, b) == pytest.approx(want)


def test_edit_distance_hand_examples():
  assert metrics.levenshtein("kitten", "sitting") == 3
  assert metrics.edit_distance_ratio("abc", "abc") == 0.0
  assert metrics.edit_distance_ratio("abc", "xyz") == pytest.approx(3 / 6)
  assert metrics.edit_distance_ratio("", "abcd") == 1.0
  np.testing.assert_allclose(metrics.edit_distance_ratios(["ab", ""], ["ab", ""]), [0.0, 0.0])


def test_answer_change_rate():
  a1 = ["4", "x+1", None, "7", None]
  a2 = ["4", "1+x", "3", " 7 ", None]
  assert metrics.answer_change_rate(a1, a2) == pytest.approx(2 / 5)
  same_poly = lambda x, y: (x and y and sorted(x) == sorted(y)) or x == y
  assert metrics.answer_change_rate(a1, a2, equivalent=same_poly) == pytest.approx(2 / 5)
  assert metrics.answer_change_rate(["1"], ["2"]) == 1.0
  with pytest.raises(ValueError, match="2 vs 1"):
    metrics.answer_change_rate(["1", "2"], ["1"])


def test_rollout_stats_and_phase_timer():
  s = metrics.length_stats([3, 8, 8, 1], max_length=8, prefix="turn1/len")
  assert s == {
    "turn1/len/mean": 5.0,
    "turn1/len/min": 1.0,
    "turn1/len/max": 8.0,
    "turn1/len/truncation_rate": 0.5,
  }
  values = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
  turn = np.array([[0, 1, 1, 2], [0, 1, 2, 2]])
  mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
  kl = metrics.per_turn_means(values, turn, mask, "kl", num_turns=3)
  assert kl["kl/turn1"] == pytest.approx((2 + 3 + 6) / 3)
  assert kl["kl/turn2"] == pytest.approx((4 + 7) / 2)
  assert np.isnan(kl["kl/turn3"])
  with pytest.raises(ValueError, match="must share one shape"):
    metrics.per_turn_means(values, turn[:, :2], mask, "kl")
  assert metrics.tokens_per_second(100, 4.0) == 25.0
  timer = metrics.PhaseTimer()
  with timer("sampling"):
    sum(range(200000))
  with timer("update"):
    pass
  out = timer.summary()
  assert out["time/sampling_s"] > out["time/update_s"] >= 0
  assert out["time/sampling_frac"] + out["time/update_frac"] == pytest.approx(1.0)


def _read_events(directory):
  """Scalars from TensorBoard event files, parsing the TFRecord framing with CRC checks."""
  scalars = {}
  for path in sorted(directory.glob("events.out.tfevents.*")):
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
      header = data[pos : pos + 8]
      (length,) = struct.unpack("Q", header)
      assert struct.unpack("I", data[pos + 8 : pos + 12])[0] == masked_crc32c(header)
      payload = data[pos + 12 : pos + 12 + length]
      assert struct.unpack("I", data[pos + 12 + length : pos + 16 + length])[0] == masked_crc32c(
        payload
      )
      pos += 16 + length
      event = event_pb2.Event.FromString(payload)
      for v in event.summary.value:
        scalars.setdefault(v.tag, []).append((event.step, v.simple_value))
  return scalars


def test_metric_writer_jsonl_and_tensorboard(tmp_path):
  with metric_writers.MetricWriter(tmp_path, 0) as w:
    for step in range(1, 4):
      w.write(step, {"reward": 0.1 * step, "loss": np.float32(2.0), "bad": float("nan")}, "stage1")
    with pytest.raises(ValueError, match="metric 'x' must be a numeric scalar"):
      w.write(4, {"x": np.ones(3)})
  records = metric_writers.read_metrics(tmp_path)
  assert [r["step"] for r in records] == [1, 2, 3]
  assert records[1]["stage"] == "stage1" and records[1]["scalars"]["reward"] == pytest.approx(0.2)
  assert records[0]["scalars"]["bad"] is None
  events = _read_events(tmp_path / metric_writers.TENSORBOARD_DIR)
  assert {"reward", "loss", "bad"} <= set(events)
  assert [s for s, _ in events["reward"]] == [1, 2, 3]
  assert events["loss"][0][1] == pytest.approx(2.0)


def test_metric_writer_resume_truncates(tmp_path):
  with metric_writers.MetricWriter(tmp_path, 0, tensorboard=False) as w:
    for step in range(1, 8):
      w.write(step, {"reward": step})
  # A kill mid-write leaves a torn last line.
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 8, "scal')
  # The run restores checkpoint 5 and redoes steps 6..9: no gaps, no duplicates.
  with metric_writers.MetricWriter(tmp_path, 0, resume_step=5) as w:  # + TB purge_step
    for step in range(6, 10):
      w.write(step, {"reward": 10 * step})
  records = metric_writers.read_metrics(tmp_path)
  assert [r["step"] for r in records] == list(range(1, 10))
  assert records[6]["scalars"]["reward"] == 70
  # Other processes write nothing; a corrupt middle line is an error naming file and line.
  metric_writers.MetricWriter(tmp_path / "p1", 3).write(1, {"a": 1})
  assert not (tmp_path / "p1").exists()
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON record"):
    metric_writers.MetricWriter(tmp_path, 0, resume_step=5, tensorboard=False)


def test_episode_dumper(tmp_path):
  ep = {
    "prompt": "2+2?",
    "attempts": ["5", "4"],
    "rewards": np.array([0.0, 1.0]),
    "outcomes": ["wrong", "correct"],
    "turn_lengths": [np.int32(3), np.int32(2)],
  }
  d = metric_writers.EpisodeDumper(tmp_path, every_steps=2)
  assert not d.maybe_dump(1, [ep])
  assert d.maybe_dump(2, [ep, ep])
  with pytest.raises(ValueError, match=r"episode 0 at step 4: \['rewards'\] need one entry"):
    d.maybe_dump(4, [{**ep, "rewards": [1.0]}])
  d.close()
  d = metric_writers.EpisodeDumper(tmp_path, every_steps=2, resume_step=1)  # drops step 2
  assert d.maybe_dump(2, [ep])
  d.close()
  lines = [json.loads(x) for x in (tmp_path / "episodes.jsonl").read_text().splitlines()]
  assert (
    len(lines) == 1 and lines[0]["rewards"] == [0.0, 1.0] and lines[0]["turn_lengths"] == [3, 2]
  )


class _Tty(io.StringIO):
  def isatty(self):
    return True


def test_progress_tty_and_log_modes():
  tty = _Tty()
  p = metric_writers.Progress(10, "stage1", stream=tty)
  p.line(0, {}, now=0.0)  # sets the start
  text = p.line(4, {"reward": 0.51234}, now=2.0)
  assert text == "stage1 4/10 | 2 steps/s | ETA 0:00:03 | reward=0.5123"
  p.update(5, reward=0.5)
  p.close()
  assert tty.getvalue().startswith("\rstage1 5/10") and tty.getvalue().endswith("\n")
  log = io.StringIO()
  p = metric_writers.Progress(3, "sft", stream=log, log_every_s=3600)
  for step in range(1, 4):
    p.update(step, loss=1.0)
  lines = log.getvalue().splitlines()
  assert [x.split(" |")[0] for x in lines] == ["sft 1/3", "sft 3/3"]
