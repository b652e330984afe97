"""Testbed v2's grid job (`experiments/testbed_v2.py:quick`): bases per pretraining seed, tuning
on validation, one test per run, the report with its findings; a rerun redoes nothing."""

import json
import os

import pytest

from experiments import testbed_v2
from score_jax import configs
from score_jax.testbed import grid
from tests import helpers


def _main(workdir, *flags):
  # One device and a compilation cache shared by the grid's many runs (and the rerun).
  env = helpers.one_device_cached_env(os.path.join(os.path.dirname(workdir), "xla_cache"))
  return helpers.run_main("experiments/testbed_v2.py:quick", workdir, *flags, env=env, timeout=1500)


def test_grid_config_is_validated_up_front():
  c = testbed_v2.get_config()
  configs.validate(c)
  c.testbed.tune_grid["optim:lrr"] = (1e-4,)
  with pytest.raises(configs.ConfigError, match="'optim:lrr' is not a config field"):
    configs.validate(c)
  c = testbed_v2.get_config()
  c.data.eval_split = "test"  # tuning must never see the test split
  with pytest.raises(configs.ConfigError, match="data.eval_split = 'test'"):
    configs.validate(c)
  c = testbed_v2.get_config()
  c.testbed.held_out_task = c.data.task
  with pytest.raises(configs.ConfigError, match="testbed.held_out_task"):
    configs.validate(c)


def test_base_gate_fields_are_validated():
  for field, value, match in (
    ("num_bases", 11, r"testbed.num_bases = 11: expected an int in \[1, 10\]"),
    ("num_bases", 0, "testbed.num_bases"),
  ):
    c = testbed_v2.get_config()
    c.testbed[field] = value
    with pytest.raises(configs.ConfigError, match=match):
      configs.validate(c)
  c = testbed_v2.get_config()
  c.testbed.base_gate.min_forced_fix = 70  # a percentage where a rate is expected
  with pytest.raises(configs.ConfigError, match="base_gate.min_forced_fix = 70"):
    configs.validate(c)


def _gate(fix: float) -> dict:
  return {"acc@t1": 0.5, "acc@t2": 0.8, "forced_fix_rate": fix, "forced_keep_rate": 0.97}


def test_select_bases_draws_lazily_until_enough_pass_the_gate():
  pretrained = []

  def drawn():  # pretraining happens only when the selection asks for the next base
    for seed, fix in ((0, 0.92), (1, 0.41), (2, 0.70), (3, 0.95)):
      pretrained.append(seed)
      yield seed, _gate(fix)

  accepted, record = grid.select_bases(drawn(), 2, 0.7)
  assert accepted == [0, 2] and pretrained == [0, 1, 2]  # seed 3 is never pretrained
  # A base with no wrong first attempt has no measurable check: rejected, shown as "-".
  assert grid.select_bases([(5, _gate(None)), (6, _gate(0.0))], 1, 0.0)[0] == [6]
  assert "| 5 | 50.0 | - |" in grid.grid_report.bases_table(
    [{"pretrain_seed": 5, **_gate(None), "accepted": False}], 0.0
  )
  assert [r["accepted"] for r in record] == [True, False, True]
  assert record[1] == {"pretrain_seed": 1, **_gate(0.41), "accepted": False}
  table = grid.grid_report.bases_table(record, 0.7)
  assert "forced fix >= 70%" in table and "| 1 | 50.0 | 41.0% | 97.0% | 80.0 | rejected |" in table


def test_select_bases_fails_clearly_when_the_seeds_run_out():
  with pytest.raises(configs.ConfigError, match=r"1 of 3 bases passed the gate.*2 needed"):
    grid.select_bases(((s, _gate(f)) for s, f in ((0, 0.2), (1, 0.8), (2, 0.6))), 2, 0.7)


def test_grid_points_are_the_product_in_a_fixed_order():
  c = testbed_v2.get_config()
  c.testbed.tune_grid["stage2:alpha"] = (1.0, 10.0)
  points = grid.grid_points(c)
  assert len(points) == 6 and points[0] == {"optim:lr": 5e-5, "stage2:alpha": 1.0}
  assert grid.point_name(points[1]) == "optim.lr=5e-05,stage2.alpha=10.0"
  rl = grid.apply_point(testbed_v2.get_config(), points[1])
  assert (rl.optim.lr, rl.stage2.alpha) == (5e-5, 10.0)


def test_one_point_grid_selects_it_without_tuning_runs(tmp_path):
  c = testbed_v2.get_config("one_seed")
  assert c.testbed.methods == ("score", "naive") and grid.grid_points(c) == [{"optim:lr": 1e-4}]
  # No base exists and no pool is given: a tuning run would fail here.
  timings = grid.method_runs.Timings(str(tmp_path))
  out = grid._tune(c, str(tmp_path), {}, None, timings)
  assert out["selected"] == {"score": {"optim:lr": 1e-4}, "naive": {"optim:lr": 1e-4}}
  assert out["validation"] == {}
  assert "nothing was tuned" in grid.grid_report._tuning_table(out)


