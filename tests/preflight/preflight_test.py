"""The preflight compiles the run's real programs for TPU chips that are not here (libtpu).

The slow tests run `python -m score_jax.preflight` as a user would: a tiny preset on a v5e-4
(`v5e:2x2`) compiles the sampler and both SCoRe steps within memory, with donation aliasing the
state and the collectives of an FSDP mesh; the paper-scale update on the same slice does not fit
and exits 2 with the compiler's own text in seconds.
"""

import json
import os
import subprocess
import sys
import time

import jax
import pytest

from score_jax.models import decoder
from score_jax.parallel import targets
from score_jax.preflight import analysis, devices, programs, run, suggest
from score_jax.trainer import setup
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _preflight(*flags, timeout=300):
  cmd = [sys.executable, "-m", "score_jax.preflight", *flags]
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
  return proc, time.perf_counter() - t0


@pytest.mark.slow
def test_tiny_run_compiles_for_v5e_and_fits(tmp_path):
  out = tmp_path / "preflight.json"
  proc, _ = _preflight(
    "--config=experiments/score_math.py:tiny", "--topology=v5e-4", f"--json={out}"
  )
  assert proc.returncode == 0, proc.stdout + proc.stderr
  result = json.loads(out.read_text())
  names = set(result["programs"])
  assert names == {
    "sampler:prefill",
    "sampler:append",
    "sampler:decode",
    "update:stage1",
    "update:stage2",
  }
  for name, p in result["programs"].items():
    assert "error" not in p, (name, p)
    assert p["argument_bytes"] > 0 and p["output_bytes"] > 0 and p["peak_bytes"] > 0, name
    assert p["peak_bytes"] <= p["usable_bytes"], name
    assert p["model_flops"] > 0 and p["estimated_s"] > 0, name
    # The state is donated: the compiler must reuse it for the outputs, not copy it.
    if name != "sampler:prefill":
      assert p["alias_bytes"] > 0, (name, p)
    # Every program runs on a 4-way FSDP mesh: its weights are all-gathered.
    assert p["collectives"].get("all-gather", 0) > 0, (name, p["collectives"])
  # ... once per decode call (rollout.weight_gather=per_call), not in each step of its loop.
  assert "all-gather" not in result["programs"]["sampler:decode"]["loop_collectives"]
  for step in ("update:stage1", "update:stage2"):  # gradients are reduced over the mesh
    assert result["programs"][step]["collectives"].get("all-reduce", 0) > 0
  assert result["fits"] and result["step_seconds"] > 0
  assert "peak / usable" in proc.stdout and "estimated step" in proc.stdout


@pytest.mark.slow
def test_paper_scale_update_on_v5e_exits_2_fast():
  proc, seconds = _preflight(
    "--config=experiments/score_math.py", "--topology=v5e-4", "--programs=update"
  )
  assert proc.returncode == 2, proc.stdout + proc.stderr
  assert "RESOURCE_EXHAUSTED" in proc.stdout and "does not fit" in proc.stdout
  assert seconds < 90  # the TPU compiler refuses it in seconds (startup included)


def test_bad_target_and_missing_flags_exit_1():
  proc, _ = _preflight("--config=experiments/score_math.py:tiny", "--topology=v5e-3")
  assert proc.returncode == 1 and "v5e-3" in proc.stderr and "known: v5e-1, v5e-4" in proc.stderr
  proc, _ = _preflight("--topology=v5e-4")
  assert proc.returncode != 0 and "--config" in proc.stderr


def test_suggest_finds_the_first_fitting_plan_in_cost_order():
  config = helpers.experiment_config("score_math", "tiny")
  target = targets.parse("v5e-4")
  devs = devices.topology_devices(target)
  plans, tried = suggest.search(config, target, devs, ("update",), mfu=0.4)
  plan = plans["update"]
  # The cheapest candidate fits; the binary search over the other policy's micro-batches is
  # skipped because none of them can be cheaper.
  assert plan is not None and tried[-1].result.startswith("fits")
  assert tried[-1].knobs == plan.knobs
  assert plan.knobs["train.num_microbatches"] == 1
  assert plan.knobs["model.remat_policy"] == config.model.remat_policy
  # Candidates are ranked before anything compiles: less recompute, then fewer micro-batches.
  ranked = suggest._update_candidates(config, target, devs, 0.4)
  assert [k for _, k, _ in ranked] == sorted(
    [k for _, k, _ in ranked],
    key=lambda k: (run.REMAT_WORK.get(k["model.remat_policy"], 1.0), k["train.num_microbatches"]),
  )


