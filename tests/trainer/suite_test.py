"""The evaluation suite on a tiny random model: every evaluation writes its documented JSON, a
rerun resumes, fixed_first continues the base model's attempts, an untrained method is its base
model, and bad eval settings fail naming the field."""

import dataclasses
import json
import os

import jax
import pytest

from score_jax import configs, tasks
from score_jax.data import records
from score_jax.generation import rollout
from score_jax.models import presets
from score_jax.models import sharding as model_sharding
from score_jax.rewards import pool as pool_lib
from score_jax.rl import optim
from score_jax.trainer import checkpoint as checkpoint_lib
from score_jax.trainer import eval_context, evaluate, suite
from score_jax.trainer import setup as setup_lib
from tests import helpers
from tests.helpers import diverse_params

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALL = ("final", "attempts", "scaling", "fixed_first", "forced_check", "pass_at_k")


def _config():
  c = helpers.experiment_config("score_math")
  c.job = "evaluate"
  c.rollout.max_new_tokens, c.rollout.gen_buckets = 8, (8,)
  c.rollout.prompt_buckets = (192, 320)  # fixed_first: prompts that hold attempt 1
  c.eval.num_examples, c.eval.batch_size = 6, 8
  c.eval.curve_attempts, c.eval.curve_problems = 3, 4
  c.eval.scaling_budgets = (2, 4)
  c.eval.pass_k, c.eval.pass_samples = (1, 2), 2
  c.eval.forced_prefix = "Let me check"
  return c


def _greedy(c, workdir, params, attempts, pool):
  """Greedy episodes of `params` on the config's eval set, outside the suite."""
  mesh, sampler_mesh = setup_lib.make_meshes(c)
  model_cfg, _, tok = setup_lib.load_base(c, workdir, mesh)
  template = setup_lib.chat_template(c, model_cfg, tok)
  eval_set = evaluate.make_eval_set(c, tok, template)
  sampler = setup_lib.make_sampler(c, model_cfg, sampler_mesh, tok.pad_id)
  stop, close = template.stop_ids(tok), template.close_turn_ids(tok)
  rc = setup_lib.rollout_config(c, stop, greedy=True, num_attempts=attempts, close_ids=close)
  _, recs = evaluate.evaluate(
    params, eval_set, sampler, pool, rc, batch_size=c.eval.batch_size, decode=tok.decode
  )
  return [r["attempts"] for r in recs]


@pytest.fixture(scope="module")
def pool():
  with pool_lib.RewardPool(2) as p:
    yield p


@pytest.fixture(scope="module")
def trained(tmp_path_factory, pool):
  """A workdir whose best checkpoint (step 3) holds params unlike the base model's."""
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  workdir = str(tmp_path_factory.mktemp("suite"))
  c = _config()
  mesh, _ = setup_lib.make_meshes(c)
  model_cfg, base, _ = setup_lib.load_base(c, workdir, mesh)
  # Init-scale weights only repeat the last token: strong random layers make the two models
  # write different attempts, so which model wrote attempt 1 shows in the text.
  shardings = model_sharding.param_shardings(model_cfg, mesh)
  params = jax.device_put(diverse_params(model_cfg, seed=1), shardings)
  optimizer = optim.make_optimizer(setup_lib.optim_config(c))
  state = optim.init_train_state(model_cfg, optimizer, mesh, jax.random.key(1), params)
  with checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False) as ck:
    ck.save(3, state, {"loop_step": 3}, metrics={"reward": 0.5}, force=True)
  c.eval.suite = ALL
  out = suite.run_suite(c, workdir, pool)
  saved = {n: json.load(open(suite.path_of(workdir, n))) for n in ALL}
  return dict(c=c, workdir=workdir, base=base, params=params, out=out, saved=saved)


