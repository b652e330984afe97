"""`python -m score_jax.preflight.plan`: the paper's models x slices, each searched with --suggest.

  pip install -e '.[aot,cuda]'    # libtpu; jax[cuda12] (~5 GB) for the H100 / H200 columns
  python -m score_jax.preflight.plan --cells_dir=/tmp/plan --out=plan.md     # every cell
  python -m score_jax.preflight.plan --models=gemma2-2b --targets=v5e-16,v5p-8
  python -m score_jax.preflight.plan --resident_only    # what stays beside the sampler (seconds)

Each cell is `experiments/score_math.py` (the paper's MATH shapes: 512 episodes per update,
prompts up to 1024 tokens, two attempts of up to 1024) with the cell's preset, searched for the
cheapest fitting (remat, micro-batches, prompts per sampler call). Each cell runs in its own
process and is saved to --cells_dir, so an interrupted plan resumes; on 2 CPU cores the 45
cells took about 2 hours. The MBPP column reuses the cell's plan at 128 episodes per update:
the same micro-batch and sampler-call shapes, so the same per-device memory, a quarter of the
update and of the sampler calls (at least one). Hours = steps x the roofline step estimate
(`run.py`; rewards and host work not included).
"""

import datetime
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import time

from absl import app, flags

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compile-only (see preflight/__main__.py)

from score_jax.parallel import targets
from score_jax.preflight import devices, programs, suggest
from score_jax.trainer import setup

MODELS = ("gemma-2b", "gemma-7b", "gemma2-2b", "gemma2-9b", "gemma3-4b")
MATH_STEPS, MBPP_STEPS, MBPP_EPISODES = 3000, 1500, 128
EXPERIMENT = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "score_math.py")

_MODELS = flags.DEFINE_list("models", list(MODELS), "presets")
_TARGETS = flags.DEFINE_list("targets", targets.known_names(), "targets (see --topology)")
_MFU = flags.DEFINE_float("mfu", 0.4, "assumed MFU for the estimates")
_OUT = flags.DEFINE_string("out", "", "write the markdown table here too")
_CELLS = flags.DEFINE_string(
  "cells_dir", "/tmp/score_jax_plan", "one JSON per finished cell; a rerun skips them"
)
_ONE = flags.DEFINE_string("one_cell", "", "internal: MODEL,TARGET run in this process")
_RENDER = flags.DEFINE_bool("render_only", False, "only tabulate the cells already in cells_dir")
_RESIDENT = flags.DEFINE_bool(
  "resident_only",
  False,
  "only what the run keeps on each device beside the sampler (no compiling: seconds per cell)",
)


