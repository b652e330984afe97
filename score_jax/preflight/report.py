"""The preflight's printed tables and JSON."""

from score_jax.preflight import analysis, run

GIB = 2**30


def _gib(n: int) -> str:
  """GiB with two decimals; MiB below 0.1 GiB (tiny presets), so small buffers do not read 0."""
  return f"{n / GIB:.2f}" if n >= GIB / 10 else f"{n / 2**20:.1f} MiB"


def _collectives(c: analysis.Compiled) -> str:
  counts = lambda d: ", ".join(f"{k} x{v}" for k, v in d.items()) or "none"
  return f"{counts(c.collectives)} (in loops: {counts(c.loop_collectives)})"


def format_report(r: run.Report) -> str:
  t, rp = r.target, r.run
  cfg = rp.model_cfg
  lines = [
    f"target {t.name}: {t.num_devices} x {t.chip.name} ({t.topology}, {t.num_hosts} host(s)), "
    f"usable {_gib(t.chip.usable_bytes)} GiB per device",
    f"model {cfg.family} d={cfg.embed_dim} L={cfg.num_layers} v={cfg.vocab_size} "
    f"dtype={cfg.dtype} params={cfg.param_dtype} remat={cfg.remat_policy}; mesh "
    f"{dict(rp.mesh.shape)}, sampler mesh {dict(rp.sampler_mesh.shape)} per process",
    "",
    "| program | shapes | compile s | args | outputs | aliased | temps | resident "
    "| peak / usable GiB | model TFLOP | XLA TFLOP | collectives | est. s |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ]
  warnings = []
  for o in r.outcomes:
    p = o.program
    if not o.ok:
      why = "does not fit" if o.oom else o.skipped
      lines.append(f"| {p.name} | {p.what} | - | - | - | - | - | - | **{why}** | - | - | - | - |")
      continue
    c = o.compiled
    devices = t.num_devices if p.name.startswith("update:") else rp.sampler_mesh.devices.size
    xla = f"{c.xla_flops * devices / 1e12:.1f}" + (" (lower bound: loops)" if p.has_loops else "")
    est = r.seconds(p.name)
    lines.append(
      f"| {p.name} | {p.what} | {c.compile_s:.1f} | {_gib(c.argument_bytes)} | "
      f"{_gib(c.output_bytes)} | {_gib(c.alias_bytes)} | {_gib(c.temp_bytes)} | "
      f"{_gib(c.resident_bytes)} | {_gib(c.total_bytes)} / {_gib(c.usable_bytes)} "
      f"({c.fraction:.0%}) | "
      f"{p.model_flops / 1e12:.1f} | {xla} | {_collectives(c)} | {est:.2f} |"
    )
    if c.fraction > analysis.WARN_FRACTION:
      warnings.append(f"WARNING {p.name}: peak {c.fraction:.0%} of usable memory (> 90%)")
    if p.donates and c.alias_bytes == 0:
      warnings.append(f"WARNING {p.name}: donates its state but no output aliases it")
  kept = {o.program.name.split(":")[0]: o.program.resident_what for o in r.outcomes}
  lines += [
    "",
    "peak: the program's own peak (arguments, outputs, temporaries) plus `resident`, what the "
    "run keeps on each device beside it ("
    + "; ".join(f"{k}: {v or 'nothing'}" for k, v in kept.items())
    + ")",
  ]
  lines += warnings
  for o in r.outcomes:
    if o.oom:
      lines += [f"{o.program.name} does not fit:", o.oom, ""]
  step = r.step_seconds()
  s = rp.shapes
  if step is not None:
    lines.append(
      f"estimated step: {step:.1f} s at MFU {r.mfu:.0%} ({s.sampler_calls} sampler call(s) of "
      f"{s.sampler_rows} rows per process x {s.num_attempts} attempts, then the update; "
      "rewards and host work not included)"
    )
  return "\n".join(lines)


def format_search(tried) -> str:
  lines = ["| candidate | est. s | result |", "| --- | --- | --- |"]
  for t in tried:
    lines.append(
      f"| {' '.join(f'{k}={v}' for k, v in t.knobs.items())} | {t.estimate_s:.2f} | {t.result} |"
    )
  return "\n".join(lines)


def as_dict(r: run.Report) -> dict:
  out = {
    "target": r.target.name,
    "num_devices": r.target.num_devices,
    "mfu": r.mfu,
    "fits": r.fits,
    "step_seconds": r.step_seconds(),
    "programs": {},
  }
  for o in r.outcomes:
    entry = {"shapes": o.program.what, "model_flops": o.program.model_flops}
    if o.ok:
      c = o.compiled
      entry.update(
        compile_s=c.compile_s,
        argument_bytes=c.argument_bytes,
        output_bytes=c.output_bytes,
        alias_bytes=c.alias_bytes,
        temp_bytes=c.temp_bytes,
        peak_bytes=c.peak_bytes,
        resident_bytes=c.resident_bytes,
        total_bytes=c.total_bytes,
        usable_bytes=c.usable_bytes,
        xla_flops_per_device=c.xla_flops,
        collectives=c.collectives,
        loop_collectives=c.loop_collectives,
        estimated_s=r.seconds(o.program.name),
      )
    else:
      entry["error"] = o.oom or o.skipped
    out["programs"][o.program.name] = entry
  return out
