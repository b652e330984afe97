"""Tests for score_jax.report.seeds: seed statistics, the table, input errors, real PNG files."""

import copy
import json
import math
import os

import matplotlib.image
import numpy as np
import pytest

from score_jax.report import figures
from score_jax.report import seeds as report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metrics(t1, t2, i2c, c2i, change):
  return {
    "acc@t1": t1,
    "acc@t2": t2,
    "delta(t1,t2)": i2c - c2i,
    "delta_i->c(t1,t2)": i2c,
    "delta_c->i(t1,t2)": c2i,
    "answer_change_rate": change,
    "edit_distance_ratio": 0.1,
    "num_examples": 100.0,
  }


def _curve(t1s, t2s, phases):
  return [
    {"step": 10 * k, "phase": ph, "acc@t1": a, "acc@t2": b}
    for k, (a, b, ph) in enumerate(zip(t1s, t2s, phases))
  ]


def _runs():
  """Base (1 seed), SCoRe and naive RL (3 seeds each), with hand-picked metrics."""
  runs = [
    {"method": "base", "seed": 0, "metrics": _metrics(0.40, 0.38, 0.02, 0.04, 0.05),
     "edit_ratios": [0.0, 0.0, 0.02, 0.1], "curve": []},
  ]  # fmt: skip
  phases = ["stage1", "stage1", "stage2", "stage2"]
  score = [
    (0.50, 0.70, 0.25, 0.05, 0.30),
    (0.52, 0.74, 0.26, 0.04, 0.32),
    (0.48, 0.72, 0.27, 0.03, 0.34),
  ]
  for seed, m in enumerate(score):
    runs.append({"method": "score", "seed": seed, "metrics": _metrics(*m),
                 "edit_ratios": [0.3, 0.5, 0.0, 0.9, 1.0],
                 "curve": _curve([0.4, 0.45, 0.5, m[0]], [0.38, 0.5, 0.65, m[1]],
                                 phases)})  # fmt: skip
  naive = [
    (0.55, 0.55, 0.01, 0.01, 0.02),
    (0.57, 0.56, 0.00, 0.01, 0.01),
    (0.53, 0.54, 0.02, 0.01, 0.03),
  ]
  for seed, m in enumerate(naive):
    runs.append({"method": "naive", "seed": seed + 7, "metrics": _metrics(*m),
                 "edit_ratios": [0.0, 0.0, 0.0, 0.05],
                 "curve": _curve([0.4, 0.5, m[0]], [0.4, 0.5, m[1]], ["rl"] * 3)})  # fmt: skip
  return runs


def test_summarize_means_and_population_stds():
  rows = report.summarize(_runs())
  assert [r["method"] for r in rows] == ["base", "score", "naive"]  # input order kept
  assert [r["name"] for r in rows] == ["Base model", "SCoRe (Stage I + II)", "Naive multi-turn RL"]
  assert [r["num_seeds"] for r in rows] == [1, 3, 3]
  base, score, naive = rows
  assert base["acc_t1_mean"] == pytest.approx(40.0) and base["acc_t1_std"] == 0.0
  assert base["delta_mean"] == pytest.approx(-2.0)
  assert score["acc_t1_mean"] == pytest.approx(50.0)
  assert score["acc_t1_std"] == pytest.approx(math.sqrt(8 / 3))  # {-2, 2, 0} -> var 8/3
  assert score["acc_t2_mean"] == pytest.approx(72.0)
  assert score["acc_t2_std"] == pytest.approx(math.sqrt(8 / 3))
  assert score["delta_i2c_mean"] == pytest.approx(26.0)
  assert score["delta_i2c_std"] == pytest.approx(math.sqrt(2 / 3))
  assert score["delta_c2i_mean"] == pytest.approx(4.0)
  assert score["delta_mean"] == pytest.approx(22.0)
  assert score["delta_std"] == pytest.approx(math.sqrt(8 / 3))  # {20, 22, 24}
  assert score["answer_change_mean"] == pytest.approx(32.0)
  assert score["answer_change_std"] == pytest.approx(math.sqrt(8 / 3))  # {30, 32, 34}
  assert naive["delta_mean"] == pytest.approx(0.0, abs=1e-12)
  assert naive["delta_c2i_std"] == pytest.approx(0.0, abs=1e-12)
  assert naive["seeds"] == [7, 8, 9]
  assert naive["acc_t2_std"] == pytest.approx(np.std([55.0, 56.0, 54.0]))


