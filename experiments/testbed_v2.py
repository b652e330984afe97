"""Testbed v2: a pre-registered test of SCoRe's claims where correcting needs attempt 1.

  python -m score_jax.main --config=experiments/testbed_v2.py --workdir=/tmp/testbed_v2

The task (score_jax.testbed.arith, family `sum10to12`, registered as `testbed_v2`): "What is
7+8+5+9+3+2+6+1+4+8+2?", 10-12 one-digit terms. First attempts answer in one pass (the answer
line alone): a 0.28M model adds 10-12 digits in one pass on only part of the problems. The skill
a second attempt can use is a check that reads attempt 1's answer (arith.verify_solution):

  Let me check 55: 55-7=48. 48-8=40. ... 10-8=2. 55-2=53. Final Answer: ... 53. ...

It counts down from the stated answer one term at a time; what is left is attempt 1's error,
and the last step repairs it. It cannot be written without attempt 1, and it changes the answer
exactly when the answer is wrong (if its own steps are right). The corpus has no written way to
solve afresh: a second attempt that ignores attempt 1 can only answer again in one pass.

In the pretraining transcripts the kind of second attempt (copy, answer again in one pass,
verify) is drawn without looking at attempt 1, so no transcript teaches WHEN to check; greedy
second attempts copy. A share of first attempts verify their own one-pass answer, so attempt 1
has the accurate path too (what naive multi-turn RL can move onto).

The protocol (task, base recipe, each method's tuning grid, metrics, the primary comparison and
its test) is experiments/testbed_protocol.md; it was committed before any confirmatory run.
"""

import ml_collections

from experiments import testbed as testbed_v1
from score_jax.testbed import config as testbed_config  # registers the testbed jobs

# Every method of the comparison (issue 19): SCoRe, naive multi-turn RL in both readings,
# single-turn RL, SCoRe without Stage I and without the shaping bonus, STaR and Pair-SFT.
METHODS = (
  "score",
  "naive",
  "naive_multiturn_eq1",
  "single_turn",
  "no_stage1",
  "no_shaping",
  "star_plus",
  "pair_sft",
)


# The learning rate the confirmatory grid's tuning selected (validation, first base, RL seed 0)
# for every method; README command 1 (one_seed) uses it instead of tuning again.
ONE_SEED_LR = 1e-4


