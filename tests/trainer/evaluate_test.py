"""Greedy K-attempt evaluation: metrics match the per-problem records; the evaluate job (the
suite's `final` on the best checkpoint)."""

import json
import os

import jax
import numpy as np
import pytest

from score_jax.rewards import factory
from score_jax.rewards import pool as pool_lib
from score_jax.rl import optim
from score_jax.trainer import checkpoint as checkpoint_lib
from score_jax.trainer import evaluate, metrics, suite
from score_jax.trainer import setup as setup_lib
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config():
  c = helpers.experiment_config("score_math")
  c.job = "evaluate"
  c.rollout.max_new_tokens, c.rollout.gen_buckets = 8, (8,)
  c.eval.num_examples, c.eval.batch_size = 10, 8  # 10 problems: the last batch is padded
  return c


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  # suite.run builds its own sampler: the persistent cache spares its recompilation.
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  workdir = str(tmp_path_factory.mktemp("eval"))
  c = _config()
  mesh, sampler_mesh = setup_lib.make_meshes(c)
  model_cfg, params, tok = setup_lib.load_base(c, workdir, mesh)
  template = setup_lib.chat_template(c, model_cfg, tok)
  eval_set = evaluate.make_eval_set(c, tok, template)
  sampler = setup_lib.make_sampler(c, model_cfg, sampler_mesh, tok.pad_id)
  close = template.close_turn_ids(tok)
  rc = setup_lib.rollout_config(c, template.stop_ids(tok), greedy=True, close_ids=close)
  with pool_lib.RewardPool(2) as pool:
    yield dict(c=c, workdir=workdir, mesh=mesh, model_cfg=model_cfg, params=params, tok=tok,
               eval_set=eval_set, sampler=sampler, rc=rc, pool=pool)  # fmt: skip


def test_metrics_agree_with_records_and_are_deterministic(setup):
  s = setup
  run = lambda: evaluate.evaluate(s["params"], s["eval_set"], s["sampler"], s["pool"], s["rc"],
                                  batch_size=8, decode=s["tok"].decode)  # fmt: skip
  out, recs = run()
  assert out["num_examples"] == 10 and len(s["eval_set"].examples) == 10
  # Two batches of 8 (the last padded with early problems): each problem once, in order.
  assert [r["id"] for r in recs] == [ex.id for ex in s["eval_set"].examples]
  correct = np.array([r["rewards"] for r in recs]) > 0
  assert out == pytest.approx({**out, **metrics.self_correction_metrics(correct)})
  assert out["delta(t1,t2)"] == pytest.approx(out["delta_i->c(t1,t2)"] - out["delta_c->i(t1,t2)"])
  ratios = metrics.edit_distance_ratios(
    [r["attempts"][0] for r in recs], [r["attempts"][1] for r in recs]
  )
  assert out["edit_distance_ratio"] == pytest.approx(ratios.mean())
  assert [r["edit_ratio"] for r in recs] == pytest.approx(ratios.tolist())
  assert sum(out[f"outcomes/{k}"] for k in ("correct", "wrong", "timeout", "error")) == 20
  again, recs2 = run()  # greedy: the same attempts every time
  assert again == out and [r["attempts"] for r in recs2] == [r["attempts"] for r in recs]


def test_answer_equality_uses_the_math_checker():
  same = evaluate.answers_equal("math")
  assert same("\\frac{1}{2}", "0.5") and same(None, None)
  assert not same("3", "4") and not same("3", None)
  assert evaluate.answers_equal("code")("x = 1\n", "x = 1")


def test_evaluate_job_reads_the_best_checkpoint(setup):
  s = setup
  c = s["c"]
  optimizer = optim.make_optimizer(setup_lib.optim_config(c))
  state = optim.init_train_state(
    s["model_cfg"], optimizer, s["mesh"], jax.random.key(1), s["params"]
  )
  with checkpoint_lib.Checkpointer(
    os.path.join(s["workdir"], "checkpoints"), async_save=False
  ) as ck:
    ck.save(3, state, {"loop_step": 3}, metrics={"reward": 0.9}, force=True)
    ck.save(4, state, {"loop_step": 4}, metrics={"reward": 0.1}, force=True)
  c.eval.checkpoint = "best"
  out = suite.run(c, s["workdir"], pool=s["pool"])  # the 'evaluate' job's entry point
  saved = json.loads(open(os.path.join(s["workdir"], "eval", "final.json")).read())
  assert saved["step"] == 3 and saved["checkpoint"] == "best" and saved["method"] == "score"
  assert saved["metrics"] == out["final"] and len(saved["episodes"]) == 10


def test_missing_checkpoint_is_a_clear_error(tmp_path, setup):
  c = setup["c"]
  c.eval.checkpoint = "latest"
  with pytest.raises(FileNotFoundError, match="no complete checkpoint to evaluate"):
    suite.run(c, str(tmp_path), pool=setup["pool"])


def test_reward_pool_closes_only_the_pool_it_made():
  c = _config()
  c.train.reward_workers = 1
  with factory.reward_pool(c) as own:
    assert own.score([("math", (r"The answer is \boxed{4}", "4"))]).outcomes.tolist() == [0]
  with pytest.raises(RuntimeError, match="after close"):
    own.score([("math", (r"The answer is \boxed{4}", "4"))])
  with factory.make_pool(c) as callers:
    with factory.reward_pool(c, callers) as lent:
      assert lent is callers
    assert callers.score([("math", (r"The answer is \boxed{4}", "4"))]).outcomes.tolist() == [0]
