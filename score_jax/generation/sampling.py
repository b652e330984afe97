"""The jitted KV-cache sampler: bucketed prefill, appended turns, and a while-loop decode.

One `Sampler` owns three jitted programs (generation.programs), each compiled once per shape
bucket:
- `prefill`: unique prompts (left-padded into a prompt bucket) into a fresh cache, then the
  cache is repeated along the batch so n samples per prompt share one prefill;
- `append`: T new tokens written on the SAME cache (turn-2 instructions): positions continue per
  row from that row's last real token, so only the instruction is prefilled;
- `decode_loop`: a `lax.while_loop` over the explicit cache, bounded by a generation bucket and a
  traced `max_new_tokens`, exiting early once every row sampled a stop id.
Temperature, top-k, top-p, stop ids and max_new_tokens are traced operands: changing them never
recompiles. Greedy is temperature 0.

The cache-slot layout IS the episode's token stream: every slot holds one token (`tokens_bs`),
its RoPE position and a `valid` bit (left padding, instruction padding and the slots of rows that
stopped before the others are holes). A training forward pass over (tokens, positions, valid)
sees exactly the attention the sampler saw, so it reproduces the sampler's log-probs.

Shape letters: b batch (episodes), u unique prompts, t new tokens, s cache slots, g generation
bucket, v vocab.
"""

import contextlib
import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from score_jax.generation import programs
from score_jax.generation.programs import StopReason  # noqa: F401  (part of this module's face)
from score_jax.models.config import ModelConfig
from score_jax.parallel import mesh as mesh_lib

PyTree = dict
MAX_STOP_IDS = 8  # stop ids are a fixed-length traced operand (padded with -1)


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """Per-call sampling settings; all are traced, so varying them does not recompile.

  temperature 0 is greedy; its log-probs are then reported at temperature 1 (log_softmax of the
  raw logits). top_k 0 and top_p 1.0 switch those filters off. Returned log-probs are always
  log_softmax(logits / T) of the chosen token, NOT renormalised over the top-k/top-p set: that is
  what a training forward pass (which cannot know the filter) recomputes.
  """

  max_new_tokens: int
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  stop_ids: tuple[int, ...] = ()


def bucket(n: int, buckets: Sequence[int], what: str) -> int:
  for b in sorted(buckets):
    if n <= b:
      return b
  raise ValueError(f"{what} length {n} exceeds the largest bucket {max(buckets)} ({buckets}).")


def validate_sampling(sp: SamplingParams, vocab_size: int, gen_buckets: Sequence[int]) -> None:
  """Raises ValueError naming the field of `sp` that cannot work (before anything compiles)."""
  if not isinstance(sp.max_new_tokens, int) or sp.max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be a positive int, got {sp.max_new_tokens!r}.")
  bucket(sp.max_new_tokens, gen_buckets, "max_new_tokens")
  if not sp.temperature >= 0:  # also rejects NaN
    raise ValueError(f"temperature must be >= 0 (0 = greedy), got {sp.temperature!r}.")
  if not 0.0 < sp.top_p <= 1.0:
    raise ValueError(f"top_p must be in (0, 1], got {sp.top_p!r}.")
  if not isinstance(sp.top_k, int) or not 0 <= sp.top_k <= vocab_size:
    raise ValueError(f"top_k must be an int in [0, vocab_size={vocab_size}], got {sp.top_k!r}.")
  if len(sp.stop_ids) > MAX_STOP_IDS:
    raise ValueError(f"at most {MAX_STOP_IDS} stop ids are supported, got {len(sp.stop_ids)}.")
  for s in sp.stop_ids:
    if not isinstance(s, (int, np.integer)) or not 0 <= s < vocab_size:
      raise ValueError(f"stop id {s!r} is outside the vocabulary [0, {vocab_size}).")


def validate_rows(rows: Sequence[Sequence[int]], vocab_size: int, what: str) -> None:
  if len(rows) == 0:
    raise ValueError(f"{what}: got an empty batch.")
  for i, row in enumerate(rows):
    if len(row) == 0:
      raise ValueError(f"{what}[{i}] is empty: every row needs at least one token.")
    arr = np.asarray(row)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
      raise ValueError(f"{what}[{i}] must be a flat sequence of int token ids.")
    bad = arr[(arr < 0) | (arr >= vocab_size)]
    if bad.size:
      raise ValueError(f"{what}[{i}] has token id {int(bad[0])} outside [0, {vocab_size}).")


def left_pad(rows: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, ...]:
  """Left-pads token rows to `length`: returns (tokens [n, length] int32, mask bool)."""
  tokens = np.full((len(rows), length), pad_id, np.int32)
  mask = np.zeros((len(rows), length), bool)
  for i, row in enumerate(rows):
    tokens[i, length - len(row) :] = row
    mask[i, length - len(row) :] = True
  return tokens, mask


@dataclasses.dataclass
class SamplerState:
  """Device arrays of an in-progress batch plus the host's worst-case slot count."""

  arrays: PyTree  # cache, tokens_bs, logp_bs, turn_bs, next_pos_b, logits_bv
  row_ids: jax.Array  # [b] ids folded into each row's RNG
  prompt_index: np.ndarray  # [b] which prompt each row came from
  max_used: int  # slots that may be used so far (static bound; the real index can be lower)

  @property
  def cache_len(self) -> int:
    return self.arrays["tokens_bs"].shape[1]


