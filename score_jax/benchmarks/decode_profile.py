"""Where a decode step's time goes: one profiled decode call, its compiled ops grouped by role.

`breakdown(sampler, params, state, sp, rng)` traces one `Sampler.generate` call with the JAX
profiler, reads each executed op's duration from the trace and its role from the compiled
program's `op_name` metadata (the decode loop labels its parts with named scopes: `sample`,
`stop_check`, `model`), and returns milliseconds per decode step by role, next to the wall time.

Ops that run once per call (layout conversions, the final writes) are reported per call. On CPU
the ops of one step run one after another, so the roles add up to the step's compute; the rest
of the wall time is the runtime's own per-op overhead.

The wall time per step does not come from the trace: it is the difference of two untraced calls
of the same compiled program, one with all the steps and one with half (max_new_tokens is a
traced operand), over the steps between them; the median of five such pairs. So it holds on
any platform, where telling per-call from per-step ops in a GPU trace does not (on an H200
that split once left 0.02 ms).
"""

import collections
import dataclasses
import gzip
import json
import math
import os
import re
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp

# (role, predicate on an op's joined op_name paths); the first match wins.
ROLES = (
  ("sampling", lambda n: "/sample/" in n),
  ("stop checks", lambda n: "/stop_check/" in n),
  ("logits head", lambda n: "mbedder.decode" in n or "lm_head" in n),
  ("cache writes", lambda n: "/attn/" in n and "dynamic_update_slice" in n),
  ("weight matmuls", lambda n: "dot_general" in n and ("_proj/" in n or "/mlp/" in n)),
  ("attention", lambda n: "/attn/" in n),
  ("norms, rope, activations", lambda n: "/model/" in n),
  ("loop bookkeeping", lambda n: bool(n)),
  ("unlabelled (copies)", lambda n: True),
)

_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = .*?(?:calls=%([\w.\-]+))?.*$")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_COMP = re.compile(r"^(?:ENTRY )?%([\w.\-]+) ")


def op_names(hlo_text: str) -> dict[str, str]:
  """Instruction name -> its op_name paths (a fusion also gets those of its fused ops)."""
  own, calls, comp_names = {}, {}, collections.defaultdict(list)
  comp = None
  for line in hlo_text.splitlines():
    header = _COMP.match(line)
    if header and line.rstrip().endswith("{"):
      comp = header.group(1)
      continue
    m = _INSTR.match(line)
    if not m:
      continue
    names = _OP_NAME.findall(line)
    own[m.group(1)] = names
    calls[m.group(1)] = m.group(2)
    if comp is not None:
      comp_names[comp].extend(names)
  return {k: " ".join(v + comp_names.get(calls[k] or "", [])) for k, v in own.items()}


def role_of(names: str) -> str:
  return next(role for role, match in ROLES if match(names))


def _trace_events(logdir: str) -> list[dict]:
  for root, _, files in os.walk(logdir):
    for f in files:
      if f.endswith(".json.gz"):
        with gzip.open(os.path.join(root, f)) as fh:
          data = json.load(fh)
        return data["traceEvents"] if isinstance(data, dict) else data
  raise RuntimeError(f"the profiler wrote no perfetto trace under {logdir}")


def breakdown(sampler, params, state, sp, rng, *, turn: int = 1) -> dict:
  """Profiles one decode call from `state` (not consumed). Returns {'steps', 'wall_ms_per_step'
  (differential, untraced: the median of 'wall_ms_per_step_pairs'), 'profiled_call_ms',
  'roles_ms_per_step': {role: ms}, 'per_call_ms', 'ops_ms_per_step'}."""
  steps = sp.max_new_tokens

  def copy():  # generate donates its state's arrays
    return dataclasses.replace(state, arrays=jax.tree.map(lambda x: x.copy(), state.arrays))

  jax.block_until_ready(sampler.generate(params, copy(), sp, rng, turn=turn)[1])  # compiled
  run_state = copy()
  jax.block_until_ready(run_state.arrays)
  with tempfile.TemporaryDirectory() as logdir:
    with jax.profiler.trace(logdir, create_perfetto_trace=True):
      t0 = time.perf_counter()
      jax.block_until_ready(sampler.generate(params, run_state, sp, rng, turn=turn)[1])
      wall = time.perf_counter() - t0
    events = _trace_events(logdir)
  names = op_names(_compiled_text(sampler, params, state, sp, rng, turn))
  total, count = collections.Counter(), collections.Counter()
  for e in events:
    if e.get("ph") == "X" and e.get("name") in names:
      total[e["name"]] += e["dur"] / 1e3
      count[e["name"]] += 1
  roles, per_call = collections.Counter(), 0.0
  for name, ms in total.items():
    if count[name] < steps:  # outside the loop: once per call
      per_call += ms
    else:
      roles[role_of(names[name])] += ms / steps
  ops = sum(roles.values())
  pairs = _differential_ms_per_step(sampler, params, copy, sp, rng, turn)
  return {
    "steps": steps,
    "wall_ms_per_step": statistics.median(pairs),
    "wall_ms_per_step_pairs": pairs,
    "profiled_call_ms": wall * 1e3,
    "roles_ms_per_step": dict(roles.most_common()),
    "ops_ms_per_step": ops,
    "per_call_ms": per_call,
  }