def test_every_evaluation_writes_its_documented_keys(trained):
  s, c = trained["saved"], trained["c"]
  assert set(trained["out"]) == set(ALL) and all(p["step"] == 3 for p in s.values())
  final = s["final"]
  assert set(final) == {"step", "checkpoint", "method", "instruction", "metrics", "per_level",
                        "episodes"}  # fmt: skip
  assert (final["checkpoint"], final["method"], final["instruction"]) == (
    "best", "score", "correction")  # fmt: skip
  m = final["metrics"]
  for key in ("acc@t1", "acc@t2", "delta(t1,t2)", "delta_i->c(t1,t2)", "delta_c->i(t1,t2)"):
    assert m[f"{key}_ci95_low"] <= m[key] <= m[f"{key}_ci95_high"]
  assert {"answer_change_rate", "edit_distance_ratio", "own_correction_rate",
          "outcomes/correct"} <= set(m)  # fmt: skip
  assert m["num_examples"] == 6 and trained["out"]["final"] == m
  assert sum(v["num_examples"] for v in final["per_level"].values()) == 6  # MATH500's levels
  assert len(final["episodes"]) == 6
  for ep in final["episodes"]:
    assert set(ep) == {"id", "attempts", "answers", "rewards", "outcomes", "edit_ratio"}
    assert len(ep["attempts"]) == 2 and 0 <= ep["edit_ratio"] <= 1
  att = s["attempts"]
  assert set(att) == {"step", "num_attempts", "metrics"} and att["num_attempts"] == 3
  want = {f"acc@t{j}{x}" for j in (1, 2, 3) for x in ("", "_ci95_low", "_ci95_high")}
  assert set(att["metrics"]) == want | {"num_examples"} and att["metrics"]["num_examples"] == 4
  sc = s["scaling"]
  assert set(sc) == {"step", "temperature", "budgets", "parallel", "sequential", "parallel_ci95",
                     "sequential_ci95", "num_examples", "per_problem"}  # fmt: skip
  pp = sc["per_problem"]
  assert len(pp["ids"]) == len(pp["parallel"]) == 4 and all(len(v) == 2 for v in pp["parallel"])
  # The per-problem votes are what the means are made of.
  assert sc["parallel"] == pytest.approx([sum(v[j] for v in pp["parallel"]) / 4 for j in (0, 1)])
  assert sc["budgets"] == [2, 4] and sc["temperature"] == c.eval.scaling_temperature
  for name in ("parallel", "sequential"):
    assert len(sc[name]) == 2 and all(
      lo <= v <= hi for v, (lo, hi) in zip(sc[name], sc[f"{name}_ci95"])
    )
  ff = s["fixed_first"]["metrics"]
  assert set(ff) == {"acc@t1", "acc@t2", "delta(t1,t2)", "delta_i->c(t1,t2)", "delta_c->i(t1,t2)",
                     "correction_rate", "num_examples"}  # fmt: skip
  pk = s["pass_at_k"]
  assert set(pk) == {"step", "n", "pass@k_t1", "pass@k_t2", "num_examples"} and pk["n"] == 2
  assert set(pk["pass@k_t1"]) == set(pk["pass@k_t2"]) == {"1", "2"}
  assert all(0 <= v <= 1 for t in ("pass@k_t1", "pass@k_t2") for v in pk[t].values())


def test_a_rerun_skips_what_is_written(trained, pool):
  c, workdir = trained["c"], trained["workdir"]
  stamp = {n: os.stat(suite.path_of(workdir, n)).st_mtime_ns for n in ALL}
  assert suite.run_suite(c, workdir, pool) == trained["out"]  # nothing recomputed
  assert {n: os.stat(suite.path_of(workdir, n)).st_mtime_ns for n in ALL} == stamp
  os.remove(suite.path_of(workdir, "scaling"))  # as if killed during scaling
  again = suite.run_suite(c, workdir, pool)
  assert again == trained["out"]  # the same samples: the keys are folded from the seed
  for n in ALL:
    changed = os.stat(suite.path_of(workdir, n)).st_mtime_ns != stamp.get(n)
    assert changed == (n == "scaling"), n


def test_fixed_first_continues_the_base_models_first_attempts(trained, pool):
  c, workdir = trained["c"], trained["workdir"]
  base_first = [a[0] for a in _greedy(c, workdir, trained["base"], 1, pool)]
  fixed = [ep["attempts"][0] for ep in trained["saved"]["fixed_first"]["episodes"]]
  own = [ep["attempts"][0] for ep in trained["saved"]["final"]["episodes"]]
  assert fixed == base_first
  assert own != base_first  # the checkpoint writes other attempts: the check above has teeth


