"""Analytic model FLOPs: the MFU convention (matmuls and attention; remat recomputation not
counted).

N = matmul parameters including the output head (the input lookup is a gather, tied to the head
or not: not counted); T = tokens. A forward costs 2 N T plus attention's 4 t s h k per
layer per row (scores and weighted values over s keys); a backward costs twice its forward.
XLA's `cost_analysis()` counts a while loop's body once (scanned layers, micro-batch scans,
the decode loop), so these formulas, not the compiler's figure, are what step-time estimates
and MFU use.
"""

import jax
import numpy as np

from score_jax.models import decoder
from score_jax.models.config import ModelConfig


def matmul_params(cfg: ModelConfig) -> int:
  """Parameters that enter a matmul (norm scales and biases left out)."""
  return _layer_matmul_params(cfg) + _head_params(cfg)


def _head_params(cfg: ModelConfig) -> int:
  return cfg.vocab_size * cfg.embed_dim


def _layer_matmul_params(cfg: ModelConfig) -> int:
  """The layers' matmul parameters (an untied input embedding is a gather, not counted)."""
  layers = decoder.abstract_params(cfg)["layers"]
  return sum(
    int(np.prod(x.shape))
    for path, x in jax.tree_util.tree_flatten_with_path(layers)[0]
    if "scale" not in jax.tree_util.keystr(path) and "bias" not in jax.tree_util.keystr(path)
  )


def forward(
  cfg: ModelConfig,
  rows: int,
  new_tokens: int,
  keys: int | None = None,
  head_tokens: int | None = None,
  last_layer_queries: int | None = None,
) -> float:
  """One forward over `new_tokens` per row attending to `keys` positions (default: causal over
  the new tokens, counted as full t x t as kernels without block skipping do), with the output
  head at `head_tokens` of them (default: all; an RL update computes logits only before its
  loss tokens, `LossConfig.max_new_tokens`, and counting the skipped ones would inflate MFU).

  `last_layer_queries` (default: all new tokens): the last layer's queries, attention, o_proj
  and MLP run at this many tokens only, its keys and values at all (`decoder.logits_at_slots`).
  """
  keys = new_tokens if keys is None else keys
  head_tokens = new_tokens if head_tokens is None else min(head_tokens, new_tokens)
  queries = new_tokens if last_layer_queries is None else min(last_layer_queries, new_tokens)
  per_layer = _layer_matmul_params(cfg) / cfg.num_layers
  query_side = per_layer - 2 * cfg.embed_dim * cfg.num_kv_heads * cfg.head_dim  # all but k, v
  body = per_layer * cfg.num_layers * new_tokens - query_side * (new_tokens - queries)
  per_query = 4.0 * rows * keys * cfg.num_heads * cfg.head_dim
  attention = per_query * (new_tokens * (cfg.num_layers - 1) + queries)
  return 2.0 * rows * (body + _head_params(cfg) * head_tokens) + attention


def policy_update(cfg: ModelConfig, rows: int, seq: int, head_slots: int | None = None) -> float:
  """An RL update over [rows, seq]: the policy's forward + backward and the reference forward,
  each with logits, and the last layer's query side, at `head_slots` slots per row (default:
  every slot)."""
  return 4.0 * forward(cfg, rows, seq, head_tokens=head_slots, last_layer_queries=head_slots)


def decode(cfg: ModelConfig, rows: int, steps: int, cache_len: int) -> float:
  """`steps` one-token forwards per row, each attending to (at most) `cache_len` slots."""
  return steps * forward(cfg, rows, 1, cache_len)


def rl_step(
  cfg: ModelConfig,
  prompts: int,
  samples: int,
  prompt_len: int,
  gen_len: int,
  attempts: int = 1,
  instr_len: int = 0,
) -> dict[str, float]:
  """One RL step's model FLOPs: {'sample', 'update', 'total'}.

  Sampling as the sampler runs it: one prefill per unique prompt (logits at its last slot), per
  later attempt the instruction appended to every row, and `gen_len` decode steps per attempt
  over the slots that attempt can reach. The update over the whole stream (prompt, attempts,
  instructions) with logits before the loss tokens (every attempt's). This is the work itself,
  whatever the implementation: a two-attempt step's time over a one-attempt step's cannot fall
  far below the ratio of these counts.
  """
  rows = prompts * samples
  sample = forward(cfg, prompts, prompt_len, head_tokens=1)
  slots = prompt_len
  for attempt in range(attempts):
    if attempt:
      slots += instr_len
      sample += forward(cfg, rows, instr_len, keys=slots, head_tokens=1)
    slots += gen_len
    sample += decode(cfg, rows, gen_len, slots)
  update = policy_update(cfg, rows, slots, head_slots=attempts * gen_len)
  return {"sample": sample, "update": update, "total": sample + update}
