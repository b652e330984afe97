"""The checkpoint error type and the key/shape validation every importer runs before loading.

Importers (HF safetensors, the Gemma Flax/Orbax layout, GGUF) first compare the tensors a
checkpoint holds with the tensors the target ModelConfig needs, and raise ONE `CheckpointError`
per kind of problem (missing keys, unexpected keys, shape mismatches), listing every offender, so
a wrong checkpoint/config pair fails before any memory is spent.
"""

from collections.abc import Callable, Iterable, Mapping

# Long key lists are cut after this many entries (the count is always complete).
_MAX_LISTED = 30


class CheckpointError(ValueError):
  """A checkpoint does not match the expected layout, config or file format."""


def _listing(keys: Iterable[str]) -> str:
  keys = sorted(keys)
  shown = ", ".join(keys[:_MAX_LISTED])
  more = len(keys) - _MAX_LISTED
  return shown + (f", ... and {more} more" if more > 0 else "")


def check_keys(
  expected: Mapping[str, tuple[int, ...]],
  found: Mapping[str, tuple[int, ...]],
  source: str,
  *,
  ignore: Callable[[str], bool] = lambda key: False,
) -> None:
  """Raises CheckpointError if `found` (key -> shape) does not match `expected` exactly.

  Args:
    expected: every tensor the target needs, with its shape in the checkpoint's own layout.
    found: every tensor the checkpoint holds.
    source: what to name in the message (a file or directory).
    ignore: keys of `found` that may be present without being expected (e.g. vision towers).
  """
  missing = [k for k in expected if k not in found]
  if missing:
    raise CheckpointError(f"{source}: {len(missing)} missing tensor(s): {_listing(missing)}")
  extra = [k for k in found if k not in expected and not ignore(k)]
  if extra:
    raise CheckpointError(f"{source}: {len(extra)} unexpected tensor(s): {_listing(extra)}")
  bad = [
    f"{k} (expected {tuple(expected[k])}, found {tuple(found[k])})"
    for k in sorted(expected)
    if tuple(found[k]) != tuple(expected[k])
  ]
  if bad:
    raise CheckpointError(f"{source}: {len(bad)} shape mismatch(es): " + "; ".join(bad))


def check_shape(key: str, expected: tuple[int, ...], found: tuple[int, ...], source: str) -> None:
  """Per-tensor form of the shape check, for readers that cannot list shapes up front."""
  if tuple(found) != tuple(expected):
    raise CheckpointError(
      f"{source}: 1 shape mismatch(es): {key} (expected {tuple(expected)}, found {tuple(found)})"
    )
