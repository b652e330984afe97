"""score_jax.report on real-format workdirs: tables, intervals, comparisons, missing runs, files.

Every expected number is recomputed here from the per-problem outcomes the fixture wrote, not
read back from the report's own code.
"""

import json
import os

import numpy as np
import pytest

from score_jax.configs import paper
from score_jax.report import build
from score_jax.trainer import confidence
from tests.report import fake_workdirs

N = 200  # problems per evaluation
RESAMPLES = 1000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_OPTIONAL = ("attempts", "scaling", "fixed_first")
LEVELS = {
  str(k): {"acc@t1": 0.1 * k, "acc@t2": 0.1 * k + 0.02, "delta_i->c(t1,t2)": 0.03,
           "delta_c->i(t1,t2)": 0.01, "num_examples": 40}
  for k in range(1, 6)
}  # fmt: skip


def _bootstrap(x_b: np.ndarray, num_resamples: int = RESAMPLES) -> tuple[float, float]:
  """Percentile interval of the mean of x_b over problems, drawn as trainer.confidence draws."""
  rng = np.random.default_rng(0)
  means, done = [], 0
  while done < num_resamples:
    k = min(500, num_resamples - done)
    means.append(x_b[rng.integers(0, x_b.size, (k, x_b.size))].mean(axis=1))
    done += k
  lo, hi = np.percentile(np.concatenate(means), [2.5, 97.5])
  return min(lo, x_b.mean()), max(hi, x_b.mean())