def test_forced_check_opens_attempt_2_with_the_prefix_after_the_models_own_attempt_1(trained):
  s = trained["saved"]
  forced, own = s["forced_check"], s["final"]["episodes"]
  assert forced["prefix"] == "Let me check"
  assert [e["attempts"][0] for e in forced["episodes"]] == [e["attempts"][0] for e in own]
  assert all(e["attempts"][1].startswith("Let me check") for e in forced["episodes"])
  m = forced["metrics"]
  first = [e["rewards"][0] > 0 for e in forced["episodes"]]
  assert (m["num_wrong_first"], m["num_right_first"]) == (first.count(False), first.count(True))
  assert {"forced_fix_rate", "forced_keep_rate", "acc@t1", "acc@t2"} <= set(m)


def test_forced_check_needs_a_prefix():
  c = _config()
  c.eval.suite, c.eval.forced_prefix = ("forced_check",), ""
  with pytest.raises(configs.ConfigError, match="eval.forced_prefix = ''"):
    configs.validate(c)


def test_an_untrained_method_without_checkpoints_is_its_base_model(tmp_path, pool):
  c = _config()
  c.rl.method, c.eval.suite = "base", ("final",)
  out = suite.run_suite(c, str(tmp_path), pool)
  saved = json.load(open(suite.path_of(str(tmp_path), "final")))
  assert (saved["step"], saved["checkpoint"], saved["method"]) == (0, "base", "base")
  assert not os.path.exists(tmp_path / "checkpoints")
  mesh, _ = setup_lib.make_meshes(c)
  _, base, _ = setup_lib.load_base(c, str(tmp_path), mesh)
  assert [ep["attempts"] for ep in saved["episodes"]] == _greedy(c, str(tmp_path), base, 2, pool)
  assert out["final"]["num_examples"] == 6
  c.rl.method = "score"  # a trained method with no checkpoint is an error, not its base model
  with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
    suite.run_suite(c, str(tmp_path / "other"), pool)


@pytest.fixture
def stub_task():
  """Six problems; exactly p0 and p1 are solved by any attempt, whose answer is always 'same'."""
  spec = tasks.TaskSpec(
    name="suite_test_stub",
    kind="math",
    load=lambda split, path, size: [
      records.Example(f"p{i}", f"What is {i}?", str(i)) for i in range(6)
    ],  # fmt: skip
    first_turn=lambda ex, shots: ex.question,
    correction="Check it.",
    final_answer=lambda text: "same",
    host_check=lambda ex, text: ex.id in ("p0", "p1"),
  )
  tasks.register(spec)
  yield spec.name
  tasks.unregister(spec.name)


def test_rewards_reach_every_evaluation_aligned_with_their_problems(tmp_path, pool, stub_task):
  c = _config()
  c.rl.method, c.data.eval_task, c.eval.curve_problems = "base", stub_task, 0
  c.eval.suite = ("final", "scaling", "pass_at_k")
  out = suite.run_suite(c, str(tmp_path), pool)
  final = json.load(open(suite.path_of(str(tmp_path), "final")))
  assert [ep["rewards"] for ep in final["episodes"]] == [[1.0, 1.0]] * 2 + [[0.0, 0.0]] * 4
  assert "per_level" not in final  # its problems carry no level
  assert out["final"]["acc@t1"] == pytest.approx(1 / 3)
  assert out["final"]["own_correction_rate"] == 0.0  # 4 wrong first attempts, none fixed
  # Every sample of a solved problem is right and all answers agree: each vote is its problem's.
  assert out["scaling"]["parallel"] == out["scaling"]["sequential"] == [pytest.approx(1 / 3)] * 2
  assert (
    out["pass_at_k"]["pass@k_t1"]
    == out["pass_at_k"]["pass@k_t2"]
    == {"1": pytest.approx(1 / 3), "2": pytest.approx(1 / 3)}
  )


