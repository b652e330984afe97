"""One preflight: compile every program of a run for a target and estimate its step time.

The estimate is a roofline, stated as such: an update takes its analytic FLOPs at an assumed
MFU (full rematerialization recomputes the policy's forward: 1.25x the work); a decode step
takes the longer of its FLOPs at that MFU and reading its per-device arguments (KV cache) and
the weights its matmuls use at the chip's HBM bandwidth, plus, when FSDP-sharded weights are
gathered in every step (`rollout.weight_gather=per_step`), moving them over the interconnect;
prefill and append are FLOP-bound. Reward checking and host work are not included.
"""

import dataclasses
from collections.abc import Sequence

from score_jax.parallel.targets import Target
from score_jax.preflight import analysis, programs

REMAT_WORK = {"full": 1.25, "nothing_saveable": 1.25}  # others recompute no matmul
DEFAULT_MFU = 0.4


@dataclasses.dataclass
class Outcome:
  program: programs.Program
  compiled: analysis.Compiled | None = None
  oom: str = ""  # the compiler's text (or our peak check) when it does not fit
  skipped: str = ""  # why it was not compiled

  @property
  def ok(self) -> bool:
    return self.compiled is not None


@dataclasses.dataclass
class Report:
  target: Target
  run: programs.RunPrograms
  outcomes: list[Outcome]
  mfu: float

  @property
  def fits(self) -> bool:
    return all(o.ok for o in self.outcomes)

  def outcome(self, name: str) -> Outcome | None:
    return next((o for o in self.outcomes if o.program.name == name), None)

  def seconds(self, name: str) -> float | None:
    """Estimated seconds of one call of program `name` (None if it did not compile)."""
    o = self.outcome(name)
    if o is None or not o.ok:
      return None
    chip, cfg = self.target.chip, self.run.model_cfg
    if name.startswith("update:"):
      work = o.program.model_flops * REMAT_WORK.get(cfg.remat_policy, 1.0)
      return work / (self.target.num_devices * chip.peak_bf16_flops * self.mfu)
    devices = self.run.sampler_mesh.devices.size  # one process's devices sample its rows
    compute = o.program.model_flops / (devices * chip.peak_bf16_flops * self.mfu)
    if name == "sampler:decode":  # arguments and the weights each step reads
      steps, w = self.run.shapes.gen_len, o.program.step_weights
      per_step = o.compiled.argument_bytes + (w["read"] - w["args"] if w else 0)
      gather = w["gather"] / chip.interconnect_bandwidth if w else 0.0
      return max(compute, steps * (per_step / chip.hbm_bandwidth + gather))
    return compute

  def step_seconds(self) -> float | None:
    """Sampling (every attempt, every chunk of prompts) + the final phase's update."""
    s = self.run.shapes
    names = ["sampler:prefill", "sampler:append", "sampler:decode"]
    parts = [self.seconds(n) for n in names]
    updates = [o.program.name for o in self.outcomes if o.program.name.startswith("update:")]
    update = self.seconds(updates[-1]) if updates else 0.0
    if None in parts or update is None:
      return None
    prefill, append, decode = parts
    per_call = prefill + (s.num_attempts - 1) * append + s.num_attempts * decode
    return s.sampler_calls * per_call + update


def preflight(
  config,
  target: Target,
  devices: Sequence,
  which=("sampler", "update"),
  mfu=DEFAULT_MFU,
  last_phase_only=False,
  host_devices=None,
) -> Report:
  """Lowers and compiles each program; an OOM is recorded, not raised (the CLI exits 2)."""
  run = programs.build(config, devices, which, last_phase_only, host_devices)
  outcomes, executables = [], {}
  for program in run.programs:
    needs = program.needs
    if needs and not any(o.ok for o in outcomes if o.program.name == needs):
      outcomes.append(Outcome(program, skipped=f"needs {needs}'s output layout; it did not fit"))
      continue
    try:
      lowered = program.lower(executables)
      compiled = analysis.compile_program(
        program.name, lowered, target, executables, program.resident_bytes
      )
      outcomes.append(Outcome(program, compiled))
    except analysis.OutOfMemory as err:
      outcomes.append(Outcome(program, oom=str(err)))
  return Report(target, run, outcomes, mfu)
