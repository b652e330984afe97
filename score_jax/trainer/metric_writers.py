"""Where metrics go: TensorBoard events + `metrics.jsonl`, episode dumps, a console progress line.

Only process 0 writes. A killed-and-resumed run stays gap- and duplicate-free: on open, the JSONL
files are cut back to the restored checkpoint step (and TensorBoard's `purge_step` hides the
events after it), then the run re-logs the steps it redoes. Each JSONL record is written with ONE
`write(2)` on an O_APPEND descriptor, so a kill leaves at most a torn final line, which the next
open drops.

A workdir in an object store (`gs://`) works too (score_jax.storage): there a JSONL file is
rewritten whole at most once a minute (`flush_due`) and at `flush` (the loop flushes before every
checkpoint, so a resume never finds a gap), and so is each TensorBoard event file (by
`_EventObject`, which replaces tensorboardX's own `gs://` writer: that one needs a separate
google-cloud-storage client and uploads again when garbage-collected after `close`, which hangs
a process at exit for two minutes once the endpoint is gone).
"""

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import numpy as np
from tensorboardX import SummaryWriter, record_writer

from score_jax import storage
from score_jax.trainer import console

METRICS_FILE = "metrics.jsonl"
EPISODES_FILE = "episodes.jsonl"
TENSORBOARD_DIR = "tensorboard"
EPISODE_KEYS = ("prompt", "attempts", "rewards", "outcomes", "turn_lengths")


def _to_json(x: Any) -> Any:
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, np.generic):
    return x.item()
  raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


def truncate_jsonl(path: str | os.PathLike, keep_through_step: int | None) -> int:
  """Keeps the records of `path` with step <= keep_through_step (None: none); returns the count.

  A torn last line (a kill mid-write) is dropped with a warning; any other malformed line is an
  error naming the file and line. The file is rewritten atomically.
  """
  if not storage.exists(path):
    return 0
  lines = storage.read_text(path).split("\n")
  kept = []
  for i, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      step = int(record["step"])
    except (ValueError, KeyError, TypeError) as e:
      if i == len(lines):  # no trailing newline: the write was cut off
        logging.warning("%s:%d: dropping torn final record", path, i)
        continue
      raise ValueError(f"{path}:{i}: not a JSON record with an integer 'step' ({e})") from e
    if keep_through_step is not None and step <= keep_through_step:
      kept.append(line + "\n")
  storage.write_atomic(path, "".join(kept))
  return len(kept)


class _JsonlAppender(storage.Appender):
  def append(self, record: Mapping[str, Any]) -> None:
    data = (json.dumps(record, default=_to_json, allow_nan=False) + "\n").encode("utf-8")
    super().append(data)


class _EventObject(storage.Appender):
  """An event file in an object store, as tensorboardX's record writer uses a file."""

  write = storage.Appender.append


class _EventObjectFactory:
  """tensorboardX's writer factory for `gs://` log dirs (objects need no directory)."""

  def open(self, path: str) -> _EventObject:
    return _EventObject(path)

  def directory_check(self, path: str) -> None:
    del path


record_writer.register_writer_factory("gs", _EventObjectFactory())


def _scalar(key: str, value: Any) -> float:
  arr = np.asarray(value)
  if arr.size != 1 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
    raise ValueError(f"metric '{key}' must be a numeric scalar; got {arr.dtype} shape {arr.shape}")
  return float(arr.reshape(()))


class MetricWriter:
  """Per-step scalars to TensorBoard (`workdir/tensorboard`) and `workdir/metrics.jsonl`."""

  def __init__(
    self,
    workdir: str | os.PathLike,
    process_index: int = 0,
    *,
    resume_step: int | None = None,
    tensorboard: bool = True,
  ):
    """Opens the writers; `resume_step` is the restored checkpoint step (None: a fresh run).

    Records after `resume_step` (all records for a fresh run) are removed, since the run will
    write those steps again.
    """
    self.active = process_index == 0
    self.path = os.path.join(workdir, METRICS_FILE)
    self._tb = None
    if not self.active:
      return
    storage.makedirs(workdir)
    truncate_jsonl(self.path, resume_step)
    self._jsonl = _JsonlAppender(self.path)
    if tensorboard:
      # purge_step hides events at steps >= it that an earlier, killed run had written.
      purge = None if resume_step is None else resume_step + 1
      self._tb = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR), purge_step=purge)

  def write(self, step: int, scalars: Mapping[str, Any], stage: str | None = None) -> None:
    """Writes one step's scalars (numbers or size-1 arrays). Non-finite values go to JSON as
    null."""
    if not self.active:
      return
    values = {k: _scalar(k, v) for k, v in scalars.items()}
    now = time.time()
    record = {
      "step": int(step),
      "stage": stage,
      "time": now,
      "scalars": {k: (v if math.isfinite(v) else None) for k, v in values.items()},
    }
    self._jsonl.append(record)
    if self._tb is not None:
      for key, value in values.items():
        self._tb.add_scalar(key, value, global_step=int(step), walltime=now)
    if self._jsonl.flush_due():  # every step locally; remote uploads are rate-limited
      self.flush()

  def flush(self) -> None:
    """Makes every step written so far durable (in an object store: uploads both files)."""
    if not self.active:
      return
    self._jsonl.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    """Flushes and closes both writers."""
    if not self.active:
      return
    self._jsonl.close()
    if self._tb is not None:
      self._tb.close()

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc: object) -> None:
    self.close()


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
  """The records of `workdir/metrics.jsonl`, in order (for tables and plots)."""
  path = os.path.join(workdir, METRICS_FILE)
  out = []
  for i, line in enumerate(storage.read_text(path).splitlines(), start=1):
    try:
      out.append(json.loads(line))
    except ValueError as e:
      raise ValueError(f"{path}:{i}: invalid JSON ({e})") from e
  return out