def test_k_attempts_must_fit_the_samplers_buckets(caplog):
  c = _config()
  model_cfg = presets.get_preset("tiny-gemma", vocab_size=1024)  # max_seq_len 256
  eval_set = evaluate.EvalSet(None, [], [[1] * 100], [2] * 127)
  fields = {f.name: None for f in dataclasses.fields(eval_context.Context)}
  sampler = setup_lib.make_sampler(c, model_cfg, None, 0)  # nothing compiles until it samples
  ctx = eval_context.Context(
    **{**fields, "config": c, "model_cfg": model_cfg, "sampler": sampler, "eval_set": eval_set}
  )
  rc = rollout.RolloutConfig(num_attempts=3, max_new_tokens=8, close_ids=(5,))
  ctx.check_attempts(rc, eval_set.prompt_ids, "eval.curve_attempts")  # 127 + 1 fit bucket 128
  assert "past the model's max_seq_len 256" in caplog.text  # 100 + 3 x 8 + 2 x 128 positions
  rc = dataclasses.replace(rc, close_ids=(5, 6))
  with pytest.raises(
    configs.ConfigError,
    match=r"config\.eval\.curve_attempts = 3: the sampler cannot hold 3 attempts",
  ):
    ctx.check_attempts(rc, eval_set.prompt_ids, "eval.curve_attempts")


def test_self_refine_is_evaluated_with_its_critique_prompt(tmp_path):
  c = _config()
  mesh, _ = setup_lib.make_meshes(c)
  model_cfg, _, tok = setup_lib.load_base(c, str(tmp_path), mesh)
  template = setup_lib.chat_template(c, model_cfg, tok)
  plain = evaluate.make_eval_set(c, tok, template)
  c.rl.method = "self_refine"
  refine = evaluate.make_eval_set(c, tok, template)
  assert (plain.which, refine.which) == ("correction", "self_refine")
  assert refine.instruction == template.next_turn_ids(tok, refine.task.instruction("self_refine"))
  assert refine.instruction != plain.instruction


@pytest.mark.parametrize(
  "field, value, match",
  [
    ("suite", ("final", "nope"), r"config\.eval\.suite\[1\] = 'nope': expected one of"),
    ("suite", ("final", "final"), r"config\.eval\.suite = .*distinct"),
    ("curve_attempts", 1, r"config\.eval\.curve_attempts = 1: expected an int >= 2"),
    ("curve_problems", -1, r"config\.eval\.curve_problems = -1"),
    ("scaling_budgets", (2, 3), r"config\.eval\.scaling_budgets = \(2, 3\): .*even"),
    ("scaling_budgets", (), r"config\.eval\.scaling_budgets"),
    (
      "scaling_temperature",
      0.0,
      r"config\.eval\.scaling_temperature = 0\.0: expected a number > 0",
    ),  # fmt: skip
    ("pass_temperature", -1.0, r"config\.eval\.pass_temperature = -1\.0"),
    ("pass_k", (0, 1), r"config\.eval\.pass_k = \(0, 1\)"),
    (
      "pass_samples",
      4,
      r"config\.eval\.pass_samples = 4: expected an int >= max\(config\.eval\.pass_k\) = 5",
    ),  # fmt: skip
  ],
)
def test_bad_eval_settings_name_the_field(field, value, match):
  c = configs.base_config()
  c.job = "evaluate"
  c.eval[field] = value
  with pytest.raises(configs.ConfigError, match=match):
    configs.validate(c)


def test_the_validated_names_are_the_suites_evaluations():
  c = configs.base_config()
  c.job = "evaluate"
  c.eval.suite = tuple(suite.EVALUATIONS) + ("repair",) * ("repair" not in suite.EVALUATIONS)
  c.eval.forced_prefix = "Let me check"  # forced_check needs its opening (its own test above)
  with pytest.raises(configs.ConfigError, match=r"config\.eval\.repair_set = ''"):
    configs.validate(c)  # the repair evaluation needs its repair set
  c.job = "repair_set"  # the job that builds the repair set runs without one
  configs.validate(c)
  c.job, c.eval.repair_set = "evaluate", "repair_set.jsonl"
  configs.validate(c)
  assert set(c.eval.suite) == set(suite.EVALUATIONS)
