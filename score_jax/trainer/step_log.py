"""What the loop records of each step beyond the update's own metrics.

`host_metrics`: self-correction metrics of the sampled episodes, lengths, truncation, answer
changes and edit distances between attempts, reward outcomes and throughput (all gathered over
processes). `episode_records`: full episodes for the periodic dumps. `save_nonfinite`: the
batch of a non-finite update, kept for debugging.
"""

import json
import os
import time

import jax
import numpy as np

from score_jax import storage
from score_jax.parallel import hosts
from score_jax.rewards.outcome import Outcome
from score_jax.trainer import metrics


def host_metrics(task, ep, rewards_g, counts, timer, update_flops=0.0) -> dict[str, float]:
  """Self-correction metrics, lengths, truncation, text diagnostics, throughput, outcomes.

  Throughput: `time/step_s` (wall since the timer started), `time/host_s` (what the timed phases
  leave: batching, transfers, bookkeeping), `episodes_per_s`, and with `update_flops` (the
  update's model FLOPs, models.flops.policy_update) the update's achieved `update_gflops_per_s`.
  """
  out = {f"train/{k}": v for k, v in metrics.self_correction_metrics(rewards_g > 0).items()}
  k = rewards_g.shape[1]
  for a in range(k):
    out[f"train/reward_turn{a + 1}"] = float(rewards_g[:, a].mean())
  lengths = hosts.allgather(ep.lengths)
  trunc = hosts.allgather(ep.truncated)
  for a in range(k):
    out[f"len/turn{a + 1}_mean"] = float(lengths[:, a].mean())
    out[f"len/turn{a + 1}_truncation_rate"] = float(trunc[:, a].mean())
  if k > 1:
    out.update(_change_metrics(task, ep.texts))
  for name, v in counts.items():
    out[f"outcomes/{name}"] = float(v)
  out.update(timer.summary())
  sampled = float(lengths.sum())
  out["tokens_per_s"] = sampled / max(timer.seconds.get("sampling", 0.0), 1e-9)
  step_s = timer.elapsed()
  out["time/step_s"] = step_s
  out["time/host_s"] = max(step_s - sum(timer.seconds.values()), 0.0)
  out["episodes_per_s"] = rewards_g.shape[0] / max(step_s, 1e-9)
  if update_flops and timer.seconds.get("update"):
    out["update_gflops_per_s"] = update_flops / timer.seconds["update"] / 1e9
  return out


def _change_metrics(task, texts) -> dict[str, float]:
  """How often attempt 2 changes attempt 1's answer, and how much of its text it rewrites.

  Training-time answer changes compare extracted answers as text (the eval uses the checker).
  """
  answers = [[task.final_answer(t) for t in row] for row in texts]
  changed = np.array(
    [[(x or "").strip() != (y or "").strip() for x, y in zip(r, r[1:])] for r in answers]
  )
  k = len(texts[0])
  edit = np.stack(
    [
      metrics.edit_distance_ratios([r[a] for r in texts], [r[a + 1] for r in texts])
      for a in range(k - 1)
    ],
    axis=1,
  )
  return {
    "train/answer_change_rate": float(hosts.allgather(changed)[:, 0].mean()),
    "train/edit_distance_ratio": float(hosts.allgather(edit)[:, 0].mean()),
  }


def episode_records(task, ep, exs, rewards, outcomes, n: int) -> list[dict]:
  """The first `n` episodes of the step, as JSON-ready records."""
  out = []
  for i in range(min(n, len(exs))):
    out.append(
      {
        "prompt": task.first_turn(exs[i]),
        "id": exs[i].id,
        "attempts": ep.texts[i],
        "rewards": rewards[i].tolist(),
        "outcomes": [Outcome(int(o)).name.lower() for o in outcomes[i]],
        "turn_lengths": ep.lengths[i].tolist(),
        "truncated": ep.truncated[i].tolist(),
        "time": time.time(),
      }
    )
  return out


def save_nonfinite(workdir: str, step: int, batch, m: dict) -> str:
  """This process's rows of the batch (npz) and the step's metrics (json); returns the npz path."""
  d = os.path.join(workdir, "nonfinite")
  me = jax.process_index()
  path = os.path.join(d, f"step_{step}_process_{me}.npz")
  local = {}
  for name in batch.present():
    v = getattr(batch, name)
    local[name] = np.asarray(v.addressable_data(0)) if isinstance(v, jax.Array) else np.asarray(v)
  storage.write_atomic(path, storage.buffer_of(lambda f: np.savez(f, **local)))
  scalars = {k: float(np.asarray(v)) for k, v in m.items()}
  summary = json.dumps({"step": step, "metrics": scalars}, indent=1)
  storage.write_atomic(os.path.join(d, f"step_{step}_process_{me}.json"), summary)
  return path