class EpisodeDumper:
  """Every `every_steps` steps appends full episodes to `workdir/episodes.jsonl`, one per line."""

  def __init__(
    self,
    workdir: str | os.PathLike,
    every_steps: int,
    process_index: int = 0,
    *,
    resume_step: int | None = None,
  ):
    if every_steps < 1:
      raise ValueError(f"EpisodeDumper: every_steps must be >= 1; got {every_steps}")
    self.every_steps = every_steps
    self.active = process_index == 0
    self.path = os.path.join(workdir, EPISODES_FILE)
    if self.active:
      storage.makedirs(workdir)
      truncate_jsonl(self.path, resume_step)
      self._jsonl = _JsonlAppender(self.path)

  def maybe_dump(self, step: int, episodes: Sequence[Mapping[str, Any]]) -> bool:
    """Appends `episodes` if `step` is a multiple of every_steps; returns whether it did.

    Each episode needs prompt, attempts (texts), rewards, outcomes and turn_lengths, one entry
    per attempt; extra keys are kept.
    """
    if not self.active or step % self.every_steps:
      return False
    for i, ep in enumerate(episodes):
      missing = [k for k in EPISODE_KEYS if k not in ep]
      if missing:
        raise ValueError(f"episode {i} at step {step} lacks {missing}")
      n = len(ep["attempts"])
      bad = [k for k in EPISODE_KEYS[2:] if len(ep[k]) != n]
      if bad:
        raise ValueError(f"episode {i} at step {step}: {bad} need one entry per attempt ({n})")
    for i, ep in enumerate(episodes):
      self._jsonl.append({"step": int(step), "index": i, **ep})
    if self._jsonl.flush_due():
      self._jsonl.flush()
    return True

  def close(self) -> None:
    """Closes the file."""
    if self.active:
      self._jsonl.close()


def _fmt_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  return f"{h}:{rem // 60:02d}:{rem % 60:02d}"


def _fmt_rate(rate: float) -> str:
  """'2 steps/s' at a step a second or faster, '7.81 s/step' below (the testbed's RL steps)."""
  if not (math.isfinite(rate) and rate > 0):
    return "? steps/s"
  return f"{rate:.3g} steps/s" if rate >= 1 else f"{1 / rate:.3g} s/step"


class Progress:
  """One console line per phase: step, rate, ETA and a few metrics.

  On a TTY the line is redrawn in place (carriage return); otherwise (`| tee`, logs, CI) a full
  line is printed at most every `log_every_s` seconds, at the first update and at the last step.
  The same lines (at most every `log_every_s`) also go to the run's log file
  (`score_jax.trainer.console`), so the file holds the whole story with timestamps.

  The rate is the mean since the phase started: since construction when `start_step` (the step
  the phase starts or resumes from) is given, so the first line already has a rate (it then
  includes the first step's compilation); otherwise since the first update. tqdm is not used:
  it is not a pinned dependency, and this is all the display needs.
  """

  def __init__(
    self,
    total_steps: int,
    description: str = "",
    *,
    stream: TextIO | None = None,
    log_every_s: float = 30.0,
    enabled: bool = True,
    start_step: int | None = None,
    clock: Callable[[], float] = time.monotonic,
  ):
    self.total_steps = total_steps
    self.description = description
    self.stream = stream or sys.stdout
    self.log_every_s = log_every_s
    self.enabled = enabled
    self._clock = clock
    self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self._start: tuple[int, float] | None = None
    if start_step is not None:
      self._start = (start_step, clock())
    self._last_print = -math.inf
    self._last_logged = -math.inf
    self._width = 0

  def line(self, step: int, metrics: Mapping[str, Any], now: float) -> str:
    """The text shown for `step`; the rate counts this invocation's steps only (resume-safe)."""
    if self._start is None:
      self._start = (step, now)
    done, elapsed = step - self._start[0], now - self._start[1]
    rate = done / elapsed if done > 0 and elapsed > 0 else math.nan
    eta = (self.total_steps - step) / rate if rate > 0 else math.nan
    parts = [f"{self.description} {step}/{self.total_steps}".strip()]
    parts.append(_fmt_rate(rate))
    parts.append(f"ETA {_fmt_duration(eta)}")
    parts += [f"{k}={_scalar(k, v):.4g}" for k, v in metrics.items()]
    return " | ".join(parts)

  def update(self, step: int, **metrics: Any) -> None:
    """Shows progress at `step` with the given metrics."""
    if not self.enabled:
      return
    now = self._clock()
    text = self.line(step, metrics, now)
    last = step >= self.total_steps
    if now - self._last_logged >= self.log_every_s or last:
      console.log_only(text)
      self._last_logged = now
    if self._tty:
      self.stream.write("\r" + text.ljust(self._width))
      self._width = len(text)
    elif now - self._last_print >= self.log_every_s or last:
      self.stream.write(text + "\n")
      self._last_print = now
    else:
      return
    self.stream.flush()

  def close(self) -> None:
    """Ends the redrawn line."""
    if self.enabled and self._tty and self._width:
      self.stream.write("\n")
      self.stream.flush()
