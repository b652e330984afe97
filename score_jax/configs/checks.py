"""The field checks every validator is built from, and the error they raise.

Owns `ConfigError` and `require`: a check of one field by its dotted path whose error names the
field (`config.optim.lr = -1: expected a finite number > 0.`), so a user fixes the right line.
"""

from collections.abc import Callable, Sequence
from typing import Any

import ml_collections


class ConfigError(ValueError):
  """A config field has a value that cannot work; the message names the field."""


def get(config: ml_collections.ConfigDict, path: str) -> Any:
  """The value at a dotted path, e.g. "rollout.max_new_tokens"."""
  node = config
  for part in path.split("."):
    node = node[part]
  return node


def require(config, path: str, ok: Callable[[Any], bool], expected: str) -> Any:
  """The value at `path` if `ok(value)`, else ConfigError naming the field and `expected`."""
  value = get(config, path)
  if not ok(value):
    raise ConfigError(f"config.{path} = {value!r}: expected {expected}.")
  return value


def is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)  # True is an int to Python, not to us


def is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def positive_ints(v) -> bool:
  """A non-empty sequence of ints > 0 (the bucket tuples)."""
  return isinstance(v, Sequence) and len(v) > 0 and all(is_int(x) and x > 0 for x in v)
