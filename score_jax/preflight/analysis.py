"""Compiling one lowered program for real chips and reading what the compiler says about it.

Per device: argument, output, aliased (donated inputs reused as outputs), temporary and code
bytes, and the peak. The TPU compiler refuses a program that does not fit (RESOURCE_EXHAUSTED,
in seconds); the GPU compiler does not, so the peak is compared with the chip's usable memory
here, for both. Collectives are counted in the optimized HLO text.
"""

import dataclasses
import re
import time
from typing import Any

from score_jax.parallel.targets import Target

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
# The op after its result type (`... = bf16[8,4] all-gather(`, `... = (f32[2], f32[2])
# reduce-scatter(`); async pairs count once, at their -start.
_COLLECTIVE_RE = re.compile(r"\s(" + "|".join(COLLECTIVES) + r")(?:-start)?\(")
WARN_FRACTION = 0.9  # above this share of usable memory a program is flagged


class OutOfMemory(Exception):
  """A program does not fit a device: the compiler's own text, or our peak vs capacity."""


@dataclasses.dataclass(frozen=True)
class Compiled:
  name: str
  compile_s: float
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  code_bytes: int
  peak_bytes: int
  usable_bytes: int
  xla_flops: float  # per device, loop bodies counted once
  collectives: dict[str, int]
  loop_collectives: dict[str, int]  # the part of `collectives` inside while loops
  resident_bytes: int = 0  # kept on the device beside the program (`programs.resident`)

  @property
  def total_bytes(self) -> int:
    """The program's peak plus what the run keeps resident beside it."""
    return self.peak_bytes + self.resident_bytes

  @property
  def fraction(self) -> float:
    return self.total_bytes / self.usable_bytes

  @property
  def fits(self) -> bool:
    return self.total_bytes <= self.usable_bytes


def is_oom_error(err: BaseException) -> bool:
  text = str(err)
  return "RESOURCE_EXHAUSTED" in text or "Ran out of memory" in text or "out of memory" in text


def count_collectives(hlo_text: str, *, in_loops: bool = False) -> dict[str, int]:
  """Collectives in an HLO module's text; `in_loops`: only those inside while loops (bodies,
  conditions and what they call), which run on every iteration: in a decode loop, every
  token (e.g. FSDP weights gathered per step, `rollout.weight_gather`)."""
  if in_loops:
    computations = _computations(hlo_text)
    hlo_text = "\n".join(
      line for name in _loop_computations(computations) for line in computations[name]
    )
  counts = dict.fromkeys(COLLECTIVES, 0)
  for m in _COLLECTIVE_RE.finditer(hlo_text):
    counts[m.group(1)] += 1
  return {k: v for k, v in counts.items() if v}


_COMPUTATION_RE = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*\{\s*$")
_CALLS_RE = re.compile(r"(?:body|condition|calls|to_apply)=%([\w.\-]+)")
_BRANCHES_RE = re.compile(r"branch_computations=\{([^}]*)\}")


def _computations(hlo_text: str) -> dict[str, list[str]]:
  """Computation name -> its instruction lines."""
  out, current = {}, None
  for line in hlo_text.splitlines():
    header = _COMPUTATION_RE.match(line)
    if header:
      current = out.setdefault(header.group(1), [])
    elif line.startswith("}"):
      current = None
    elif current is not None:
      current.append(line)
  return out


def _loop_computations(computations: dict[str, list[str]]) -> set[str]:
  """The computations a while loop runs: its body and condition, and all they call."""

  def called(lines):
    for line in lines:
      yield from _CALLS_RE.findall(line)
      for branches in _BRANCHES_RE.findall(line):
        yield from re.findall(r"%([\w.\-]+)", branches)

  todo = [
    name
    for lines in computations.values()
    for line in lines
    if " while(" in line
    for name in re.findall(r"(?:body|condition)=%([\w.\-]+)", line)
  ]
  seen = set()
  while todo:
    name = todo.pop()
    if name not in seen and name in computations:
      seen.add(name)
      todo.extend(called(computations[name]))
  return seen


def _peak(mem) -> int:
  peak = int(getattr(mem, "peak_memory_in_bytes", 0) or 0)
  if peak:
    return peak
  return (
    mem.argument_size_in_bytes
    + mem.output_size_in_bytes
    - mem.alias_size_in_bytes
    + mem.temp_size_in_bytes
    + mem.generated_code_size_in_bytes
  )


def compile_program(
  name: str,
  lowered: Any,
  target: Target,
  executables: dict | None = None,
  resident_bytes: int = 0,
) -> Compiled:
  """Compiles `lowered` for `target`; raises OutOfMemory (the compiler's text, or ours).

  The executable goes into `executables[name]` (later programs read its output layout).
  `resident_bytes`: per device, what stays on the device beside the program (the compiler
  cannot see it); it counts against the usable memory with the program's peak.
  """
  t0 = time.perf_counter()
  try:
    compiled = lowered.compile()
  except Exception as err:  # jax raises XlaRuntimeError (a RuntimeError) from the compiler
    if is_oom_error(err):
      raise OutOfMemory(f"{name}: the {target.chip.name} compiler refused it:\n{err}") from err
    raise
  seconds = time.perf_counter() - t0
  if executables is not None:
    executables[name] = compiled
  mem = compiled.memory_analysis()
  text = compiled.as_text()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  result = Compiled(
    name=name,
    compile_s=seconds,
    argument_bytes=mem.argument_size_in_bytes,
    output_bytes=mem.output_size_in_bytes,
    alias_bytes=mem.alias_size_in_bytes,
    temp_bytes=mem.temp_size_in_bytes,
    code_bytes=mem.generated_code_size_in_bytes,
    peak_bytes=_peak(mem),
    usable_bytes=target.chip.usable_bytes,
    xla_flops=float((cost or {}).get("flops", 0.0)),
    collectives=count_collectives(text),
    loop_collectives=count_collectives(text, in_loops=True),
    resident_bytes=resident_bytes,
  )
  if not result.fits:
    raise OutOfMemory(
      f"{name}: peak {result.peak_bytes / 2**30:.2f} + resident "
      f"{result.resident_bytes / 2**30:.2f} GiB per device > usable "
      f"{result.usable_bytes / 2**30:.2f} GiB on {target.chip.name} (args "
      f"{result.argument_bytes / 2**30:.2f}, temps {result.temp_bytes / 2**30:.2f} GiB)"
    )
  return result
