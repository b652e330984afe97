"""Analytic model FLOPs: the MFU convention (matmuls and attention; remat recomputation not counted).

N = matmul parameters including the output head (a tied embedding counts once, as the head: the
input lookup is a gather); T = tokens. A forward costs 2 N T plus attention's 4 t s h k per
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
  params = decoder.abstract_params(cfg)
  return sum(
    int(np.prod(x.shape))
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
    if "scale" not in jax.tree_util.keystr(path) and "bias" not in jax.tree_util.keystr(path)
  )


def forward(cfg: ModelConfig, rows: int, new_tokens: int, keys: int | None = None) -> float:
  """One forward over `new_tokens` per row attending to `keys` positions (default: causal over
  the new tokens, counted as full t x t as kernels without block skipping do)."""
  keys = new_tokens if keys is None else keys
  attention = 4.0 * rows * new_tokens * keys * cfg.num_heads * cfg.head_dim * cfg.num_layers
  return 2.0 * matmul_params(cfg) * rows * new_tokens + attention


def policy_update(cfg: ModelConfig, rows: int, seq: int) -> float:
  """An RL update over [rows, seq]: the policy's forward + backward and the reference forward."""
  return 4.0 * forward(cfg, rows, seq)


def decode(cfg: ModelConfig, rows: int, steps: int, cache_len: int) -> float:
  """`steps` one-token forwards per row, each attending to (at most) `cache_len` slots."""
  return steps * forward(cfg, rows, 1, cache_len)
