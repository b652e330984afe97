"""Workdir files on a local disk or in an object store (`gs://bucket/run`), behind one interface.

Every file a run keeps in its workdir goes through here (TensorBoard's events too, by a writer
that trainer.metric_writers gives tensorboardX), except Orbax's checkpoints: Orbax and
tensorstore take a `gs://` path themselves. Local paths use `os` and `open` directly; a URL goes
to fsspec (gcsfs for `gs://`: the usual Google credentials, or the `STORAGE_EMULATOR_HOST`
endpoint of a fake bucket).

Atomic writes: a local file is written under a temporary name and renamed over the old one; an
object store's single-object write is atomic already (a reader sees the old object or the new
one, never part of one), so it is written in place. Object stores have no directories:
`makedirs` does nothing there and a "directory" exists while an object lies under it.

Paths stay strings. `os.path.join` and `os.path.dirname` are safe on URLs (POSIX separators);
`abspath`, `realpath` and `normpath` turn `gs://b` into `gs:/b`: use `absolute`.
"""

import io
import os
import time

import fsspec


def is_remote(path: str | os.PathLike) -> bool:
  """Whether `path` is a URL (`gs://...`) rather than a local path."""
  return "://" in os.fspath(path)


def absolute(path: str | os.PathLike) -> str:
  """A local path made absolute (and `~` expanded); a URL unchanged."""
  path = os.fspath(path)
  return path if is_remote(path) else os.path.abspath(os.path.expanduser(path))


def realpath(path: str | os.PathLike) -> str:
  """A key that is equal for two spellings of one place: os.path.realpath, or the bare URL."""
  path = os.fspath(path)
  return path.rstrip("/") if is_remote(path) else os.path.realpath(path)


def _fs(path: str) -> fsspec.AbstractFileSystem:
  # No listings cache: another process (or host) may have written under the same prefix since.
  return fsspec.core.url_to_fs(path, use_listings_cache=False)[0]


def exists(path: str | os.PathLike) -> bool:
  """Whether a file or directory (on an object store: any object under it) exists."""
  path = os.fspath(path)
  return _fs(path).exists(path) if is_remote(path) else os.path.exists(path)


def isfile(path: str | os.PathLike) -> bool:
  """Whether `path` is a file (an object)."""
  path = os.fspath(path)
  return _fs(path).isfile(path) if is_remote(path) else os.path.isfile(path)


def isdir(path: str | os.PathLike) -> bool:
  """Whether `path` is a directory (on an object store: a prefix with objects under it)."""
  path = os.fspath(path)
  return _fs(path).isdir(path) if is_remote(path) else os.path.isdir(path)


def listdir(path: str | os.PathLike) -> list[str]:
  """The names directly under directory `path`, sorted."""
  path = os.fspath(path)
  if not is_remote(path):
    return sorted(os.listdir(path))
  entries = _fs(path).ls(path, detail=False)
  return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries} - {""})


def makedirs(path: str | os.PathLike) -> None:
  """Creates directory `path` and its parents if missing (nothing to do on an object store)."""
  path = os.fspath(path)
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)


def remove(path: str | os.PathLike) -> None:
  """Deletes file `path`."""
  path = os.fspath(path)
  if is_remote(path):
    _fs(path).rm(path)
  else:
    os.remove(path)


def open_file(path: str | os.PathLike, mode: str = "r"):
  """`open` for reading ('r', 'rb') or writing a whole file ('w', 'wb'; not atomic)."""
  path = os.fspath(path)
  if "a" in mode or "+" in mode:
    raise ValueError(f"open_file({path!r}, {mode!r}): append through `Appender` instead")
  if not is_remote(path):
    return open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"}))
  return _fs(path).open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"}))


def read_bytes(path: str | os.PathLike) -> bytes:
  """The whole content of file `path`."""
  with open_file(path, "rb") as f:
    return f.read()


def read_text(path: str | os.PathLike) -> str:
  """The whole content of file `path`, decoded as UTF-8."""
  return read_bytes(path).decode("utf-8")


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
  """Writes `data` to `path` (parents created) so a reader never sees part of it."""
  path = os.fspath(path)
  data = data.encode("utf-8") if isinstance(data, str) else data
  if is_remote(path):
    _fs(path).pipe_file(path, data)
    return
  makedirs(os.path.dirname(os.path.abspath(path)))
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)  # atomic: a killed run never leaves half a file


def buffer_of(write) -> bytes:
  """The bytes `write(file_object)` writes (np.savez into memory, before `write_atomic`)."""
  buf = io.BytesIO()
  write(buf)
  return buf.getvalue()


class Appender:
  """Appends records to a file, each whole or not at all, so a killed writer leaves at most a
  torn last record.

  A local file takes each record with ONE `write(2)` on an O_APPEND descriptor. An object can
  only be replaced whole, so a remote file's content is kept in memory and the object is
  rewritten by `flush` (`flush_due` says when: at most every `flush_every_s` seconds, since each
  rewrite uploads the whole file); `close` flushes.
  """

  def __init__(self, path: str | os.PathLike, flush_every_s: float = 60.0):
    self.path = os.fspath(path)
    self.remote = is_remote(self.path)
    self.flush_every_s = flush_every_s
    if self.remote:
      self._content = bytearray(read_bytes(self.path) if isfile(self.path) else b"")
      self._dirty, self._last_flush = False, time.monotonic()
    else:
      self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

  def append(self, data: bytes) -> None:
    """Appends one record (written at once locally; at the next flush remotely)."""
    if self.remote:
      self._content += data
      self._dirty = True
      return
    written = os.write(self._fd, data)
    if written != len(data):
      raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes): disk full?")

  def flush_due(self) -> bool:
    """Whether a flush is cheap or due: always locally, after `flush_every_s` remotely."""
    return not self.remote or time.monotonic() - self._last_flush >= self.flush_every_s

  def flush(self) -> None:
    """Makes every appended record durable (remotely: rewrites the object if anything changed)."""
    if self.remote and self._dirty:
      write_atomic(self.path, bytes(self._content))
      self._dirty = False
    if self.remote:
      self._last_flush = time.monotonic()

  def close(self) -> None:
    """Flushes and releases the file."""
    if self.remote:
      self.flush()
    else:
      os.close(self._fd)