def test_sampler_candidates_weigh_per_step_gathers_on_one_process_only():
  config = helpers.experiment_config("score_math", "tiny")
  one_host = targets.parse("v5e-4")  # one process, weights FSDP-sharded over 4 chips
  ranked = suggest._sampler_candidates(config, one_host, devices.topology_devices(one_host))
  by_gather = {}
  for cost, knobs, group in ranked:
    by_gather.setdefault(knobs["rollout.weight_gather"], {})[knobs["rollout.prompts_per_call"]] = (
      cost,
      group,
    )
  assert set(by_gather) == {"per_call", "per_step"}
  assert by_gather["per_call"].keys() == by_gather["per_step"].keys()
  chip = one_host.chip
  penalty = 1 + chip.hbm_bandwidth / chip.interconnect_bandwidth * 3 / 4
  for per_call, (cost, group) in by_gather["per_step"].items():
    assert group == "sampler per_step" and by_gather["per_call"][per_call][1] == "sampler per_call"
    assert cost == pytest.approx(penalty * by_gather["per_call"][per_call][0])
  # Several hosts sample from a per-host replica: nothing to gather, no such knob.
  multi = targets.parse("v5e-16")
  config.train.global_batch = 16
  ranked = suggest._sampler_candidates(config, multi, devices.topology_devices(multi))
  assert ranked and all(set(k) == {"rollout.prompts_per_call"} for _, k, _ in ranked)


def test_multi_host_target_compiles_the_per_host_sampler_on_one_host():
  config = helpers.experiment_config("score_math", "tiny")
  config.train.global_batch = 16  # 4 prompts x g=4: one prompt per host
  target = targets.parse("v5e-16")
  devs, host = devices.topology_devices(target), devices.host_devices(target)
  built = programs.build(config, devs, ("sampler",), host_devices=host)
  assert built.num_processes == 4 and built.mesh.devices.size == 16
  assert built.sampler_mesh.devices.size == 4
  assert built.shapes.sampler_rows == 4  # this host's episodes only
  report = run.preflight(config, target, devs, ("sampler",), host_devices=host)
  assert report.fits, [o.oom or o.skipped for o in report.outcomes]


def test_collectives_are_counted_from_hlo_text():
  hlo = """
  %ag = f32[8,4]{1,0} all-gather(f32[2,4]{1,0} %p), dimensions={0}
  %ars = f32[4]{0} all-reduce-start(f32[4]{0} %x), to_apply=%add
  %ard = f32[4]{0} all-reduce-done(f32[4]{0} %ars)
  %rs = (f32[2]{0}, f32[2]{0}) reduce-scatter(f32[8]{0} %y, f32[8]{0} %z), dimensions={0}
  %add.1 = f32[4]{0} add(f32[4]{0} %a, f32[4]{0} %b)
  """
  assert analysis.count_collectives(hlo) == {"all-gather": 1, "all-reduce": 1, "reduce-scatter": 1}


def test_collectives_inside_loops_are_counted_apart():
  # One gather before the loop, one in its body, one in a computation the body calls, one in
  # a conditional's branch inside the body; a computation nothing loops over does not count.
  hlo = """
%called (p.0: f32[2]) -> f32[8] {
  %p.0 = f32[2]{0} parameter(0)
  ROOT %ag.2 = f32[8]{0} all-gather(f32[2]{0} %p.0), dimensions={0}
}

%branch (p.1: f32[2]) -> f32[2] {
  %p.1 = f32[2]{0} parameter(0)
  ROOT %ar = f32[2]{0} all-reduce(f32[2]{0} %p.1), to_apply=%add
}

%unused (p.2: f32[2]) -> f32[8] {
  %p.2 = f32[2]{0} parameter(0)
  ROOT %ag.3 = f32[8]{0} all-gather(f32[2]{0} %p.2), dimensions={0}
}

%body (c: (s32[], f32[2])) -> (s32[], f32[2]) {
  %ag.1 = f32[8]{0} all-gather-start(f32[2]{0} %x), dimensions={0}
  %f = f32[8]{0} fusion(f32[2]{0} %x), kind=kLoop, calls=%called
  %k = f32[2]{0} conditional(s32[] %i, f32[2]{0} %x), branch_computations={%branch, %branch}
}

%cond (c: (s32[], f32[2])) -> pred[] {
  ROOT %lt = pred[] compare(s32[] %i, s32[] %n), direction=LT
}

ENTRY %main (x: f32[2]) -> f32[8] {
  %ag.0 = f32[8]{0} all-gather(f32[2]{0} %x), dimensions={0}
  %w = (s32[], f32[2]) while((s32[], f32[2]) %t), condition=%cond, body=%body
}
"""
  assert analysis.count_collectives(hlo) == {"all-reduce": 1, "all-gather": 4}
  assert analysis.count_collectives(hlo, in_loops=True) == {"all-reduce": 1, "all-gather": 2}