def _differential_ms_per_step(sampler, params, copy, sp, rng, turn: int, reps: int = 5) -> list:
  """`_differential_pairs` of untraced `Sampler.generate` calls (a fresh state copy each)."""
  if sp.max_new_tokens < 2:
    raise ValueError("a decode profile needs max_new_tokens >= 2")

  def seconds(n):
    p, state = dataclasses.replace(sp, max_new_tokens=n), copy()
    jax.block_until_ready(state.arrays)
    t0 = time.perf_counter()
    jax.block_until_ready(sampler.generate(params, state, p, rng, turn=turn)[1])
    return time.perf_counter() - t0

  return _differential_pairs(seconds, sp.max_new_tokens, reps)


def _differential_pairs(seconds, steps: int, reps: int) -> list:
  """Per pair of calls, (`steps` steps - half of them) / the steps between, in ms; `seconds(n)`
  times one call of n steps. The first call of each length (compile, first touch) is dropped.

  The two calls of a pair run back to back and pairs repeat `reps` times: the median pair is
  robust to a slow or fast moment, where best-of-full minus best-of-half (the first version)
  once reported 3.35 ms for a step whose calls said 5.1 ms (a lucky full call on a VM).
  """
  half = steps // 2
  for n in (steps, half):
    seconds(n)
  return [(seconds(steps) - seconds(half)) * 1e3 / (steps - half) for _ in range(reps)]


def _compiled_text(sampler, params, state, sp, rng, turn) -> str:
  """The decode program's optimized HLO, as `Sampler.generate` compiles it."""
  fn, args = sampler.decode_call(params, state, sp, rng, turn=turn)
  with sampler.context():
    return fn.lower(*args).compile().as_text()


# A layer's matmul kernels in the order a token meets them, and how many leading axes (after
# the layer axis) each takes in: o_proj is [heads, head_dim, embed], the rest [in, out...].
_LAYER_KERNELS = (
  ("attn", "q_proj", 1),
  ("attn", "k_proj", 1),
  ("attn", "v_proj", 1),
  ("attn", "o_proj", 2),
  ("mlp", "gate_proj", 1),
  ("mlp", "up_proj", 1),
  ("mlp", "down_proj", 1),
)


def _step_matrices(config, params) -> tuple[list, jax.Array, bool]:
  """Per layer its 7 kernels as [in, out] matrices (separate buffers, as the decode layout
  keeps them), and the head: the tied embedding [vocab, embed] or an untied [embed, vocab]."""
  stacked = params.get("layers")
  if not isinstance(stacked, dict) or "attn" not in stacked or "mlp" not in stacked:
    raise ValueError("weight_matmuls: params need stacked 'layers' with 'attn' and 'mlp'")
  per_layer = []
  for i in range(config.num_layers):
    mats = []
    for block, name, num_in in _LAYER_KERNELS:
      w = stacked[block][name]["kernel"][i]
      mats.append(w.reshape(math.prod(w.shape[:num_in]), -1).astype(config.dtype))
    per_layer.append(tuple(mats))
  tied = config.tie_embeddings
  head = params["embedder"]["input_embedding"] if tied else params["lm_head"]["kernel"]
  return jax.device_put(per_layer), head.astype(config.dtype), tied


def weight_matmuls(config, params, rows: int, steps: int = 64, reps: int = 5) -> dict:
  """The decode step's weight matmuls alone: every layer's projections and the logits head at
  the step's shapes ([rows, in] x [in, out]), on the step's own weights, chained so that no
  product can be skipped; no attention, sampling or cache. What a step would cost if all else
  were free, measured now on this machine, where a [1024]^3 matmul's rate says nothing about
  how fast [32, 256] rows stream a model's weights from memory.

  Returns {'ms_per_step' (differential, as `breakdown`: the median of 'ms_per_step_pairs'),
  'flops_per_step' (2 x rows x the kernels' parameters), 'flop_per_s'}.
  """
  if steps < 2:
    raise ValueError("weight_matmuls needs steps >= 2 (it differences two loop lengths)")
  per_layer, head, tied = _step_matrices(config, params)

  def step(_, x):
    for wq, wk, wv, wo, wg, wu, wd in per_layer:
      kv = jnp.sum(x @ wk, -1, keepdims=True) + jnp.sum(x @ wv, -1, keepdims=True)
      x = jnp.tanh(x + (x @ wq) @ wo + 1e-6 * kv)  # tanh: values stay bounded over the steps
      x = jnp.tanh(x + ((x @ wg) * (x @ wu)) @ wd)
    logits = jnp.einsum("bd,vd->bv", x, head) if tied else x @ head
    return x + 1e-6 * jnp.max(logits, -1, keepdims=True)

  loop = jax.jit(lambda x, n: jax.lax.fori_loop(0, n, step, x))
  x0 = jnp.full((rows, config.embed_dim), 0.1, config.dtype)

  def seconds(n):  # n is traced: one compiled program for both loop lengths
    t0 = time.perf_counter()
    jax.block_until_ready(loop(x0, n))
    return time.perf_counter() - t0

  pairs = _differential_pairs(seconds, steps, reps)
  kernels = sum(w.size for mats in per_layer for w in mats) + head.size
  ms = statistics.median(pairs)
  flop = 2.0 * rows * kernels
  return {
    "ms_per_step": ms,
    "ms_per_step_pairs": pairs,
    "flops_per_step": flop,
    "flop_per_s": flop / (ms / 1e3) if ms > 0 else float("nan"),
  }
