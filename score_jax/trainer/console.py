"""What a person reads on the terminal, and the log file that holds everything else.

A run's terminal shows only what a reader follows: one progress line per phase
(`metric_writers.Progress`: step, rate, ETA), one result line per phase (`result`), WARNING and
above from any logger, and `report: PATH` at the end (`report`). Everything libraries log at
INFO (Orbax's ~30 lines per checkpoint save, absl INFO, JAX, tensorboardX, the resolved config)
goes to `DIR/log.txt` instead, with absl's prefix (level, time, thread, file:line).

  console.setup(workdir)    # once the workdir is known; again with process_index after
                            # jax.distributed.initialize (a second call replaces the first)

`--verbosity=1` (absl's flag; it also turns DEBUG on) or `--alsologtostderr` brings every log
line back to the terminal, as does `setup(..., to_terminal=True)`.

Orbax logs through absl's logger, so its records are recognised by their source file
(`.../orbax/...`), not by a logger name. `quiet_on_terminal("orbax")` (called by
`trainer.checkpoint`) keeps its records below ERROR off the terminal even where `setup` was
never called (tests, the evaluate job, benchmarks); they still reach any log file.

Only process 0 prints `say` / `result` / `report` lines; every process writes its own log file
(`log.txt` on process 0, `log.process<k>.txt` on process k). A workdir on an object store
(`gs://...`) gets its log file in the local temp dir, named after the workdir, and `setup`
announces where: Python's FileHandler appends to a local file, and an object can only be
replaced whole (score_jax.storage), so re-uploading a growing log on every record is not worth it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from absl import flags as absl_flags
from absl import logging as absl_logging

from score_jax import storage

LOG_FILE = "log.txt"
_ROLE = "_score_jax_console"  # attribute on the handlers this module added: "file" | "terminal"


class _QuietFilter(logging.Filter):
  """Drops records below ERROR that come from the given packages (by logger name or file)."""

  def __init__(self):
    super().__init__()
    self.packages: set[str] = set()

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR or not self.packages:
      return True
    if record.name.split(".", 1)[0] in self.packages:
      return False
    path = (record.pathname or "").replace(os.sep, "/")
    return not any(f"/{p}/" in path for p in self.packages)


@dataclasses.dataclass
class _State:
  path: Path | None = None  # the log file, once `setup` ran
  loud: bool | None = None  # None: decided by absl's flags at call time
  printing: bool = True  # process 0
  stream: TextIO | None = None  # where say/result/report print; None: sys.stdout at call time
  quiet: _QuietFilter = dataclasses.field(default_factory=_QuietFilter)
  added: list[logging.Handler] = dataclasses.field(default_factory=list)
  levels: list[tuple[logging.Handler, int]] = dataclasses.field(default_factory=list)
  filtered: list[logging.Handler] = dataclasses.field(default_factory=list)
  root_level: int | None = None


_state = _State()
# say/result/report lines go to the log file through this logger only (never to the terminal
# twice): it does not propagate to the root logger's handlers.
_echo = logging.getLogger("score_jax.console")
_echo.propagate = False


def absl_wants_everything() -> bool:
  """Whether absl's flags ask for every log line on the terminal.

  True for `--verbosity` >= 1, `--alsologtostderr` or `--logtostderr`.
  """
  if absl_logging.get_verbosity() >= 1:
    return True
  flags = absl_flags.FLAGS
  if not flags.is_parsed():
    return False
  return bool(flags["alsologtostderr"].value or flags["logtostderr"].value)


def _loud() -> bool:
  return absl_wants_everything() if _state.loud is None else _state.loud


def log_path(workdir: str | os.PathLike, process_index: int = 0) -> Path:
  """The log file of `process_index` for `workdir` (see the module docstring)."""
  name = LOG_FILE if process_index == 0 else f"log.process{process_index}.txt"
  workdir = os.fspath(workdir)
  if storage.is_remote(workdir):  # an object store: Python's FileHandler needs a local file
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", workdir).strip("_")
    return Path(tempfile.gettempdir()) / "score_jax_logs" / slug / name
  return Path(workdir) / name


def _terminal_handlers() -> list[logging.Handler]:
  """The root logger's handlers that write to the terminal (absl's, or a stream on stdio)."""
  stdio = {id(s) for s in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)}
  out = []
  for h in logging.getLogger().handlers:
    role = getattr(h, _ROLE, None)
    if role == "file":
      continue
    if role == "terminal" or isinstance(h, absl_logging.ABSLHandler):
      out.append(h)
    elif isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
      if id(getattr(h, "stream", None)) in stdio:
        out.append(h)
  return out


def _filter_terminal() -> None:
  for h in _terminal_handlers():
    if _state.quiet not in h.filters:
      h.addFilter(_state.quiet)
      _state.filtered.append(h)


def quiet_on_terminal(*packages: str) -> None:
  """Keeps the records of `packages` below ERROR off the terminal (log file only).

  Takes effect on the terminal handlers present now and on those `setup` finds later; does
  nothing while every line is asked for on the terminal (`--verbosity=1`, `to_terminal=True`).
  """
  _state.quiet.packages.update(packages)
  if not _loud():
    _filter_terminal()


def _undo() -> None:
  """Removes the handlers and filters this module added and restores the levels it changed."""
  root = logging.getLogger()
  for h in _state.added:
    root.removeHandler(h)
    h.close()
  for h, level in _state.levels:
    h.setLevel(level)
  for h in _state.filtered:
    h.removeFilter(_state.quiet)
  if _state.root_level is not None:
    root.setLevel(_state.root_level)
  for h in list(_echo.handlers):
    _echo.removeHandler(h)
  _state.added, _state.levels, _state.filtered, _state.root_level = [], [], [], None
  _state.path = None


def reset() -> None:
  """Undoes `setup` and `quiet_on_terminal` (for tests, and for a second run in one process)."""
  _undo()
  _state.quiet.packages.clear()
  _state.loud, _state.printing, _state.stream = None, True, None


def setup(
  workdir: str | os.PathLike,
  *,
  to_terminal: bool | None = None,
  process_index: int = 0,
  stream: TextIO | None = None,
  announce: bool = True,
) -> Path:
  """Routes log records to the workdir's log file and keeps WARNING+ on the terminal.

  Args:
    workdir: the run's workdir; the log file is `log_path(workdir, process_index)`, appended to
      (a resumed run continues the same file).
    to_terminal: every log line on the terminal too; None: as absl's flags say
      (`absl_wants_everything`).
    process_index: this JAX process; only process 0 prints say/result/report lines.
    stream: where say/result/report print (default: sys.stdout at the time of each call).
    announce: print one line naming the log file (process 0, when the terminal is quiet).

  Returns:
    The log file's path.
  """
  _undo()
  _state.loud = absl_wants_everything() if to_terminal is None else bool(to_terminal)
  _state.printing = process_index == 0
  _state.stream = stream
  path = log_path(workdir, process_index)
  path.parent.mkdir(parents=True, exist_ok=True)
  root = logging.getLogger()
  # The file takes INFO at least (DEBUG under --verbosity=1, which absl sets on the root logger;
  # a root at NOTSET already passes everything).
  if root.level > logging.INFO:
    _state.root_level = root.level
    root.setLevel(logging.INFO)
  file_handler = logging.FileHandler(path, mode="a", encoding="utf-8")
  file_handler.setFormatter(absl_logging.PythonFormatter())
  setattr(file_handler, _ROLE, "file")
  terminals = _terminal_handlers()
  if not terminals:  # the file would silence Python's last-resort stderr handler: replace it
    t = logging.StreamHandler(sys.stderr)
    t.setFormatter(absl_logging.PythonFormatter())
    setattr(t, _ROLE, "terminal")
    terminals = [t]
  root.addHandler(file_handler)
  _state.added.append(file_handler)
  for h in terminals:
    if getattr(h, _ROLE, None) == "terminal" and h not in root.handlers:
      root.addHandler(h)
      _state.added.append(h)
    if not _state.loud and h.level < logging.WARNING:
      _state.levels.append((h, h.level))
      h.setLevel(logging.WARNING)
  if not _state.loud:
    _filter_terminal()
  _echo.addHandler(file_handler)
  _echo.setLevel(logging.INFO)
  _state.path = path
  if announce and not _state.loud:
    say(f"log: {path} (--verbosity=1 shows it here)")
  return path


def current_log() -> Path | None:
  """The log file `setup` opened, or None."""
  return _state.path


def log_only(msg: str) -> None:
  """Writes `msg` to the log file alone (nothing when `setup` has not run)."""
  if _echo.handlers:
    _echo.info(msg, stacklevel=2)


def _emit(text: str) -> None:
  # stacklevel 3: the log file names the caller of say/result/report, not this module.
  if _echo.handlers:
    _echo.info(text, stacklevel=3)
  if _state.printing:
    stream = _state.stream or sys.stdout
    stream.write(text + "\n")
    stream.flush()


def say(msg: str, tag: str | None = None) -> None:
  """One line for the reader on process 0 (stdout), also written to the log file."""
  _emit(f"[{tag}] {msg}" if tag else msg)


def format_seconds(seconds: float) -> str:
  """'8.3 s' under a minute, else 'h:mm:ss' (as the progress line's ETA); '?' if unknown."""
  if not math.isfinite(seconds):
    return "?"
  if seconds < 60:
    return f"{seconds:.1f} s"
  s = int(round(seconds))
  return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _format_value(v: Any) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  return str(v)


def result(
  phase: str,
  values: Mapping[str, Any] | str = "",
  seconds: float | None = None,
  tag: str | None = None,
) -> str:
  """Prints (process 0) and returns a phase's one-line result, `[tag] ` first when given.

  `result("base eval", {"acc@t1": 63.9, "acc@t2": 63.9}, 18.1)` ->
  'base eval: acc@t1=63.9 acc@t2=63.9 (18.1 s)'.
  """
  text = (
    values
    if isinstance(values, str)
    else " ".join(f"{k}={_format_value(v)}" for k, v in values.items())
  )
  line = f"{phase}: {text}" if text else f"{phase}: done"
  if seconds is not None:
    line += f" ({format_seconds(seconds)})"
  line = f"[{tag}] {line}" if tag else line
  _emit(line)
  return line


def report(path: str | os.PathLike, tag: str | None = None) -> None:
  """The last line of a run: where its report is."""
  _emit(f"[{tag}] report: {os.fspath(path)}" if tag else f"report: {os.fspath(path)}")