def _param_bytes(model_cfg) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(decoder.abstract_params(model_cfg)))


def test_resident_state_counts_beside_the_programs():
  # One v5e-4 host, a 4-way FSDP mesh: while sampling, the optimizer state (Adam's two moments)
  # and the reference stay on every chip beside the sampler (whose own argument is the policy);
  # the update takes both as arguments, so nothing extra.
  config = helpers.experiment_config("score_math", "tiny")
  target = targets.parse("v5e-4")
  devs = devices.topology_devices(target)
  built = programs.build(config, devs)
  per_chip = _param_bytes(built.model_cfg) / 4
  sampler = {p.resident_bytes for p in built.programs if p.name.startswith("sampler:")}
  update = {p.resident_bytes for p in built.programs if p.name.startswith("update:")}
  assert update == {0}
  (kept,) = sampler
  assert kept == pytest.approx(3 * per_chip, rel=0.02), (kept, per_chip)  # mu + nu + reference
  # Four v5e-4 hosts: each samples from its own cast replica of the policy (an argument); a run
  # that samples first attempts from the base model also holds the reference's replica then.
  config.train.global_batch = 16
  multi = targets.parse("v5e-16")
  multi_devs = devices.topology_devices(multi)
  mesh, sampler_mesh = setup.make_meshes(config, multi_devs)
  state_and_ref = 4 * _param_bytes(built.model_cfg) / 16  # params, mu, nu, reference
  kept, what = programs.resident(config, built.model_cfg, mesh, sampler_mesh)
  # (16 shards of the tiny preset's small dims round up: a few percent over the even split)
  assert kept == pytest.approx(state_and_ref, rel=0.05) and what == "train state + reference"
  config.stage2.offline_first_attempt_ratio = 0.5
  kept, what = programs.resident(config, built.model_cfg, mesh, sampler_mesh)
  replica = _param_bytes(built.model_cfg)  # f32 compute in the tiny preset: cast is a copy
  assert kept == pytest.approx(state_and_ref + replica, rel=0.05), what


def test_a_program_that_fits_alone_does_not_fit_beside_the_resident_state():
  fields = dict(name="sampler:decode", compile_s=0.0, argument_bytes=1, output_bytes=1)
  fields.update(alias_bytes=0, temp_bytes=0, code_bytes=0, peak_bytes=6 << 30)
  fields.update(usable_bytes=10 << 30, xla_flops=0.0, collectives={}, loop_collectives={})
  alone = analysis.Compiled(**fields)
  beside = analysis.Compiled(**fields, resident_bytes=5 << 30)
  assert alone.fits and not beside.fits
  assert beside.total_bytes == 11 << 30 and beside.fraction == pytest.approx(1.1)


def test_plan_lists_the_resident_bytes_per_cell_without_compiling():
  from score_jax.preflight import plan

  table = plan.resident_markdown(["gemma-2b"], ["v5p-8", "v5e-16"]).splitlines()
  cells = {row.split("|")[2].strip(): row.split("|")[3:5] for row in table[2:]}
  one_host, four_hosts = cells["v5p-8"], cells["v5e-16"]
  # gemma-2b in f32 on 4 chips: Adam's two moments and the reference, a quarter each; on 16
  # chips over 4 hosts the policy's own parameters too, a sixteenth each.
  params = _param_bytes(programs.model_config(plan.paper_config("gemma-2b"))) / 2**30
  assert float(one_host[0]) == pytest.approx(3 * params / 4, abs=0.06), one_host
  assert float(four_hosts[0]) == pytest.approx(4 * params / 16, abs=0.06), four_hosts
  assert one_host[1].strip() == "optimizer state + reference"