def test_markdown_table_cells():
  table = report.markdown_table(report.summarize(_runs()))
  lines = table.strip().split("\n")
  assert len(lines) == 2 + 3  # header, separator, one line per method
  assert lines[0] == (
    "| Method | Acc@t1 | Acc@t2 | Δ(t1,t2) | Δ i→c | Δ c→i | Answer change | Seeds |"
  )
  assert set(lines[1]) <= set("|-:")
  score = [c.strip() for c in lines[3].strip("|").split("|")]
  assert score == [
    "SCoRe (Stage I + II)", "50.0 ± 1.6", "72.0 ± 1.6", "+22.0 ± 1.6", "+26.0 ± 0.8",
    "+4.0 ± 0.8", "32.0 ± 1.6", "3",
  ]  # fmt: skip
  base = [c.strip() for c in lines[2].strip("|").split("|")]
  assert base[3] == "-2.0 ± 0.0" and base[-1] == "1"
  naive = [c.strip() for c in lines[4].strip("|").split("|")]
  assert naive[3] == "0.0 ± 0.8"  # deltas {0, -1, +1}: a zero mean carries no sign


def test_findings_check_the_seed_means():
  found = report.findings(report.summarize(_runs()))
  got = {f["claim"].split(":")[0] + ": " + f["measured"]: f["holds"] for f in found}
  assert got == {
    "base model: Delta -2.0": True,
    "SCoRe: Delta +22.0": True,
    "SCoRe: c->i 4.0": False,  # 5, 4, 3 -> mean 4 > 2
    "SCoRe: 72.0 vs base 38.0": True,
    "naive multi-turn RL: 0.0 vs SCoRe +22.0": True,  # a zero mean carries no sign
    "naive multi-turn RL: 2.0% vs SCoRe 32.0%": True,
  }
  text = report.findings_text(found)
  assert "- [ ] SCoRe: few right answers broken (c->i <= 2): c->i 4.0\n" in text
  assert text.count("- [x] ") == 5
  # A naive run that changes more answers than SCoRe has not collapsed; without SCoRe runs the
  # comparisons are left out rather than guessed.
  runs = [r for r in _runs() if r["method"] != "naive"]
  runs += [{**r, "method": "naive", "seed": 9} for r in _runs() if r["method"] == "score"][2:]
  found = report.findings(report.summarize(runs))
  assert [f["holds"] for f in found if f["claim"].startswith("naive")] == [False, False]
  base_only = report.findings(report.summarize(_runs()[:1]))
  assert [f["claim"] for f in base_only] == [
    "base model: a second attempt does not help (Delta <= 0)"
  ]


def test_console_table_is_aligned():
  rows = report.summarize(_runs())
  lines = report.format_table_for_console(rows).rstrip("\n").split("\n")
  assert len(lines) == 5 and set(lines[1]) <= {"-", " "}
  assert len({len(line) for line in lines}) == 1  # every line as wide as the rule
  assert "+22.0 ± 1.6" in lines[3] and lines[3].startswith("SCoRe (Stage I + II)")


@pytest.mark.parametrize(
  "mutate, match",
  [
    (lambda rs: rs[2]["metrics"].pop("acc@t2"), r"runs\[2\].*'acc@t2'"),
    (
      lambda rs: rs[4]["metrics"].update({"delta_c->i(t1,t2)": float("nan")}),
      r"runs\[4\]\['metrics'\]\['delta_c->i\(t1,t2\)'\]: not a finite",
    ),  # fmt: skip
    (lambda rs: rs[0]["metrics"].update({"acc@t1": None}), r"runs\[0\].*'acc@t1'.*not a finite"),
    (lambda rs: rs[6].update({"seed": 8}), r"runs\[6\]: duplicate \(method, seed\).*runs\[5\]"),
    (lambda rs: rs[3].pop("seed"), r"runs\[3\]: missing key 'seed'"),
    (lambda rs: rs[1]["curve"][2].pop("phase"), r"runs\[1\]\['curve'\]\[2\]: missing key 'phase'"),
  ],
)
def test_bad_input_names_run_and_key(mutate, match):
  runs = _runs()
  mutate(runs)
  with pytest.raises(ValueError, match=match):
    report.summarize(runs)