def pt(x: float, signed: bool = False) -> str:
  s = f"{x:+.1f}" if signed else f"{x:.1f}"
  return s[1:] if s in ("+0.0", "-0.0") else s


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A sweep folder: Table 2 (base, SCoRe x3, Pair-SFT x2 with differing problems), Table 3
  (base, SCoRe), an unfinished run, a stray folder, a duplicate seed; plus a missing path."""
  root = str(tmp_path_factory.mktemp("sweep"))
  rng = np.random.default_rng(0)
  c = {}
  c["base"] = fake_workdirs.correctness(rng, N, 0.5, 0.05, 0.15)
  paths = [fake_workdirs.make(root, "t2_base", "base", "table2", 0, correct_ba=c["base"],
                              curve=False, per_level=LEVELS)]  # fmt: skip
  for s in range(3):
    c[f"score{s}"] = fake_workdirs.correctness(rng, N, 0.55, 0.3, 0.03)
    paths.append(fake_workdirs.make(root, f"t2_score_s{s}", "score", "table2", s,
                                    correct_ba=c[f"score{s}"], optional=ALL_OPTIONAL,
                                    per_level=LEVELS))  # fmt: skip
  for s in range(2):
    c[f"pair{s}"] = fake_workdirs.correctness(rng, N, 0.5, 0.1, 0.05)
    ids = [f"p{i + 100 * s}" for i in range(N)]
    paths.append(fake_workdirs.make(root, f"t2_pair_s{s}", "pair_sft", "table2", s, ids=ids,
                                    correct_ba=c[f"pair{s}"]))  # fmt: skip
  c["t3_base"] = fake_workdirs.correctness(rng, N, 0.5, 0.05, 0.1)
  fake_workdirs.make(root, "t3_base", "base", "table3", 0, correct_ba=c["t3_base"],
                     curve=False, optional=("repair",))  # fmt: skip
  c["t3_score"] = fake_workdirs.correctness(rng, N, 0.5, 0.2, 0.05)
  fake_workdirs.make(root, "t3_score", "score", "table3", 0, correct_ba=c["t3_score"],
                     optional=("repair_episodes", "pass_at_k"))  # fmt: skip
  fake_workdirs.make(root, "zz_dup", "score", "table2", 1, correct_ba=c["score1"])
  fake_workdirs.write_config(os.path.join(root, "unfinished"), "no_stage1", "table4", 0)
  os.makedirs(os.path.join(root, "stray"))
  missing = os.path.join(root, "..", "does_not_exist")
  out = os.path.join(root, "report")
  report = build.write_report([root, missing], out, num_resamples=RESAMPLES)
  with open(report.markdown_path) as f:
    md = f.read()
  with open(report.json_path) as f:
    js = json.load(f)
  return {"root": root, "out": out, "c": c, "md": md, "json": js, "report": report,
          "missing": missing}  # fmt: skip


def section(md: str, title: str) -> str:
  start = md.index(f"## {title}\n")
  end = md.find("\n## ", start + 1)
  return md[start : end if end >= 0 else len(md)]


def line(text: str, first_cell: str) -> str:
  hits = [ln for ln in text.splitlines() if ln.startswith(f"| {first_cell} |")]
  assert hits, f"no table line for {first_cell!r} in:\n{text}"
  return hits[0]


def json_row(js, table, row):
  t = next(t for t in js["tables"] if t["table"] == table)
  return next(r for r in t["rows"] if r["row"] == row)


def test_single_seed_row_matches_confidence_bootstrap(runs):
  correct = runs["c"]["base"]
  iv = confidence.bootstrap_intervals(correct, num_resamples=RESAMPLES, seed=0)
  text = line(section(runs["md"], paper.TABLES["table2"][0]), "Base model")
  for k, col in enumerate(paper.T12):
    signed = col == "delta(t1,t2)"
    want = f"{pt(100 * iv[col].value, signed)} [{pt(100 * iv[col].low)}, {pt(100 * iv[col].high)}]"
    want += f" (paper {pt(paper.ROWS['base'].paper['table2'][k], signed)})"
    assert want in text, (want, text)
  assert text.endswith("| 1 |")  # seeds


def test_multi_seed_row_pools_problems_over_seeds(runs):
  c_sba = np.stack([runs["c"][f"score{s}"] for s in range(3)])
  per_problem_sb = {  # [seeds, problems] 0/1 per column
    "acc@t1": c_sba[..., 0],
    "acc@t2": c_sba[..., 1],
    "delta_i->c(t1,t2)": ~c_sba[..., 0] & c_sba[..., 1],
  }
  printed = {"acc@t1": 60.0, "acc@t2": 64.4, "delta_i->c(t1,t2)": 5.8}
  text = line(section(runs["md"], paper.TABLES["table2"][0]), "SCoRe")
  row = json_row(runs["json"], "table2", "score")
  for col, x_sb in per_problem_sb.items():
    x_b = x_sb.mean(0)  # each problem's correctness averaged over the seeds
    lo, hi = _bootstrap(x_b)
    want = f"{pt(100 * x_b.mean())} [{pt(100 * lo)}, {pt(100 * hi)}] (paper {pt(printed[col])})"
    assert want in text, (want, text)
    got = row["columns"][col]
    np.testing.assert_allclose(
      [got["value"], got["low"], got["high"]], [100 * x_b.mean(), 100 * lo, 100 * hi], rtol=1e-12
    )
    assert got["paper"] == printed[col] and got["kind"] == "ci95"
    np.testing.assert_allclose(got["per_seed"], 100 * x_sb.mean(1))
  assert text.endswith("| 3 |")
  assert row["seeds"] == [0, 1, 2] and "averaged over 3 seeds" in row["interval"]
  spread = section(runs["md"], paper.TABLES["table2"][0]).split("Spread across seeds")[1]
  per_seed = 100 * c_sba[..., 1].mean(1)
  assert f"{pt(per_seed.min())}..{pt(per_seed.max())}" in line(spread, "SCoRe")


def test_differing_problem_ids_fall_back_to_seed_spread(runs):
  row = json_row(runs["json"], "table2", "pair_sft")
  assert "problem ids differ" in row["interval"] and "min..max" in row["interval"]
  per_seed = [100 * runs["c"][f"pair{s}"][:, 1].mean() for s in range(2)]
  got = row["columns"]["acc@t2"]
  assert got["low"] == pytest.approx(min(per_seed)) and got["high"] == pytest.approx(max(per_seed))
  sec = section(runs["md"], paper.TABLES["table2"][0])
  assert "problem ids differ" in sec
  assert f"[{pt(min(per_seed))}..{pt(max(per_seed))} over seeds]" in line(sec, "Pair-SFT D")


def test_paired_comparison_against_score(runs):
  sec = section(runs["md"], paper.TABLES["table2"][0])
  assert "Paired comparison with SCoRe" in sec
  base, score = runs["c"]["base"][:, 1], runs["c"]["score0"][:, 1]
  only_score, only_base = int((score & ~base).sum()), int((base & ~score).sum())
  p = confidence.mcnemar_p_value(only_score, only_base)
  table = sec.split("Paired comparison")[1]
  want = f"| Base model | 0 | {N} | {pt(100 * (base.mean() - score.mean()), True)} ["
  assert want in table
  assert line(table, "Base model").endswith(f"| {only_score} | {only_base} | {p:.3g} |")
  comps = next(t for t in runs["json"]["tables"] if t["table"] == "table2")["comparisons"]
  base_comp = next(c for c in comps if c["row"] == "base")
  assert base_comp["reference"] == "score" and base_comp["per_seed"][0]["p_value"] == p
  # Pair-SFT: seed s vs SCoRe seed s on the problems both evaluated, plus the seed average.
  pair = next(c for c in comps if c["row"] == "pair_sft")
  assert [s["num_problems"] for s in pair["per_seed"]] == [N, N // 2]
  assert pair["num_problems"] == N // 2
  x = np.mean([runs["c"][f"score{s}"][100:, 1] for s in range(3)], 0)
  y = np.mean([runs["c"]["pair0"][100:, 1], runs["c"]["pair1"][:100, 1]], 0)
  assert pair["averaged"]["value"] == pytest.approx(100 * (y - x).mean())
  assert "| Pair-SFT D | mean over seeds | 100 |" in table


def test_not_run_missing_and_duplicates_are_named(runs):
  md, js, root = runs["md"], runs["json"], runs["root"]
  assert "Not run: Self-Refine (`self_refine`), STaR D+ (`star_plus`)" in md
  gone = section(md, "Missing / unfinished workdirs")
  named = {m["path"]: m["reason"] for m in js["missing"]}
  for path, reason in ((runs["missing"], "does not exist"),
                       (os.path.join(root, "unfinished"), "unfinished: no eval/final.json"),
                       (os.path.join(root, "stray"), "no config.json"),
                       (os.path.join(root, "zz_dup"), "duplicate of")):  # fmt: skip
    assert f"`{path}`" in gone and reason in named[path]
  assert os.path.join(root, "report") not in named  # the report's own folder is not a run


def test_extra_sections(runs):
  md = runs["md"]
  t2 = section(md, paper.TABLES["table2"][0])
  assert (
    "Per difficulty level (Figure 7" in t2
    and "| SCoRe | 5 | 50.0 | 52.0 | 3.0 | 1.0 | 40 | 3 |" in t2
  )
  assert "Figure 4" in t2 and "Collapse diagnostics" in t2 and "Figure 8" in t2
  change = np.mean(
    [100 * (runs["c"][f"score{s}"][:, 0] != runs["c"][f"score{s}"][:, 1]).mean() for s in range(3)]
  )
  assert line(t2.split("Collapse diagnostics")[1], "SCoRe").startswith(f"| SCoRe | {pt(change)} (")
  t3 = section(md, paper.TABLES["table3"][0])
  rep = json.load(open(os.path.join(runs["root"], "t3_base", "eval", "repair.json")))
  acc = 100 * rep["repair_accuracy"]
  assert line(t3, "Base model").startswith(
    f"| Base model | {pt(acc)} [{pt(acc - 4)}, {pt(acc + 4)}] (paper 47.3) |"
  )
  assert "pass@5 t2" in t3
  # With per-problem repair results the MBPP-R interval is a bootstrap over repair problems.
  rep = json.load(open(os.path.join(runs["root"], "t3_score", "eval", "repair.json")))
  ok = np.array([e["reward"] > 0 for e in rep["episodes"]], np.float64)
  lo, hi = _bootstrap(ok)
  want = f"| SCoRe | {pt(100 * ok.mean())} [{pt(100 * lo)}, {pt(100 * hi)}] (paper 60.6) |"
  assert line(t3, "SCoRe").startswith(want)
  assert "MBPP-R: 95% bootstrap over 40 repair problems" in t3
  runs_table = section(md, "Runs")
  assert "| table2 | score | score | math | 90 x 8 = 720 episodes | 0, 1, 2 |" in runs_table
  assert "| table2 | base | base | math | none (trains nothing) | 0 |" in runs_table


def test_results_json_holds_every_number(runs):
  js = runs["json"]
  # Table 2 runs are also rows of Tables 1 and 4 where the paper prints them (build.tables_of).
  assert [t["table"] for t in js["tables"]] == ["table1", "table2", "table3", "table4"]
  assert [r["row"] for r in js["tables"][0]["rows"]] == ["base", "pair_sft"]  # Table 1's
  assert [r["row"] for r in js["tables"][1]["rows"]] == ["base", "pair_sft", "score"]
  assert [r["row"] for r in js["tables"][3]["rows"]] == ["score"]  # Table 4's
  assert len(js["workdirs"]) == 8
  wd = next(w for w in js["workdirs"] if w["path"].endswith("t2_score_s1"))
  assert wd["metrics"]["acc@t2"] == pytest.approx(runs["c"]["score1"][:, 1].mean())
  assert wd["values"]["acc@t2"] == pytest.approx(100 * runs["c"]["score1"][:, 1].mean())
  assert wd["evals"]["scaling"]["budgets"] == [2, 4, 8, 16] and len(wd["curve"]["eval/acc@t2"]) == 4
  ex = json_row(js, "table2", "score")["extras"]
  assert ex["attempts"]["k"] == list(range(1, 11)) and ex["per_level"]["3"]["seeds"] == 3
  assert set(ex["curves"]) >= {"eval/acc@t1", "eval/acc@t2", "eval/answer_change_rate"}
  wd3 = next(w for w in js["workdirs"] if w["path"].endswith("t3_score"))
  assert "episodes" not in wd3["evals"]["repair"] and len(wd3["evals"]["repair"]["correct"]) == 40
  t3 = json_row(js, "table3", "score")
  assert (
    t3["columns"]["mbpp_r"]["paper"] == 60.6 and t3["extras"]["pass_at_k"]["t2"]["5"]["mean"] > 0
  )


def test_figures_written_when_data_exist(runs):
  for file in ("scaling.png", "attempts.png", "edit_distance.png", "training_curves.png"):
    path = os.path.join(runs["out"], file)
    with open(path, "rb") as f:
      assert f.read(8) == PNG_MAGIC, file
    assert os.path.getsize(path) > 1000 and f"]({file})" in runs["md"]
    assert runs["json"]["figures"][file]["written"]


def test_figures_not_written_without_data(tmp_path):
  correct = fake_workdirs.correctness(np.random.default_rng(1), 50, 0.5, 0.1, 0.1)
  fake_workdirs.make(
    str(tmp_path), "base", "base", "table2", 0, correct_ba=correct, curve=False, edit=False
  )
  out = str(tmp_path / "out")
  report = build.write_report([str(tmp_path / "base")], out, num_resamples=200)
  assert not [f for f in os.listdir(out) if f.endswith(".png")]
  md = open(report.markdown_path).read()
  assert "`scaling.png` not written: no workdir has eval/scaling.json" in md
  assert "`training_curves.png` not written" in md and "`edit_distance.png` not written" in md
  assert "Paired comparison" not in md  # one row: nothing to compare


def test_malformed_optional_files_are_named_not_fatal(tmp_path):
  correct = fake_workdirs.correctness(np.random.default_rng(3), 50, 0.5, 0.1, 0.1)
  levels = {"1": {"acc@t1": 0.5}}  # no acc@t2, i->c, c->i
  path = fake_workdirs.make(str(tmp_path), "score", "score", "table2", 0, correct_ba=correct,
                            per_level=levels)  # fmt: skip
  with open(os.path.join(path, "eval", "scaling.json"), "w") as f:
    json.dump({"budgets": [2, 4], "parallel": [0.5]}, f)
  report = build.write_report([path], str(tmp_path / "out"), num_resamples=200)
  md = open(report.markdown_path).read()
  notes = section(md, "Notes")
  assert "eval/scaling.json not used" in notes and "per_level['1']" in notes
  assert "`scaling.png` not written" in md and "Per difficulty level" not in md
  assert "| SCoRe |" in md


def test_runs_without_episodes_use_the_evaluations_own_intervals(tmp_path):
  correct = fake_workdirs.correctness(np.random.default_rng(4), 80, 0.5, 0.2, 0.05)
  path = fake_workdirs.make(str(tmp_path), "score", "score", "table2", 0, correct_ba=correct)
  final_path = os.path.join(path, "eval", "final.json")
  final = json.load(open(final_path))
  del final["episodes"]
  json.dump(final, open(final_path, "w"))
  report = build.write_report([path], str(tmp_path / "out"), num_resamples=200)
  m = final["metrics"]
  want = (
    f"{pt(100 * m['acc@t2'])} [{pt(100 * m['acc@t2_ci95_low'])}, {pt(100 * m['acc@t2_ci95_high'])}]"
  )
  md = open(report.markdown_path).read()
  assert want in line(md, "SCoRe") and "the evaluation's own 95% interval" in md
