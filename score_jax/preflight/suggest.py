"""`--suggest`: the cheapest plan that fits, by compiling candidates cheapest first.

Knobs: the update's micro-batches (`train.num_microbatches`) and remat policy
(`model.remat_policy`), and the sampler's prompts per call (`rollout.prompts_per_call`) and,
with FSDP-sharded weights on one process, when its decode loop gathers them
(`rollout.weight_gather`). The update and the sampler are separate programs, so each is
searched on its own.

Candidates are ranked before anything compiles, by the roofline of `run.py` plus, per
micro-batch, one all-gather of the FSDP-sharded weights (forward and backward) over the
interconnect; the cheapest candidate that compiles within memory is the answer. Within one
remat policy, fewer micro-batches (or more prompts per sampler call) are cheaper and need more
memory, so a binary search finds each policy's cheapest fit (`_cheapest`). A TPU compile that
does not fit fails in seconds; a GPU compile always runs to the end, hence the search.
"""

import copy
import dataclasses
import sys
from collections.abc import Sequence

from score_jax.models import decoder
from score_jax.parallel import mesh as mesh_lib
from score_jax.parallel.targets import Target
from score_jax.preflight import programs, run
from score_jax.trainer import setup as setup_lib

REMAT_CANDIDATES = ("dots_with_no_batch_dims_saveable", "full")


@dataclasses.dataclass
class Plan:
  knobs: dict
  report: run.Report


@dataclasses.dataclass
class Tried:
  knobs: dict
  estimate_s: float
  result: str  # "fits 71% (12.3 GiB)" / "OOM" / the compiler's first line


def describe(knobs: dict) -> str:
  return " ".join(f"--config.{k}={v}" for k, v in knobs.items())


def _with(config, knobs: dict):
  c = copy.deepcopy(config)
  for key, value in knobs.items():
    section, field = key.split(".")
    c[section][field] = value
  return c


