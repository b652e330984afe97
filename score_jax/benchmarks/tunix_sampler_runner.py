"""tunix's side of `bench sampler`; runs in tunix's own virtualenv (google-tunix 0.1.7).

Started by `score_jax.benchmarks.sampler` with the same flags. It builds the benchmark's weights
with the same function and seed as our side (`bench_params`), converts them into tunix's nnx
Gemma, then answers one JSON command per stdin line with one JSON line on stdout:
  check       -> greedy tokens of the check prompts
  run1, run2  -> {"seconds", "tokens"} of one single-turn / two-turn batch (end to end)
  breakdown1/2-> seconds in tunix's jitted prefill, decode loop, and the rest (host)
  quit
Two-turn on tunix = two `Sampler` calls: turn 2's prompt is question + attempt 1 + instruction,
prefilled from scratch, since tunix's sampler cannot continue a cache.
"""

import json
import os
import sys
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from tunix.generate import sampler as tunix_sampler  # noqa: E402
from tunix.models.gemma import model as tunix_gemma  # noqa: E402

from score_jax.benchmarks import sampler as bench  # noqa: E402

_TUNIX_REMAT = {
  "none": tunix_gemma.RematConfig.NONE,
  "full": tunix_gemma.RematConfig.DECODER,
}


class RematSwitch:
  """Stands in for `nnx` inside tunix's Gemma module, so its remat can be off while sampling.

  tunix 0.1.7 applies `nnx.remat` on every call, also inside its sampler's decode loop, where
  it fails (flax TraceContextError: the KV-cache Variables are mutated from another trace).
  Remat matters only for a backward pass, so the sampler traces with `off` set (remat is then
  the identity) and the training step with it cleared (tunix's own remat).
  """

  def __init__(self):
    self.off = False

  def __getattr__(self, name):
    return getattr(nnx, name)

  def remat(self, fn, *args, **kwargs):
    return fn if self.off else nnx.remat(fn, *args, **kwargs)

  def sampling(self, fn):
    """`fn` traced and run with remat off."""

    def wrapped(*args, **kwargs):
      self.off = True
      try:
        return fn(*args, **kwargs)
      finally:
        self.off = False

    return wrapped


REMAT_SWITCH = RematSwitch()
tunix_gemma.nnx = REMAT_SWITCH


class IdTokenizer:
  """Token ids written as text ("5 17 9"), so tunix sees exactly our ids. No BOS; pad 0."""

  def encode(self, text, **_):
    return [int(x) for x in text.split()]

  def decode(self, ids, **_):
    return " ".join(str(int(i)) for i in ids)

  def bos_id(self):
    return None

  def eos_id(self):
    return 1

  def pad_id(self):
    return 0


def to_tunix(config, params) -> nnx.Module:
  """Our stacked Linen parameter tree -> tunix's Gemma (per-layer einsum weights)."""
  tcfg = tunix_gemma.ModelConfig(
    num_layers=config.num_layers,
    num_embed=config.vocab_size,
    embed_dim=config.embed_dim,
    hidden_dim=config.hidden_dim,
    num_heads=config.num_heads,
    head_dim=config.head_dim,
    num_kv_heads=config.num_kv_heads,
    final_logit_softcap=None,
    use_post_attn_norm=False,
    use_post_ffw_norm=False,
    attention_types=(tunix_gemma.AttentionType.GLOBAL,) * config.num_layers,
    # Our "full" remat saves only each layer's input, as tunix's DECODER remat does.
    remat_config=_TUNIX_REMAT[config.remat_policy],
  )
  model = nnx.eval_shape(lambda: tunix_gemma.Gemma(tcfg, rngs=nnx.Rngs(0)))
  model.embedder.input_embedding.value = params["embedder"]["input_embedding"]
  model.final_norm.scale.value = params["final_norm"]["scale"]
  for i, layer in enumerate(model.layers):
    lp = jax.tree.map(lambda x, i=i: x[i], params["layers"])
    attn = lp["attn"]
    q_hdk = attn["q_proj"]["kernel"].transpose(1, 0, 2)  # [D,H,K] -> [H,D,K]
    k_ndk = attn["k_proj"]["kernel"].transpose(1, 0, 2)
    v_ndk = attn["v_proj"]["kernel"].transpose(1, 0, 2)
    if config.num_heads == config.num_kv_heads:
      layer.attn.qkv_einsum.w.value = jnp.stack([q_hdk, k_ndk, v_ndk])
    else:
      layer.attn.q_einsum.w.value = q_hdk
      layer.attn.kv_einsum.w.value = jnp.stack([k_ndk, v_ndk])
    layer.attn.attn_vec_einsum.w.value = attn["o_proj"]["kernel"]  # [H,K,D] both
    layer.pre_attention_norm.scale.value = lp["pre_attention_norm"]["scale"]
    layer.pre_ffw_norm.scale.value = lp["pre_ffw_norm"]["scale"]
    for name in ("gate_proj", "up_proj", "down_proj"):
      getattr(layer.mlp, name).kernel.value = lp["mlp"][name]["kernel"]
  return model


