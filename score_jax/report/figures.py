"""The report's figures (PNG, matplotlib Agg), each written only when some row has its data.

- `scaling.png`: parallel (dashed) vs sequential (solid) accuracy against the sample budget,
  log2 x axis, one colour per row, 95% bands (Figure 1, right);
- `attempts.png`: Acc@t1..tK per row with 95% bands (Figure 8);
- `edit_distance.png`: histogram of per-problem attempt-1 vs attempt-2 edit distance ratios,
  one panel per row, seeds pooled (Figure 5a);
- `training_curves.png`: held-out Acc@t1, Acc@t2 and answer change rate over training steps,
  thin lines per seed and a thick seed mean per row;
- `rl_curves.png`: what the learner saw each step: training reward per attempt, the
  answer change rate of the sampled episodes and the k3 KL to the base per attempt, as a
  5-step moving average (one step's batch is small and noisy) over the raw points.

`write_figures` returns, per file, whether it was written and, if not, why. matplotlib is
imported inside the plotting code so importing this module stays cheap.
"""

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from score_jax.report import stats

FILES = {
  "scaling": "scaling.png",
  "attempts": "attempts.png",
  "edit_distance": "edit_distance.png",
  "training_curves": "training_curves.png",
  "rl_curves": "rl_curves.png",
}
CURVE_PANELS = (
  ("eval/acc@t1", "held-out Acc@t1 (%)"),
  ("eval/acc@t2", "held-out Acc@t2 (%)"),
  ("eval/answer_change_rate", "answer change rate (%)"),
)
RL_PANELS = (
  ("train/reward_turn1", "training reward, attempt 1"),
  ("train/reward_turn2", "training reward, attempt 2"),
  ("train/answer_change_rate", "training answer change rate"),
  ("step/kl_k3_turn1", "KL to base, attempt 1 (k3)"),
  ("step/kl_k3_turn2", "KL to base, attempt 2 (k3)"),
)
SMOOTH = 5  # steps in the rl_curves moving average


def pyplot():
  """matplotlib.pyplot on the Agg backend, imported on first use (importing a report module
  stays cheap). Shared with score_jax.report.seeds."""
  import matplotlib

  matplotlib.use("Agg")  # headless: reports are made on clusters and CI as well as laptops
  import matplotlib.pyplot as plt

  return plt


def save_png(fig, path: str) -> str:
  """Writes `fig` to `path` as PNG, closes it, returns `path`."""
  tmp = path + ".tmp"
  fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
  pyplot().close(fig)
  os.replace(tmp, path)  # atomic: a killed report never leaves half an image
  return path


def labels(groups: list[stats.Group]) -> dict[int, str]:
  """A legend label per group: its title, plus its table where a title repeats across tables."""
  titles = [g.title for g in groups]
  return {
    id(g): g.title if titles.count(g.title) == 1 else f"{g.title} [{g.table}]" for g in groups
  }


def _band(ax, x, low, high, color) -> None:
  if low is not None and high is not None:
    ax.fill_between(x, low, high, color=color, alpha=0.15, lw=0)


def plot_scaling(groups: list[stats.Group], path: str) -> None:
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  names = labels(groups)
  for i, g in enumerate(groups):
    s, color = g.extras["scaling"], f"C{i % 10}"
    for kind, style in (("sequential", "-"), ("parallel", "--")):
      ax.plot(s["budgets"], s[kind], style, c=color, marker=".", label=f"{names[id(g)]}: {kind}")
      _band(ax, s["budgets"], s[f"{kind}_low"], s[f"{kind}_high"], color)
  ax.set_xscale("log", base=2)
  ax.set(xlabel="samples per problem (budget)", ylabel="accuracy (%)")
  ax.set_title("Parallel (dashed) vs sequential self-correction (solid)", fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  save_png(fig, path)


def plot_attempts(groups: list[stats.Group], path: str) -> None:
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  names = labels(groups)
  for i, g in enumerate(groups):
    a, color = g.extras["attempts"], f"C{i % 10}"
    ax.plot(a["k"], a["mean"], "-", c=color, marker="o", ms=3, label=names[id(g)])
    _band(ax, a["k"], a["low"], a["high"], color)
  ax.set(xlabel="attempt", ylabel="accuracy (%)", title="Accuracy at each attempt")
  ax.xaxis.get_major_locator().set_params(integer=True)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  save_png(fig, path)


def plot_edit_distance(groups: list[stats.Group], path: str) -> None:
  plt = pyplot()
  names = labels(groups)
  cols = min(len(groups), 4)  # wrap: a dozen rows side by side would be unreadable
  nrows = -(-len(groups) // cols)
  fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.4 * nrows), squeeze=False,
                           sharey=True)  # fmt: skip
  bins = np.linspace(0.0, 1.0, 21)
  for ax in axes.flat[len(groups) :]:
    ax.set_visible(False)
  for ax, g in zip(axes.flat, groups):
    ratios = np.concatenate([r.edit_ratios for r in g.runs])
    # Bar heights as fractions of problems: rows with different problem counts compare.
    ax.hist(ratios, bins=bins, weights=np.full(ratios.shape, 1.0 / ratios.size), color="C0")
    ax.set_title(f"{names[id(g)]}\nmean {ratios.mean():.3f}, {ratios.size} episodes", fontsize=9)
    ax.set_xlabel("edit distance ratio (attempt 1 vs 2)")
    ax.set_xlim(0.0, 1.0)
    ax.grid(alpha=0.3)
  for ax in axes[:, 0]:
    ax.set_ylabel("fraction of problems")
  save_png(fig, path)