def _microbatch_counts(config, data_shards: int) -> list[int]:
  """Micro-batch counts whose micro-batches still give every batch shard whole rows."""
  rows = config.train.global_batch
  out, mb = [], 1
  while rows % mb == 0 and (rows // mb) % data_shards == 0:
    out.append(mb)
    mb *= 2
  return out


def _gather_seconds(config, target: Target, fsdp: int) -> float:
  """One micro-batch's weight all-gathers (forward + backward) in the compute dtype."""
  if fsdp <= 1:
    return 0.0
  cfg = programs.model_config(config)
  bytes_ = decoder.count_params(cfg) * (2 if cfg.dtype != "float32" else 4)
  return 2 * bytes_ * (fsdp - 1) / fsdp / target.chip.interconnect_bandwidth


def _update_candidates(config, target: Target, devices, mfu: float) -> list[tuple]:
  """(estimated seconds, knobs, group) for every remat policy x micro-batch count."""
  mesh, _ = setup_lib.make_meshes(config, devices)
  shards = mesh_lib.batch_shards(mesh)
  policies = list(dict.fromkeys([config.model.remat_policy, *REMAT_CANDIDATES]))
  probe = programs.build(config, devices, ("update",), last_phase_only=True)
  flops = probe.programs[-1].model_flops
  gather = _gather_seconds(config, target, mesh.shape["fsdp"])
  out = []
  for policy in policies:
    work = flops * run.REMAT_WORK.get(policy, 1.0)
    compute = work / (target.num_devices * target.chip.peak_bf16_flops * mfu)
    for mb in _microbatch_counts(config, shards):
      knobs = {"model.remat_policy": policy, "train.num_microbatches": mb}
      out.append((compute + mb * gather, knobs, policy))
  return sorted(out, key=lambda x: x[0])


def _sampler_candidates(config, target: Target, devices) -> list[tuple]:
  """Prompts per sampler call, all of a host's prompts first, halving while rows split evenly;
  ranked by the number of calls (each reads the weights once per token).

  With FSDP-sharded weights on one process, each count twice: the weights gathered once per
  decode call (`rollout.weight_gather=per_call`: a replica per device while it runs) or in
  every step (`per_step`: less memory; each token's steps then also move the weights over the
  interconnect, which costs HBM bandwidth / interconnect bandwidth times a weight read)."""
  _, sampler_mesh = setup_lib.make_meshes(config, devices)
  shards = mesh_lib.batch_shards(sampler_mesh)
  processes = len({d.process_index for d in devices})
  g = config.rollout.num_samples
  prompts = config.train.global_batch // processes // g
  fsdp = sampler_mesh.shape["fsdp"]
  gathers = {"": 1.0}
  if processes == 1 and fsdp > 1:
    ratio = target.chip.hbm_bandwidth / target.chip.interconnect_bandwidth
    gathers = {"per_call": 1.0, "per_step": 1.0 + ratio * (fsdp - 1) / fsdp}
  out = []
  for gather, cost in gathers.items():
    per_call = prompts
    while per_call >= 1 and (per_call * g) % shards == 0:
      knobs = {"rollout.prompts_per_call": per_call}
      if gather:
        knobs["rollout.weight_gather"] = gather
      out.append((cost * prompts / per_call, knobs, f"sampler {gather}".strip()))
      if per_call % 2:
        break
      per_call //= 2
  return out


def _try(config, target, devices, host, which, estimate, knobs, mfu, tried) -> Plan | None:
  """Compiles one candidate; its Plan if every program fits."""
  print(f"preflight: trying {describe(knobs)} (est. {estimate:.2f} s)", file=sys.stderr, flush=True)
  try:
    report = run.preflight(_with(config, knobs), target, devices, (which,), mfu, True, host)
  except ValueError as err:  # a knob the step's own checks refuse (e.g. uneven micro-batches)
    tried.append(Tried(knobs, estimate, f"invalid: {str(err).splitlines()[0]}"))
    return None
  failed = next((o for o in report.outcomes if not o.ok), None)
  if failed is None:
    peak = max(o.compiled.total_bytes for o in report.outcomes)
    frac = max(o.compiled.fraction for o in report.outcomes)
    tried.append(Tried(knobs, estimate, f"fits: peak {peak / 2**30:.2f} GiB ({frac:.0%})"))
    return Plan(knobs, report)
  first_line = (failed.oom or failed.skipped).strip().splitlines()
  tried.append(Tried(knobs, estimate, f"{failed.program.name}: " + " ".join(first_line[-1:])))
  return None


def _cheapest(config, target, devices, host, which, candidates, mfu, tried) -> Plan | None:
  """The cheapest candidate that fits. Within a group (one remat policy; the sampler is one
  group) a cheaper candidate needs more memory (fewer micro-batches, more prompts per call), so
  fits are monotone: on TPU the group is walked cheapest first (a refusal costs seconds, so
  only the first fit is a full compile); on GPU, where every compile runs to the end, a binary
  search finds the cheapest fit in ~log2(n) compiles. Groups that cannot beat the best so far
  are skipped."""
  groups: dict[str, list] = {}
  for estimate, knobs, group in candidates:
    groups.setdefault(group, []).append((estimate, knobs))
  best = None
  for members in sorted(groups.values(), key=lambda m: min(e for e, _ in m)):
    members.sort(key=lambda m: m[0])
    if best is not None and members[0][0] >= best[0]:
      continue
    found = None
    if target.chip.platform == "tpu":  # refusals cost seconds, fits a full compile: go up
      for member in members:
        plan = _try(config, target, devices, host, which, *member, mfu, tried)
        if plan is not None:
          found = (member[0], plan)
          break
    lo, hi = 0, (len(members) - 1 if target.chip.platform != "tpu" else -1)
    while lo <= hi:  # GPU: every compile runs to the end
      mid = (lo + hi) // 2
      plan = _try(config, target, devices, host, which, *members[mid], mfu, tried)
      if plan is not None:
        found, hi = (members[mid][0], plan), mid - 1
      else:
        lo = mid + 1
    if found is not None and (best is None or found[0] < best[0]):
      best = found
  return None if best is None else best[1]


def search(config, target: Target, devices, which: Sequence[str], mfu: float, host=None):
  """({"update" / "sampler": the cheapest fitting Plan or None}, every candidate tried).

  `host`: one host's devices for the per-process sampler (`devices.host_devices`).
  """
  tried: list[Tried] = []
  plans = {}
  if "update" in which:
    candidates = _update_candidates(config, target, devices, mfu)
    plans["update"] = _cheapest(config, target, devices, host, "update", candidates, mfu, tried)
  if "sampler" in which:
    candidates = _sampler_candidates(config, target, devices)
    plans["sampler"] = _cheapest(config, target, devices, host, "sampler", candidates, mfu, tried)
  return plans, tried


def combine(plans: dict, mfu: float) -> Plan | None:
  """One Plan (knobs and report) from the per-part plans; None unless every part fits."""
  if not plans or any(p is None for p in plans.values()):
    return None
  parts = list(plans.values())
  knobs = {k: v for p in parts for k, v in p.knobs.items()}
  outcomes = [o for p in parts for o in p.report.outcomes]
  run_programs = parts[0].report.run
  if "sampler" in plans:  # its shapes (rows, calls) come from its own search
    s = plans["sampler"].report.run
    run_programs = dataclasses.replace(
      run_programs,
      sampler_mesh=s.sampler_mesh,
      shapes=dataclasses.replace(run_programs.shapes, **_sampler_shape_fields(s.shapes)),
    )
  return Plan(knobs, run.Report(parts[0].report.target, run_programs, outcomes, mfu))


def _sampler_shape_fields(shapes: programs.Shapes) -> dict:
  return {
    "sampler_rows": shapes.sampler_rows,
    "sampler_unique": shapes.sampler_unique,
    "sampler_calls": shapes.sampler_calls,
  }