def get_config(arg: str = ""):
  c = testbed_v1.get_config()
  c.job = testbed_config.GRID_JOB
  tb = c.testbed
  c.data.task = c.data.eval_task = "testbed_v2"
  tb.seq_len = 224  # a 12-term verify transcript is up to ~200 tokens
  # Design v2-J + rollout temperature 0.7 + the base gate, frozen in the protocol (chosen on
  # validation). One recipe, pretraining seeds 0-4: the check's forced fix rate is 92.2%,
  # 70.6%, 41.3%, 51.3%, 69.9% (one pass 49.0, 62.6, 60.8, 62.6, 68.8). In 20 updates SCoRe's
  # Delta was +11.0 to +27.3 on every base fixing >= 69.7% and -2.3 to 0.0 on every base fixing
  # <= 63.8% (v2-J seeds 0-4, v2-L seeds 0-1; BUILD_NOTES.md, "Testbed v2", the draws). More
  # pretraining does not close the gap: seed 2 at 1000 steps fixes 61%, one pass 75.4%.
  tb.pretrain_steps = 850
  tb.mixture = m = ml_collections.ConfigDict()
  # The first-attempt writer's planted one-pass slips (off by 1-2): at 0.5 half the verify
  # transcripts repair an error; at 0.2 the check learned to confirm (BUILD_NOTES.md, v2-A/D).
  m.first_error_rate = 0.5
  m.drill = 0.0
  m.single_attempt = 0.1
  m.first_check = 0.0  # no running-sum redo anywhere: there is no written way to solve afresh
  # First attempts that verify their own one-pass answer: attempt 1 has the check too (what
  # single-turn and naive RL can move onto); 0.3 teaches the check in fewer steps (v2-J, v2-K).
  m.first_verify = 0.3
  m.copy = 0.45
  m.resolve = 0.2
  m.check = 0.0
  m.verify = 0.35
  m.fast_form = "answer"
  c.rollout.max_prompt_len = 48
  c.rollout.prompt_buckets = (48,)
  c.rollout.max_new_tokens = 128
  c.rollout.gen_buckets = (128,)
  c.data.eval_split = "validation"  # design and tuning; the confirmatory runs score test once
  # Sampling at 1.0 reproduces the corpus's planted slips (first_error_rate 0.5): the reward is
  # mostly that noise and no method learned in 40 updates (v2-K, v2-L). The same for every method.
  c.rollout.temperature = 0.7
  # 10 + 10 updates of 64 episodes: on v2-L at 0.7, SCoRe's Acc@t2 after 20 equals that after 40
  # (77.3); every method gets the same 20 updates.
  c.stage1.steps, c.stage2.steps = 10, 10
  tb.methods = METHODS
  tb.figure_methods = ()
  # Bases are drawn in this order until num_bases pass the gate: a base whose forced check fixes
  # fewer than 65% of its wrong first attempts (validation, 500 problems; the gap between 63.8%
  # and 69.7% above) is rejected and reported. The gate reads only the base, before any method
  # runs, the same for every method. Of seeds 0-6, 0, 1, 4 and 6 pass: 5 draws for 3 bases.
  tb.pretrain_seeds = tuple(range(10))
  tb.num_bases = 3
  tb.base_gate = ml_collections.ConfigDict({"min_forced_fix": 0.65, "problems": 500})
  tb.rl_seeds = (0, 1, 2)
  # One grid for every method, searched on validation (the first accepted base, RL seed 0).
  tb.tune_grid = ml_collections.ConfigDict({"optim:lr": (5e-5, 1e-4, 2e-4)})
  tb.validation_problems = 300
  # The matched token budget's majority vote of 2 samples: the claim compares SCoRe with
  # single-turn RL's vote; SCoRe's own and the base's are shown beside them.
  tb.vote_methods = ("base", "score", "single_turn")
  # Two processes share the grid (score_jax/testbed/workers.py): on 2 cores they finish ~1.5x
  # the runs per hour of one; the results do not depend on the number.
  tb.workers = 2
  # The curve is evaluated once, after the last update (the checkpoint is chosen by training
  # reward, not by it): every 10 steps cost ~12 s of a ~100 s run.
  c.eval.every_steps = 0
  tb.curve_problems = 100
  tb.eval_problems = 500  # test problems per run, scored once
  tb.held_out_task = "testbed_v2_heldout"
  tb.forced_prefix = "Let me check"  # forced_check's opening: the verify transcripts' first words
  tb.stop_after = ""
  if arg in ("quick", "tiny"):
    quick(c)
  elif arg == "one_seed":
    one_seed(c)
  elif arg:
    raise ValueError(
      f"experiments/testbed_v2.py: unknown argument {arg!r} (expected '', 'one_seed' or 'quick')"
    )
  return c


def one_seed(c):
  """README command 1: one base, SCoRe and naive multi-turn RL at one seed, on the test split.

  The grid's first cell (pretraining seed 0, the first base through the gate; RL seed 0) at
  the learning rate the pre-registered tuning chose for both methods on validation (1e-4,
  experiments/results/testbed_v2/tuning.json), so nothing is tuned here and, on one machine,
  its two runs equal the grid's score/p0_s0 and naive/p0_s0. A first look in one sitting; the
  pre-registered result is the default, the full grid."""
  tb = c.testbed
  tb.num_bases, tb.rl_seeds = 1, (0,)
  tb.methods = ("score", "naive")
  tb.vote_methods = ("base", "score")  # single-turn RL, whose vote the claim reads, is not run
  tb.tune_grid = ml_collections.ConfigDict({"optim:lr": (ONE_SEED_LR,)})


def quick(c):
  """The grid at CI size: two bases, SCoRe and single-turn RL, a two-point grid, tiny budgets."""
  testbed_v1.quick(c)
  tb = c.testbed
  # The gate is evaluated and reported but accepts every base: CI's tiny bases never learn the
  # check (select_bases' rejections are tested on constructed draws, tests/testbed/grid_test.py).
  tb.pretrain_seeds, tb.num_bases, tb.rl_seeds = (0, 1), 2, (0,)
  tb.base_gate = ml_collections.ConfigDict({"min_forced_fix": 0.0, "problems": 16})
  tb.methods = ("score", "single_turn")
  tb.tune_grid = ml_collections.ConfigDict({"optim:lr": (1e-4, 3e-4)})
  tb.validation_problems = tb.eval_problems = 16
  tb.curve_problems = 16
  c.rollout.max_new_tokens, c.rollout.gen_buckets = 48, (48,)
  c.eval.batch_size = 16