def paper_config(preset: str):
  """experiments/score_math.py with `preset` (no checkpoint is read: shapes only)."""
  spec = importlib.util.spec_from_file_location("score_math", EXPERIMENT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("")
  config.model.preset = preset
  config.model.chat_template = "gemma"
  return config


def mbpp_hours(report) -> float | None:
  """The cell's plan at MBPP's 128 episodes: 1/4 of the update, ceil(calls / 4) sampler calls."""
  step = report.step_seconds()
  if step is None:
    return None
  s = report.run.shapes
  updates = [o.program.name for o in report.outcomes if o.program.name.startswith("update:")]
  update = report.seconds(updates[-1])
  sampling = (step - update) / s.sampler_calls
  scale = MBPP_EPISODES / s.global_batch
  calls = max(1, -(-int(s.sampler_calls * scale) // 1))
  return MBPP_STEPS * (calls * sampling + update * scale) / 3600


def cell(preset: str, target_name: str, mfu: float) -> dict:
  target = targets.parse(target_name)
  row = {"model": preset, "target": target_name}
  config = paper_config(preset)
  t0 = time.perf_counter()
  try:
    devs, host = devices.topology_devices(target), devices.host_devices(target)
    plans, tried = suggest.search(config, target, devs, ("update", "sampler"), mfu, host)
  except ValueError as err:  # e.g. fewer prompts than hosts
    row["note"] = str(err).splitlines()[0]
    return row
  row["search_s"], row["tried"] = time.perf_counter() - t0, len(tried)
  row["usable"] = target.chip.usable_bytes
  for part, plan in plans.items():
    if plan is None:
      last = next(t for t in reversed(tried) if t.knobs.keys() <= _KNOBS[part])
      row[f"{part}_note"] = f"nothing fits ({describe_short(last)})"
      continue
    peak = max(o.compiled.total_bytes for o in plan.report.outcomes)
    row[f"{part}_peak"] = peak
    row.update({k.split(".")[1]: v for k, v in plan.knobs.items()})
  both = suggest.combine(plans, mfu)
  if both is not None:
    step = both.report.step_seconds()
    row.update(step_s=step, math_hours=MATH_STEPS * step / 3600, mbpp_hours=mbpp_hours(both.report))
  return row


_KNOBS = {
  "update": {"model.remat_policy", "train.num_microbatches"},
  "sampler": {"rollout.prompts_per_call", "rollout.weight_gather"},
}


def describe_short(tried) -> str:
  """The last candidate tried and how far it was from fitting (the compiler's figure)."""
  knobs = ", ".join(f"{k.split('.')[1]}={v}" for k, v in tried.knobs.items())
  need = re.search(r"temporaries \(([\d.]+G)\) exceeds", tried.result)
  program = tried.result.split(":")[0]
  return f"{knobs}: {program} needs {need.group(1)} of temporaries" if need else knobs


def markdown(rows: list[dict], mfu: float) -> str:
  try:
    version = importlib.metadata.version("libtpu")
  except importlib.metadata.PackageNotFoundError:
    version = "not installed"
  g = 2**30
  lines = [
    f"Generated {datetime.date.today()} by `python -m score_jax.preflight.plan` (libtpu "
    f"{version}; estimates at an assumed {mfu:.0%} MFU, rewards and host work not included). "
    "Peaks are per device, from the compiler (TPU: libtpu; GPU: XLA's CUDA compiler for a "
    "written H100 / H200 description), against the usable memory.",
    "",
    "| model | target | update: remat, micro-batches | update peak GiB "
    "| sampler: prompts / call / host | sampler peak GiB | est. step s | MATH 3000 steps, h "
    "| MBPP 1500 steps, h |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ]
  for r in rows:
    if "note" in r:
      lines.append(f"| {r['model']} | {r['target']} | {r['note']} | | | | | | |")
      continue
    usable = r["usable"] / g
    if "update_peak" in r:
      update = f"{r['remat_policy']}, {r['num_microbatches']}"
      update_peak = f"{r['update_peak'] / g:.1f} / {usable:.1f}"
    else:
      update, update_peak = _short(r["update_note"]), "-"
    if "sampler_peak" in r:
      sampler = str(r["prompts_per_call"])
      if r.get("weight_gather") == "per_step":  # the per-call copy of the weights did not fit
        sampler += ", weights gathered per step"
      sampler_peak = f"{r['sampler_peak'] / g:.1f} / {usable:.1f}"
    else:
      sampler, sampler_peak = _short(r["sampler_note"]), "-"
    if "step_s" in r:
      mbpp = f"{r['mbpp_hours']:.0f}" if r["mbpp_hours"] is not None else "-"
      est = f"{r['step_s']:.0f} | {r['math_hours']:.0f} | {mbpp}"
    else:
      est = "- | - | -"
    lines.append(
      f"| {r['model']} | {r['target']} | {update} | {update_peak} | {sampler} | {sampler_peak} "
      f"| {est} |"
    )
  return "\n".join(lines)


def resident_markdown(models, target_names) -> str:
  """Per cell, what stays on each device beside the sampler's programs (`programs.resident`).

  No compiling. A GPU target without JAX's CUDA plugin takes this process's CPU devices for
  its mesh (the bytes depend on the mesh's shape, not the chip): run with
  XLA_FLAGS=--xla_force_host_platform_device_count=8.
  """
  import jax  # noqa: PLC0415

  lines = ["| model | target | resident while sampling, GiB per device | what |"]
  lines.append("| --- | --- | --- | --- |")
  for preset in models:
    for name in target_names:
      target, config = targets.parse(name), paper_config(preset)
      try:
        devs = devices.topology_devices(target)
      except devices.MissingCompiler:
        if target.num_hosts > 1 or len(jax.devices()) < target.num_devices:
          lines.append(f"| {preset} | {name} | - | needs the CUDA plugin or 8 CPU devices |")
          continue
        devs = jax.devices()[: target.num_devices]
      mesh, sampler_mesh = setup.make_meshes(config, devs)
      model_cfg = programs.model_config(config)
      kept, what = programs.resident(config, model_cfg, mesh, sampler_mesh)
      lines.append(f"| {preset} | {name} | {kept / 2**30:.1f} | {what} |")
  return "\n".join(lines)


def _short(note: str) -> str:
  """A refusal without the compiler's figure (cut off) reads 'PROGRAM out of HBM'."""
  return re.sub(r": RESOURCE_EXHAUSTED: Ran out of memory on HBM.*?(\)|$)", " out of HBM)", note)


def _cell_in_subprocess(preset: str, name: str) -> dict:
  """A compiler CHECK failure aborts its process: each cell runs in its own, and a crash is
  recorded in the table instead of ending the plan."""
  path = os.path.join(_CELLS.value, f"{preset}_{name}.json")
  if not os.path.exists(path) and _RENDER.value:
    return {"model": preset, "target": name, "note": "not computed"}
  if not os.path.exists(path):
    cmd = [sys.executable, "-m", "score_jax.preflight.plan", f"--one_cell={preset},{name}"]
    cmd += [f"--mfu={_MFU.value}", f"--cells_dir={_CELLS.value}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if not os.path.exists(path):
      lines = proc.stderr.strip().splitlines() or ["no output"]
      crashed = proc.returncode in (-6, 134)  # SIGABRT: a CHECK failure inside the compiler
      last = next((x for x in lines if x.startswith("F1")), lines[-1]) if crashed else lines[-1]
      what = "compiler crashed" if crashed else f"failed (exit {proc.returncode})"
      return {"model": preset, "target": name, "note": f"{what}: {last[:200]}"}
  with open(path) as f:
    return json.load(f)


def main(argv) -> None:
  del argv
  if _RESIDENT.value:
    print(resident_markdown(_MODELS.value, _TARGETS.value))
    return
  os.makedirs(_CELLS.value, exist_ok=True)
  if _ONE.value:
    preset, name = _ONE.value.split(",")
    row = cell(preset, name, _MFU.value)
    with open(os.path.join(_CELLS.value, f"{preset}_{name}.json"), "w") as f:
      json.dump(row, f)
    return
  rows = []
  for preset in _MODELS.value:
    for name in _TARGETS.value:
      row = _cell_in_subprocess(preset, name)
      print(f"plan: {preset} on {name}: {row.get('note') or 'done'}", file=sys.stderr, flush=True)
      rows.append(row)
  table = markdown(rows, _MFU.value)
  print(table)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(table + "\n")


if __name__ == "__main__":
  app.run(main)
