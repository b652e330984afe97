"""`python -m score_jax.preflight`: does a run fit a TPU slice or GPU node? Ask before queueing.

  pip install -e '.[aot]'    # libtpu: the real TPU compiler, on any laptop
  python -m score_jax.preflight --config=experiments/score_math.py --topology=v5e-16
  python -m score_jax.preflight --config=experiments/score_math.py --topology=v5p-8 \\
      --config.train.num_microbatches=4 --suggest

Builds the run's meshes, abstract train state, reference params and batch from its own config
(`--config.x=y` overrides as for the main command), compiles the sampler's prefill / append /
decode and each update step of the run's method for the target's chips, and prints per program:
compile time, per-device memory (arguments, outputs, aliased by donation, temporaries, peak vs
usable), analytic FLOPs next to the compiler's count, the collectives, and an estimated step
time at an assumed MFU. `--suggest` searches micro-batches, remat policies and prompts per
sampler call for the cheapest plan that fits. Exit status: 0 fits, 2 a program does not fit
(the compiler's text is printed), 1 bad input.
"""

import json
import os
import sys

# Compile-only: the TPU / GPU topology needs no attached chip, and the CPU backend keeps libtpu
# from probing for one on every start.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import app, flags
from ml_collections import config_flags

from score_jax import configs
from score_jax.parallel import targets
from score_jax.preflight import devices, report, run, suggest

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiments/<name>.py[:arg]")
_TOPOLOGY = flags.DEFINE_string(
  "topology", None, "target: v5e-16, v5e-64, v5p-8, v6e-16, ... (also h100x8 / h200x8)"
)
_GPU = flags.DEFINE_string("gpu", None, "GPU node target, e.g. h100x8 (same as --topology)")
_NUM_SLICES = flags.DEFINE_integer("num_slices", 1, "TPU slices (multi-slice over DCN)")
_PROGRAMS = flags.DEFINE_list("programs", ["sampler", "update"], "which programs to compile")
_MFU = flags.DEFINE_float("mfu", run.DEFAULT_MFU, "assumed model-FLOP utilization for estimates")
_SUGGEST = flags.DEFINE_bool("suggest", False, "search for the cheapest plan that fits")
_JSON = flags.DEFINE_string("json", "", "also write the results to this JSON file")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  name = _GPU.value or _TOPOLOGY.value
  if _CONFIG.value is None or not name or (_GPU.value and _TOPOLOGY.value):
    raise app.UsageError("need --config and one of --topology / --gpu")
  try:
    target = targets.parse(name, _NUM_SLICES.value)
    configs.validate(_CONFIG.value, num_devices=target.num_devices)
    devs = devices.topology_devices(target)
    host = devices.host_devices(target)
  except (ValueError, configs.ConfigError, devices.MissingCompiler) as err:
    print(f"preflight: {err}", file=sys.stderr)
    sys.exit(1)
  which = tuple(_PROGRAMS.value)
  if _SUGGEST.value:
    plans, tried = suggest.search(_CONFIG.value, target, devs, which, _MFU.value, host)
    print(report.format_search(tried))
    plan = suggest.combine(plans, _MFU.value)
    if plan is None:
      print("preflight: no plan in the search space fits", file=sys.stderr)
      sys.exit(2)
    result = plan.report
    print(f"\ncheapest plan that fits: {suggest.describe(plan.knobs)}\n")
  else:
    result = run.preflight(_CONFIG.value, target, devs, which, _MFU.value, host_devices=host)
  print(report.format_report(result))
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(report.as_dict(result), f, indent=1)
  sys.exit(0 if result.fits else 2)


if __name__ == "__main__":
  app.run(main)
