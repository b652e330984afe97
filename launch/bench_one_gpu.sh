#!/usr/bin/env bash
# The benchmark figures BUILD_NOTES records for one GPU, under a wall-clock budget.
#
#   SCORE_TUNIX_PYTHON=/path/to/tunix-venv/bin/python bash launch/bench_one_gpu.sh OUT_DIR [SECONDS]
#
# Run from the repo root with score_jax importable. In order, each part with what is left of the
# budget (default 600 s) and its log written as it runs, so a cut-off run still leaves the parts
# that finished:
#   env.txt                  nvidia-smi, jax / flax / tunix versions, jax.devices()
#   sampler_layout_off.log   `bench sampler`, ours alone, stacked weights in the decode loop
#   sampler_layout_on.log    the same with rollout.decode_layout=on (per-layer weights)
#   sampler_f32_weights.log  layout on, float32 weights with bf16 compute (the trainer's
#                            storage): cast once per call, so it should match the bf16 run
#   rl_step.log (+ .json)    `bench rl_step` at gemma-2b scale in bf16, full remat on both
#                            sides: ours vs tunix's GRPO learner, then our Stage II step
#   train_step.log           `bench train_step --paper_math`: Stage II MFU on the paper's MATH
#                            streams (3200 slots), against the same-run and the spec peak
#   sampler.log              `bench sampler`, ours vs tunix (only if time is left)
# Override a part's flags with LAYOUT_ARGS / RL_ARGS / TRAIN_ARGS / SAMPLER_ARGS (e.g. small
# sizes on a CPU). Two processes share the GPU where tunix runs (its side is a subprocess):
# each may take 46% of the memory; a part that runs alone may take 92%.
set -u
out=${1:?usage: bench_one_gpu.sh OUT_DIR [SECONDS]}
budget=${2:-600}
py=${PYTHON:-python3}
tunix=${SCORE_TUNIX_PYTHON:-/nonexistent}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }

LAYOUT_ARGS=${LAYOUT_ARGS:---size=gemma-2b --dtype=bfloat16 --repeats=1}
# Full remat on both sides: without it our update's temporaries at 256k vocab and 18 layers
# (66 GiB for 32 x 384 slots, measured on an H200) do not fit beside tunix's process.
RL_ARGS=${RL_ARGS:---size=gemma-2b --dtype=bfloat16 --remat=full --prompt_len=128 --gen_len=128 --instr_len=32 --repeats=3 --warmup=2}
# 4 rows x 3200 slots per micro-batch: f32 master weights, Adam and the reference share the
# device; its 45.7 GiB of temporaries fit only with the memory fraction raised (measured).
TRAIN_ARGS=${TRAIN_ARGS:---preset=gemma-2b --dtype=bfloat16 --paper_math --batch=8 --microbatches=2 --steps=3}
SAMPLER_ARGS=${SAMPLER_ARGS:---size=gemma-2b --dtype=bfloat16 --repeats=2}

# part NAME SECONDS MEMORY_FRACTION ARGS...: one benchmark, its log under $out, its tail shown.
part() {
  local name=$1 limit=$2 fraction=$3
  shift 3
  if [ "$limit" -lt 30 ]; then
    echo "== $name SKIPPED: $(left) s left"
    return 1
  fi
  echo "== $name (limit $limit s, $(left) s left)"
  XLA_PYTHON_CLIENT_MEM_FRACTION=$fraction timeout "$limit" "$py" -m score_jax.benchmarks "$@" \
    >"$out/$name.log" 2>&1
  local rc=$?
  grep -v '^  File \|^    ' "$out/$name.log" | tail -n 14
  return $rc
}
at_most() { local l; l=$(($(left) - $2)); echo $((l < $1 ? l : $1)); }

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  "$py" - "$tunix" <<'EOF' 2>&1
import importlib.metadata as md, subprocess, sys
import jax
for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
  try:
    print(name, md.version(name))
  except md.PackageNotFoundError:
    print(name, "missing")
print("devices", jax.devices(), "kind", repr(jax.devices()[0].device_kind))
probe = "import tunix.rl.grpo.grpo_learner, tunix.models.gemma.model, flax; print('tunix ok, flax', flax.__version__)"
r = subprocess.run([sys.argv[1], "-c", probe], capture_output=True, text=True)
print(r.stdout.strip() or ("tunix import FAILED: " + r.stderr.strip()[-600:]))
EOF
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

# The reserve after each part keeps time for the parts after it.
for layout in off on; do
  part "sampler_layout_$layout" "$(at_most 80 380)" 0.92 sampler $LAYOUT_ARGS \
    --decode_layout=$layout --tunix_python=/nonexistent
done
part sampler_f32_weights "$(at_most 80 300)" 0.92 sampler $LAYOUT_ARGS --decode_layout=on \
  --param_dtype=float32 --tunix_python=/nonexistent
part rl_step "$(at_most 240 130)" 0.46 rl_step $RL_ARGS --decode_layout=on \
  --tunix_python="$tunix" --json="$out/rl_step.json"
part train_step "$(at_most 100 20)" 0.92 train_step $TRAIN_ARGS
part sampler "$(at_most 150 10)" 0.46 sampler $SAMPLER_ARGS --decode_layout=on --tunix_python="$tunix"
echo "== done after $(($(date +%s) - start)) s"
