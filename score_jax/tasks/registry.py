"""The task registry: every task the trainer can run is one `TaskSpec` registered by name.

Owns `TaskSpec` (how a task loads, prompts, instructs, extracts answers and is rewarded), the
registry itself and its lookup errors. A spec is registered under a plain name (`math`) or as a
family answering every `<prefix>:<variant>` name (`procedural:chain_sum`), built on demand by
the family's factory. The built-ins register in `score_jax.tasks.builtin`; any other module
registers its own task when imported (the laptop testbed's `score_jax.testbed.task`), so an
experiment config that uses such a task imports that module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from score_jax.data import records

KINDS = ("math", "code")

# (split, path or None, size) -> examples. `size` is how many problems a generated task makes
# per split; loaders of fixed datasets ignore it (and a single-split dataset ignores `split`).
Loader = Callable[[str, str | None, int], list[records.Example]]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """Everything the trainer needs to know about one task.

  Attributes:
    name: the name configs use (`data.task`), e.g. "math" or "procedural:chain_sum".
    kind: "math" (final-answer checks) or "code" (unit tests); picks the answer comparison.
    load: the task's examples of a split (see `Loader`).
    first_turn: the first user message of an example, given the task's few-shot examples.
    correction: the self-correction instruction appended after every attempt but the last.
    final_answer: the final answer (math) or program (code) of an attempt, for answer changes.
    reward_item: the reward-pool item (verifier name, args) of an attempt; pool-scored tasks.
    host_check: whether an attempt is correct, computed on the host; tasks too cheap to ship to
      the pool. Exactly one of `reward_item` and `host_check` is set.
    load_shots: the few-shot examples shown in every first turn (None: zero-shot).
    self_refine: Self-Refine's critique-then-revise second-turn prompt ("" = the kind's).
  """

  name: str
  kind: str
  load: Loader
  first_turn: Callable[[records.Example, Sequence[records.Example]], str]
  correction: str
  final_answer: Callable[[str], str | None]
  reward_item: Callable[[records.Example, str], tuple[str, tuple]] | None = None
  host_check: Callable[[records.Example, str], bool] | None = None
  load_shots: Callable[[], list[records.Example]] | None = None
  self_refine: str = ""

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"task {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
    if (self.reward_item is None) == (self.host_check is None):
      raise ValueError(f"task {self.name!r}: set exactly one of reward_item and host_check")


class UnknownTaskError(ValueError):
  """A task name nothing registered; the message lists the registered names."""


_TASKS: dict[str, TaskSpec] = {}
# prefix -> (factory(variant) -> spec, what a variant is: shown in the list of names)
_FAMILIES: dict[str, tuple[Callable[[str], TaskSpec], str]] = {}


def register(spec: TaskSpec, replace: bool = False) -> TaskSpec:
  """Registers a task under `spec.name`; a second registration of a name is an error."""
  if ":" in spec.name:
    raise ValueError(f"task {spec.name!r}: ':' is reserved for families (register_family)")
  if spec.name in _TASKS and not replace:
    raise ValueError(f"task {spec.name!r} is already registered")
  _TASKS[spec.name] = spec
  return spec


def register_family(
  prefix: str,
  make_spec: Callable[[str], TaskSpec],
  variant: str = "variant",
  replace: bool = False,
) -> None:
  """Registers `make_spec(v)` as the spec of every `<prefix>:<v>` name; `variant` names v."""
  if not prefix or ":" in prefix:
    raise ValueError(f"task family prefix must be non-empty without ':', got {prefix!r}")
  if prefix in _FAMILIES and not replace:
    raise ValueError(f"task family {prefix!r} is already registered")
  _FAMILIES[prefix] = (make_spec, variant)


def unregister(name: str) -> None:
  """Removes a task or a family (`<prefix>:`); for tests that register throwaway tasks."""
  if name.endswith(":"):
    _FAMILIES.pop(name[:-1], None)
  else:
    _TASKS.pop(name, None)


def registered_names() -> tuple[str, ...]:
  """Plain task names, then one `<prefix>:<variant>` pattern per family."""
  return tuple(sorted(_TASKS)) + tuple(f"{p}:<{v}>" for p, (_, v) in sorted(_FAMILIES.items()))


def is_registered(name: str) -> bool:
  try:
    get_spec(name)
  except UnknownTaskError:
    return False
  return True


def get_spec(name: str) -> TaskSpec:
  """The spec of a task name; UnknownTaskError lists the registered names and how to add one."""
  if not isinstance(name, str):
    raise UnknownTaskError(f"task name must be a string, got {name!r}")
  if name in _TASKS:
    return _TASKS[name]
  prefix, sep, variant = name.partition(":")
  if sep and variant and prefix in _FAMILIES:
    return _FAMILIES[prefix][0](variant)
  raise UnknownTaskError(
    f"unknown task {name!r}; registered: {', '.join(registered_names())}. A task outside these "
    "registers itself with score_jax.tasks.register(TaskSpec(...)) when the module defining it is "
    "imported: import that module first (e.g. from the experiment config)."
  )