def test_one_seed_uses_the_learning_rate_the_committed_tuning_selected():
  # README command 1 reproduces the grid's first cell only at the grid's selected point.
  path = os.path.join(os.path.dirname(testbed_v2.__file__), "results", "testbed_v2", "tuning.json")
  with open(path) as f:
    selected = json.load(f)["selected"]
  c = testbed_v2.get_config("one_seed")
  for method in c.testbed.methods:
    assert selected[method] == {"optim:lr": testbed_v2.ONE_SEED_LR}, method


def test_long_attempt_config_doubles_attempt_tokens_on_test():
  c = testbed_v2.get_config()
  long = grid.long_attempt_config(c, 300)
  assert long.rollout.max_new_tokens == 2 * c.rollout.max_new_tokens == 256
  assert long.rollout.gen_buckets == (256,) and long.data.eval_split == "test"
  assert (long.eval.suite, long.eval.num_examples, long.eval.file_suffix) == (
    ("final",),
    300,
    "_long1",
  )
  assert c.rollout.max_new_tokens == 128  # the run's own config is left as it was


@pytest.mark.slow
def test_quick_grid_end_to_end_and_rerun(tmp_path):
  workdir = str(tmp_path / "grid")
  done = _main(workdir)
  assert done.returncode == 0, done.stderr[-3000:]
  tuning = json.load(open(os.path.join(workdir, "tuning.json")))
  assert set(tuning["selected"]) == {"score", "single_turn"}
  for method, rows in tuning["validation"].items():
    assert len(rows) == 2  # every method searched the same two-point grid
    assert tuning["selected"][method] == max(rows, key=lambda r: r["acc@t2"])["point"]
  # Tuning evaluated on validation only; the confirmatory runs on test, once each.
  tune_eval = json.load(
    open(os.path.join(workdir, "eval", "tune", "score", "optim.lr=0.0001.json"))
  )
  assert all("/validation/" in e["id"] for e in tune_eval["episodes"])
  names = [f"{m}/p{p}_s0" for p in (0, 1) for m in ("base", "score")]
  for name in names:
    final = json.load(open(os.path.join(workdir, "eval", f"{name}.json")))
    assert all("/test/" in e["id"] for e in final["episodes"]) and len(final["episodes"]) == 16
    held = json.load(open(os.path.join(workdir, "runs", name, "eval", "final_heldout.json")))
    assert all(e["id"].startswith("testbed/sum9/test/") for e in held["episodes"])
  assert os.path.exists(os.path.join(workdir, "runs", "base/p0_s0", "eval", "forced_check.json"))
  assert os.path.exists(os.path.join(workdir, "runs", "score/p1_s0", "eval", "fixed_first.json"))
  # Single-turn RL's matched token budget: one attempt given two attempts' tokens.
  long1 = json.load(
    open(os.path.join(workdir, "runs", "single_turn/p0_s0", "eval", "final_long1.json"))
  )
  assert len(long1["episodes"]) == 16 and all("/test/" in e["id"] for e in long1["episodes"])
  report = open(os.path.join(workdir, "report", "results.md")).read()
  assert "## Held-out variant" in report and "SCoRe Acc@t2 > naive multi-turn RL" in report
  assert "One attempt, 2x tokens" in report
  results = json.load(open(os.path.join(workdir, "report", "results.json")))
  assert len(results["findings"]) >= 10
  # Each method's summary holds the columns its runs evaluated (long1: single-turn RL only).
  summary = results["summary"]
  assert "One attempt, 2x tokens" in summary["single_turn"]
  assert (
    "One attempt, 2x tokens" not in summary["score"] and "Vote of 2 samples" in summary["score"]
  )
  # Every drawn base was gated on validation (16 problems) and listed, with its verdict.
  drawn = json.load(open(os.path.join(workdir, "bases.json")))
  assert [d["pretrain_seed"] for d in drawn] == [0, 1] and all(d["accepted"] for d in drawn)
  assert results["bases"] == drawn and "## Bases drawn" in report
  gate = json.load(open(os.path.join(workdir, "bases", "pretrain_seed1", "gate", "eval",
                                     "forced_check_gate.json")))  # fmt: skip
  assert gate["metrics"]["num_examples"] == 16
  assert all("/validation/" in e["id"] for e in gate["episodes"])
  # Two processes shared the grid (testbed.workers = 2 in :quick) and both ran units.
  claims = os.path.join(workdir, "claims")
  marks = [os.path.join(d, f) for d, _, fs in os.walk(claims) for f in fs if f.endswith(".done")]
  assert len({open(f).read() for f in marks}) == 2, "one process ran every unit"
  assert os.path.exists(os.path.join(workdir, "workers", "w1.out"))
  # A rerun finds every phase cached: no training, no evaluation.
  stamp = os.path.getmtime(os.path.join(workdir, "eval", "score", "p1_s0.json"))
  again = _main(workdir)
  assert again.returncode == 0, again.stderr[-3000:]
  assert os.path.getmtime(os.path.join(workdir, "eval", "score", "p1_s0.json")) == stamp
  assert "steps" not in again.stdout.split("tuning done")[-1].split("Testbed v2")[0]