class Runner:
  def __init__(self, args):
    self.args = args
    config = bench.bench_config(args.size, args.dtype)
    model = to_tunix(config, bench.bench_params(config, args.seed))
    self.prompts, self.check_prompts, self.instruction = bench.workload(config, args)
    self.turn2_len = args.prompt_len + args.gen_len + args.instr_len

    def make(cache_size):
      cache = tunix_sampler.CacheConfig(
        cache_size=cache_size,
        num_layers=config.num_layers,
        num_kv_heads=config.num_kv_heads,
        head_dim=config.head_dim,
      )
      return tunix_sampler.Sampler(model, IdTokenizer(), cache)

    # Each turn gets the smallest cache it needs (tunix attends over its whole cache).
    self.turn1 = make(args.prompt_len + args.gen_len)
    self.turn2 = make(self.turn2_len + args.gen_len)
    self.times = {"prefill": 0.0, "decode": 0.0}
    for s in (self.turn1, self.turn2):
      s._compiled_prefill_fn = self._timed(s._compiled_prefill_fn, "prefill")
      s._compiled_decode_fn = self._timed(s._compiled_decode_fn, "decode")
    self.calls = 0

  def _timed(self, fn, key):
    def wrapped(*a, **kw):
      t = time.perf_counter()
      out = jax.block_until_ready(fn(*a, **kw))
      self.times[key] += time.perf_counter() - t
      return out

    return wrapped

  def _sample(self, s, rows, prompt_len, gen_len, temperature, seed):
    kw = dict(temperature=temperature, top_p=1.0) if temperature > 0 else {}
    out = s(
      [" ".join(map(str, r)) for r in rows],
      max_generation_steps=gen_len,
      max_prompt_length=prompt_len,
      eos_tokens=[-1],  # unreachable: every row runs the full length, as on our side
      seed=seed,
      **kw,
    )
    return [list(map(int, t)) for t in out.tokens]

  def check(self):
    toks = self._sample(
      self.turn1, self.check_prompts, self.args.prompt_len, bench.CHECK_TOKENS, 0.0, 0
    )
    return {"tokens": toks}

  def run(self, turns: int):
    self.calls += 1
    a = self.args
    t = time.perf_counter()
    y1 = self._sample(self.turn1, self.prompts, a.prompt_len, a.gen_len, 1.0, self.calls)
    tokens = sum(map(len, y1))
    if turns == 2:
      rows = [p + y + self.instruction for p, y in zip(self.prompts, y1)]
      y2 = self._sample(self.turn2, rows, self.turn2_len, a.gen_len, 1.0, self.calls)
      tokens += sum(map(len, y2))
    return {"seconds": time.perf_counter() - t, "tokens": tokens}

  def breakdown(self, turns: int):
    self.times = {"prefill": 0.0, "decode": 0.0}
    total = self.run(turns)["seconds"]
    return {**self.times, "host": total - sum(self.times.values()), "total": total}


def main(argv):
  args = bench.parse_args(argv)
  runner = Runner(args)
  print(json.dumps({"ready": True}), flush=True)
  for line in sys.stdin:
    cmd = json.loads(line)["cmd"]
    if cmd == "quit":
      print(json.dumps({"bye": True}), flush=True)
      return
    if cmd == "check":
      out = runner.check()
    elif cmd.startswith("run"):
      out = runner.run(int(cmd[3:]))
    elif cmd.startswith("breakdown"):
      out = runner.breakdown(int(cmd[9:]))
    else:
      raise ValueError(f"tunix runner: unknown command {cmd!r}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
  main(sys.argv)