def test_edit_ratios_stack_changed_answers_apart_from_kept_ones(tmp_path, monkeypatch):
  drawn = []
  save = figures.save_png

  def capture(fig, path):
    drawn.append([(ax.get_title(),
                   [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else [])
                  for ax in fig.axes])  # fmt: skip
    return save(fig, path)

  monkeypatch.setattr(figures, "save_png", capture)
  runs = _runs()
  for run in runs:  # the same ratio, answer kept on half the problems
    run["answer_changed"] = [i % 2 == 0 for i in range(len(run["edit_ratios"]))]
  _check_png(report.plot_edit_ratios(runs, str(tmp_path / "stacked.png")))
  titles, legends = zip(*drawn[0])
  assert "Base model\nmean 0.030, answer changed 50.0%" in titles
  assert all(legend == ["same answer", "answer changed"] for legend in legends)
  runs[2]["answer_changed"] = [True]
  with pytest.raises(ValueError, match=r"runs\[2\]\['answer_changed'\]: 1 flags for 5"):
    report.plot_edit_ratios(runs, str(tmp_path / "bad.png"))


def test_bad_edit_ratios_and_empty_runs(tmp_path):
  runs = _runs()
  runs[3]["edit_ratios"] = [0.2, 1.5]
  with pytest.raises(ValueError, match=r"runs\[3\]\['edit_ratios'\]: values outside"):
    report.plot_edit_ratios(runs, str(tmp_path / "e.png"))
  with pytest.raises(ValueError, match="no runs"):
    report.summarize([])


def _check_png(path):
  with open(path, "rb") as f:
    assert f.read(8) == PNG_MAGIC
  img = matplotlib.image.imread(path)
  assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 200
  assert img[..., :3].std() > 0.01  # something was drawn, not a blank canvas


def test_write_report_files(tmp_path):
  runs = _runs()
  before = copy.deepcopy(runs)
  out = str(tmp_path / "report")
  paths = report.write_report(runs, out)
  assert runs == before  # the input is not modified
  assert set(paths) == {"markdown", "json", "curves", "flips", "edit_ratios"}
  assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in paths.values())
  for name in ("curves", "flips", "edit_ratios"):
    _check_png(paths[name])
  with open(paths["json"], encoding="utf-8") as f:
    data = json.load(f)
  rows = report.summarize(runs)
  assert data == {"rows": rows, "findings": report.findings(rows), "runs": runs}
  with open(paths["markdown"], encoding="utf-8") as f:
    md = f.read()
  assert md.startswith("# ") and report.markdown_table(data["rows"]) in md
  assert "- SCoRe (Stage I + II): 3 seeds" in md and "- Base model: 1 seed (0)" in md
  assert report.findings_text(data["findings"]) in md
  for f in ("accuracy_curves.png", "flips.png", "edit_ratios.png"):
    assert f"]({f})" in md


def test_plot_curves_draws_one_base_line_when_both_attempts_score_the_same(tmp_path, monkeypatch):
  legends = []
  save = figures.save_png

  def capture(fig, path):
    legends.append([t.get_text() for t in fig.axes[0].get_legend().get_texts()])
    return save(fig, path)

  monkeypatch.setattr(figures, "save_png", capture)
  runs = _runs()
  report.plot_curves(runs, str(tmp_path / "two.png"))
  runs[0]["metrics"] = _metrics(0.40, 0.40, 0.0, 0.0, 0.0)
  report.plot_curves(runs, str(tmp_path / "one.png"))
  assert "base acc@t1 (40.0)" in legends[0] and "base acc@t2 (38.0)" in legends[0]
  assert "base acc@t1 = acc@t2 (40.0)" in legends[1]
  assert not any(label.startswith(("base acc@t1 (", "base acc@t2 (")) for label in legends[1])


def test_plot_curves_two_phases_and_ragged_steps(tmp_path):
  runs = _runs()
  runs[2]["curve"] = runs[2]["curve"][:3]  # one seed stopped early: the mean uses the others
  runs[4]["curve"] = []  # and one naive seed logged no curve at all
  path = report.plot_curves(runs, str(tmp_path / "curves.png"))
  _check_png(path)
  assert report._phase_spans(runs[1:4]) == [("stage1", 0, 10), ("stage2", 20, 30)]
  steps, mean = report._mean_curve(runs[1:4], "acc@t2")
  np.testing.assert_allclose(steps, [0, 10, 20, 30])
  np.testing.assert_allclose(
    mean, [38.0, 50.0, 65.0, 71.0]
  )  # step 30: seeds 0 and 2, (70 + 72) / 2
  only_base = [r for r in runs if r["method"] == "base"]
  _check_png(report.plot_curves(only_base, str(tmp_path / "base_only.png")))
