"""The terminal a person reads: library logs to the workdir's log file, WARNING+ on stderr."""

import io
import logging
import os

import pytest
from absl import logging as absl_logging

from score_jax.trainer import console, metric_writers


@pytest.fixture(autouse=True)
def _restore_logging():
  """Every test leaves the root logger as it found it (handlers, levels, absl's handler)."""
  root = logging.getLogger()
  handlers, level = list(root.handlers), root.level
  yield
  console.reset()
  for h in list(root.handlers):
    if h not in handlers:
      root.removeHandler(h)
  root.setLevel(level)


def _orbax_record(level: int, msg: str) -> logging.LogRecord:
  """A record as orbax makes it: through absl's logger, from a file inside the orbax package."""
  path = os.path.join("site-packages", "orbax", "checkpoint", "checkpoint_manager.py")
  return logging.getLogger("absl").makeRecord("absl", level, path, 1, msg, None, None)


def test_library_info_goes_to_the_file_warning_to_stderr(tmp_path, capsys):
  out = io.StringIO()
  path = console.setup(tmp_path, to_terminal=False, stream=out)
  assert path == tmp_path / "log.txt"
  logging.getLogger("orbax.checkpoint").info("orbax-info-line")
  absl_logging.info("absl-info-line")
  logging.getLogger("jax._src.xla_bridge").info("jax-info-line")
  logging.getLogger("score_jax.trainer.loop").warning("our-warning-line")
  err = capsys.readouterr().err
  text = path.read_text()
  for line in ("orbax-info-line", "absl-info-line", "jax-info-line", "our-warning-line"):
    assert line in text
  assert "info-line" not in err
  assert "our-warning-line" in err
  assert out.getvalue() == f"log: {path} (--verbosity=1 shows it here)\n"


def test_orbax_records_below_error_stay_off_the_terminal(tmp_path, capsys):
  path = console.setup(tmp_path, to_terminal=False, stream=io.StringIO())
  console.quiet_on_terminal("orbax")
  root = logging.getLogger()
  root.handle(_orbax_record(logging.WARNING, "orbax-tracked-metric"))
  root.handle(_orbax_record(logging.ERROR, "orbax-broke"))
  err = capsys.readouterr().err
  assert "orbax-tracked-metric" not in err and "orbax-broke" in err
  assert "orbax-tracked-metric" in path.read_text()


def test_quiet_without_setup_under_absls_handler(capsys):
  # What app.run installs; no log file: orbax INFO vanishes from the terminal, ours stays.
  absl_logging.use_absl_handler()
  logging.getLogger().setLevel(logging.INFO)
  console.quiet_on_terminal("orbax")
  logging.getLogger().handle(_orbax_record(logging.INFO, "orbax-info-line"))
  absl_logging.warning("absl-warning-line")
  err = capsys.readouterr().err
  assert "orbax-info-line" not in err and "absl-warning-line" in err


def test_setup_lowers_absls_handler_to_warning(tmp_path, capsys):
  absl_logging.use_absl_handler()
  path = console.setup(tmp_path, to_terminal=False, stream=io.StringIO())
  absl_logging.info("absl-info-line")
  absl_logging.warning("absl-warning-line")
  err = capsys.readouterr().err
  assert "absl-info-line" not in err and "absl-warning-line" in err
  assert "absl-info-line" in path.read_text()
  console.reset()
  assert absl_logging.get_absl_handler().level == logging.NOTSET


def test_to_terminal_brings_everything_back(tmp_path, capsys):
  out = io.StringIO()
  path = console.setup(tmp_path, to_terminal=True, stream=out)
  logging.getLogger("orbax").info("orbax-info-line")
  logging.getLogger().handle(_orbax_record(logging.INFO, "orbax-absl-line"))
  err = capsys.readouterr().err
  assert "orbax-info-line" in err and "orbax-absl-line" in err
  assert "orbax-info-line" in path.read_text()
  assert out.getvalue() == ""  # nothing to announce: the terminal shows it all


def test_setup_twice_replaces_its_handlers(tmp_path):
  root = logging.getLogger()
  before = len(root.handlers)
  console.setup(tmp_path / "a", to_terminal=False, stream=io.StringIO())
  n = len(root.handlers)
  path = console.setup(tmp_path / "b", to_terminal=False, stream=io.StringIO(), process_index=0)
  assert len(root.handlers) == n and n > before
  logging.getLogger("orbax").info("second-file-only")
  assert "second-file-only" in path.read_text()
  assert "second-file-only" not in (tmp_path / "a" / "log.txt").read_text()


def test_say_result_report_print_on_process_zero_only(tmp_path):
  out = io.StringIO()
  path = console.setup(tmp_path, to_terminal=False, stream=out, announce=False)
  line = console.result("base eval", {"acc@t1": 63.9, "acc@t2": 64.0}, seconds=18.14, tag="testbed")
  assert line == "[testbed] base eval: acc@t1=63.9 acc@t2=64 (18.1 s)"
  console.result("pretrain", "nll 0.93", seconds=499.0)
  console.report(tmp_path / "report" / "results.md")
  assert out.getvalue().splitlines() == [
    "[testbed] base eval: acc@t1=63.9 acc@t2=64 (18.1 s)",
    "pretrain: nll 0.93 (0:08:19)",
    f"report: {tmp_path / 'report' / 'results.md'}",
  ]
  text = path.read_text()
  assert "console_test.py" in text and "console.py" not in text  # the caller's file:line
  assert "[testbed] base eval" in text and "report: " in text
  other = io.StringIO()
  path1 = console.setup(tmp_path, to_terminal=False, stream=other, process_index=1)
  console.say("from process 1")
  assert path1 == tmp_path / "log.process1.txt" and other.getvalue() == ""
  assert "from process 1" in path1.read_text()


def test_log_path_of_an_object_store_workdir_is_local():
  path = console.log_path("gs://bucket/runs/x", process_index=2)
  assert path.name == "log.process2.txt" and "://" not in str(path)
  assert "gs_bucket_runs_x" in str(path)


class _Clock:
  def __init__(self):
    self.t = 100.0

  def __call__(self):
    return self.t


def test_progress_line_formats_rate_and_eta(tmp_path):
  clock, out = _Clock(), io.StringIO()
  path = console.setup(tmp_path, to_terminal=False, stream=io.StringIO(), announce=False)
  # start_step: the first line already has a rate (it includes the first step's compile).
  p = metric_writers.Progress(40, "SCoRe", stream=out, start_step=10, clock=clock)
  clock.t += 16.0
  p.update(12, reward=0.25)  # 2 steps in 16 s: slower than a step a second -> s/step
  clock.t += 1.0  # within log_every_s: not printed to a non-TTY stream
  p.update(13, reward=0.5)
  p.line(13, {}, now=clock.t)
  assert out.getvalue() == "SCoRe 12/40 | 8 s/step | ETA 0:03:44 | reward=0.25\n"
  fast = metric_writers.Progress(100, "pretrain", stream=io.StringIO(), start_step=0, clock=clock)
  assert fast.line(40, {"nll": 0.9325}, now=clock.t + 10.0) == (
    "pretrain 40/100 | 4 steps/s | ETA 0:00:15 | nll=0.9325"
  )
  unknown = metric_writers.Progress(5, "eval", stream=io.StringIO())
  assert unknown.line(1, {}, now=0.0) == "eval 1/5 | ? steps/s | ETA ?"
  assert "SCoRe 12/40 | 8 s/step" in path.read_text()  # the log file gets the lines too