@dataclasses.dataclass
class Generation:
  """One attempt per row, as host arrays (tokens past `lengths` are pad)."""

  tokens: np.ndarray  # [b, g] int32, includes the sampled stop id
  logp: np.ndarray  # [b, g] float32 log_softmax(logits / T) of each token (T=1 when greedy)
  lengths: np.ndarray  # [b] tokens sampled, stop id included
  stop_reason: np.ndarray  # [b] StopReason values


class Sampler:
  """Bucketed, jitted sampler for one model config (params are passed per call)."""

  def __init__(
    self,
    config: ModelConfig,
    *,
    prompt_buckets: Sequence[int] = (32, 64, 128, 256, 512),
    append_buckets: Sequence[int] = (8, 16, 32, 64, 128),
    gen_buckets: Sequence[int] = (16, 32, 64, 128, 256, 512, 1024),
    pad_id: int = 0,
    mesh: jax.sharding.Mesh | None = None,
    decode_layout: bool | None = None,
    weight_gather: str = "per_call",
  ):
    """`decode_layout`: decode steps read per-layer weights and a per-layer, key-transposed
    cache, converted once per call (`models.layerwise_decode.decode_step`): 2-3x faster steps
    on CPU, but a second copy of weights and cache. None: on when the sampler's devices are
    CPUs, off on accelerators. The stacked layout slices each layer's weights in every step;
    XLA's GPU compiler (H200, jax 0.10.2) copies those slices instead of fusing them into the
    matmuls, so on GPUs the decode layout may well be faster: `bench sampler --decode_layout=on`.

    `weight_gather`: with weights FSDP-sharded over the mesh (one process, several devices),
    "per_call" gathers them once per decode call (a transient copy per device; tensor-parallel
    dimensions stay sharded); "per_step" leaves the gathers to the loop: every layer's weights
    in every step (`programs.decode_loop`), in less memory.
    """
    if weight_gather not in programs.WEIGHT_GATHERS:
      raise ValueError(
        f"weight_gather must be one of {programs.WEIGHT_GATHERS}, got {weight_gather!r}"
      )
    if decode_layout is None:
      devices = mesh.devices.flat if mesh is not None else jax.devices()
      decode_layout = next(iter(devices)).platform == "cpu"
    self.decode_layout = bool(decode_layout)
    self.weight_gather = weight_gather
    self.config = config
    self.prompt_buckets = tuple(sorted(prompt_buckets))
    self.append_buckets = tuple(sorted(append_buckets))
    self.gen_buckets = tuple(sorted(gen_buckets))
    self.pad_id = pad_id
    self.mesh = mesh
    self.prefill_fn = jax.jit(functools.partial(programs.prefill, config), static_argnums=(3, 4, 5))
    self.append_fn = jax.jit(functools.partial(programs.append, config), donate_argnums=(1,))
    self.decode_fn = jax.jit(
      functools.partial(programs.decode_loop, config, self.decode_layout, weight_gather),
      static_argnums=(0, 1, 2),
      donate_argnums=(4,),
    )

  def jitted_functions(self) -> dict:
    """The jitted functions, e.g. to count compilations via `_cache_size()`."""
    return {"prefill": self.prefill_fn, "append": self.append_fn, "decode": self.decode_fn}

  def context(self):
    """The sharding-rules context the sampler's programs run under (a no-op without a mesh)."""
    if self.mesh is None:
      return contextlib.nullcontext()
    return mesh_lib.use_rules(self.mesh)

  def _put_batch(self, x: np.ndarray) -> jax.Array:
    if self.mesh is None:
      return jnp.asarray(x)
    shards = mesh_lib.batch_shards(self.mesh)
    spec = P(mesh_lib.BATCH_AXES) if x.shape[0] % shards == 0 else P()
    return jax.device_put(x, NamedSharding(self.mesh, spec))

  def _batch_shards(self) -> int:
    if self.mesh is None:
      return 1
    return mesh_lib.batch_shards(self.mesh)

  def start(
    self,
    params: PyTree,
    prompts: Sequence[Sequence[int]],
    *,
    samples_per_prompt: int = 1,
    extra_slots: int,
    row_ids: Sequence[int] | None = None,
  ) -> SamplerState:
    """Prefills unique `prompts` and repeats each `samples_per_prompt` times (prompt-major).

    `extra_slots` = slots reserved after the prompt bucket (all attempts and appended turns);
    cache length = prompt bucket + extra_slots, so keep it fixed to avoid recompiles.
    """
    validate_rows(prompts, self.config.vocab_size, "prompts")
    if samples_per_prompt < 1:
      raise ValueError(f"samples_per_prompt must be >= 1, got {samples_per_prompt}.")
    t = bucket(max(len(p) for p in prompts), self.prompt_buckets, "prompt")
    b = len(prompts) * samples_per_prompt
    if b % self._batch_shards():
      raise ValueError(
        f"batch {b} (= {len(prompts)} prompts x {samples_per_prompt} samples) must divide by "
        f"the mesh's batch shards data*fsdp = {self._batch_shards()}."
      )
    # Pad unique prompts to a multiple of the batch shards (dummy rows are never repeated).
    u = -(-len(prompts) // self._batch_shards()) * self._batch_shards()
    rows = list(prompts) + [prompts[0]] * (u - len(prompts))
    tokens_ut, mask_ut = left_pad(rows, t, self.pad_id)
    prompt_index = np.repeat(np.arange(len(prompts)), samples_per_prompt)
    row_ids = np.arange(b) if row_ids is None else np.asarray(row_ids)
    if row_ids.shape != (b,):
      raise ValueError(f"row_ids must have shape ({b},), got {row_ids.shape}.")
    with self.context():
      arrays = self.prefill_fn(
        params,
        self._put_batch(tokens_ut),
        self._put_batch(mask_ut),
        t + int(extra_slots),
        int(samples_per_prompt),
        len(prompts),
      )
    return SamplerState(arrays, self._put_batch(row_ids.astype(np.int32)), prompt_index, t)

  def append(
    self, params: PyTree, state: SamplerState, rows: Sequence[Sequence[int]], *, min_len: int = 0
  ):
    """Appends one token row per episode (e.g. the turn-2 instruction) onto the same cache.

    The append bucket fits the longest row and at least `min_len` tokens, so callers whose row
    lengths vary from call to call (close ids on some rows only) can keep one shape.
    """
    b = len(state.prompt_index)
    validate_rows(rows, self.config.vocab_size, "appended tokens")
    if len(rows) != b:
      raise ValueError(f"appended tokens: need one row per episode ({b}), got {len(rows)}.")
    t = bucket(max(min_len, *(len(r) for r in rows)), self.append_buckets, "appended tokens")
    self._check_room(state, t)
    tokens_bt, mask_bt = left_pad(rows, t, self.pad_id)
    with self.context():
      arrays = self.append_fn(
        params, state.arrays, self._put_batch(tokens_bt), self._put_batch(mask_bt)
      )
    return dataclasses.replace(state, arrays=arrays, max_used=state.max_used + t)

  def _check_room(self, state: SamplerState, t: int) -> None:
    # dynamic_update_slice clamps out-of-range writes, so overflow must be refused up front.
    if state.max_used + t > state.cache_len:
      raise ValueError(
        f"cache of {state.cache_len} slots may be full: {state.max_used} slots may be used and "
        f"{t} more are needed; raise extra_slots in Sampler.start."
      )

  def generate(
    self,
    params: PyTree,
    state: SamplerState,
    sp: SamplingParams,
    rng: jax.Array,
    *,
    turn: int = 1,
  ) -> tuple[SamplerState, dict]:
    """Samples one attempt per row, continuing the cache; returns (state, device outputs)."""
    fn, args = self.decode_call(params, state, sp, rng, turn=turn)
    self._check_room(state, args[0])
    with self.context():
      arrays, out = fn(*args)
    g = args[0]
    return dataclasses.replace(state, arrays=arrays, max_used=state.max_used + g), out

  def decode_call(self, params, state: SamplerState, sp: SamplingParams, rng, *, turn: int = 1):
    """(jitted decode program, its arguments) for one attempt: what `generate` runs (also to
    lower it for inspection). The first argument is the generation bucket."""
    validate_sampling(sp, self.config.vocab_size, self.gen_buckets)
    g = bucket(sp.max_new_tokens, self.gen_buckets, "max_new_tokens")
    stop = np.full((MAX_STOP_IDS,), -1, np.int32)
    stop[: len(sp.stop_ids)] = sp.stop_ids
    ops = {
      "temperature": np.float32(sp.temperature),
      "top_k": np.int32(sp.top_k),
      "top_p": np.float32(sp.top_p),
      "stop_ids": stop,
      "max_new": np.int32(sp.max_new_tokens),
    }
    # The slots this call can reach; a static shape, so the decode layout compiles once per
    # attempt position (the stacked layout reads the whole cache and compiles once).
    live = min(state.cache_len, state.max_used + g) if self.decode_layout else state.cache_len
    args = (g, self.pad_id, live, params, state.arrays, rng, state.row_ids, np.int32(turn), ops)
    return self.decode_fn, args

  def sample(
    self,
    params: PyTree,
    prompts: Sequence[Sequence[int]],
    sp: SamplingParams,
    rng: jax.Array,
    *,
    samples_per_prompt: int = 1,
  ) -> Generation:
    """Single-turn convenience: one attempt per (prompt, sample), as host arrays."""
    validate_sampling(sp, self.config.vocab_size, self.gen_buckets)
    g = bucket(sp.max_new_tokens, self.gen_buckets, "max_new_tokens")
    state = self.start(params, prompts, samples_per_prompt=samples_per_prompt, extra_slots=g)
    _, out = self.generate(params, state, sp, rng)
    out = jax.device_get(out)
    return Generation(out["tokens_bg"], out["logp_bg"], out["length_b"], out["stop_reason_b"])