def _moving_average(values, width: int) -> np.ndarray:
  v = np.asarray(values, dtype=float)
  return np.array([v[max(0, i - width + 1) : i + 1].mean() for i in range(len(v))])


def _plot_curves(groups, path: str, panels, scale: float, smooth: int) -> None:
  """One panel per scalar: thin per-seed lines, a thick seed mean (moving average if smooth)."""
  plt = pyplot()
  names = labels(groups)
  fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
  for ax, (key, ylabel) in zip(axes[0], panels):
    for i, g in enumerate(groups):
      curve, color = (g.extras.get("curves") or {}).get(key), f"C{i % 10}"
      if not curve:
        continue
      for points in curve["per_seed"].values():  # thin per-seed lines behind the mean
        steps, values = zip(*points)
        ax.plot(steps, [scale * v for v in values], "-", c=color, lw=0.6, alpha=0.35)
      mean = scale * np.asarray(curve["mean"], dtype=float)
      line = _moving_average(mean, smooth) if smooth > 1 else mean
      ax.plot(curve["steps"], line, "-", c=color, lw=2, marker="." if smooth <= 1 else None,
              label=names[id(g)])  # fmt: skip
    ax.set(xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  save_png(fig, path)


def plot_training_curves(groups: list[stats.Group], path: str) -> None:
  _plot_curves(groups, path, CURVE_PANELS, scale=100, smooth=1)


def plot_rl_curves(groups: list[stats.Group], path: str) -> None:
  _plot_curves(groups, path, RL_PANELS, scale=1, smooth=SMOOTH)


def _has(panels) -> Callable[[stats.Group], bool]:
  return lambda g: any((g.extras.get("curves") or {}).get(k) for k, _ in panels)


# name -> (which groups have its data, plotter, why it is absent).
_PLOTS: dict[str, tuple[Callable[[stats.Group], Any], Callable, str]] = {
  "scaling": (lambda g: g.extras.get("scaling"), plot_scaling, "no workdir has eval/scaling.json"),
  "attempts": (
    lambda g: g.extras.get("attempts"),
    plot_attempts,
    "no workdir has eval/attempts.json",
  ),
  "edit_distance": (
    lambda g: sum(r.edit_ratios.size for r in g.runs),
    plot_edit_distance,
    "no eval/final.json episode has an edit_ratio",
  ),
  "training_curves": (
    _has(CURVE_PANELS),
    plot_training_curves,
    "no workdir's metrics.jsonl has eval/acc@t1, eval/acc@t2 or eval/answer_change_rate",
  ),
  "rl_curves": (
    _has(RL_PANELS),
    plot_rl_curves,
    "no workdir's metrics.jsonl has training rewards, answer change rates or KLs",
  ),
}


def write_figures(groups: list[stats.Group], out: str) -> dict[str, dict[str, Any]]:
  """Every figure whose data some group has, into `out`; file name -> written / why not."""
  result = {}
  for name, (has, plot, why) in _PLOTS.items():
    file = FILES[name]
    chosen = [g for g in groups if has(g)]
    path = os.path.join(out, file)
    if chosen:
      plot(chosen, path)
      result[file] = {"written": True, "rows": [f"{g.table}/{g.row}" for g in chosen]}
    else:
      if os.path.exists(path):
        os.remove(path)  # a stale figure from an earlier report would contradict this one
      result[file] = {"written": False, "why": why}
  return result
