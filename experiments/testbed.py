"""The laptop testbed (README's first command): self-correction emerging in minutes on a CPU.

  python -m score_jax.main --config=experiments/testbed.py --workdir=/tmp/testbed
  python -m score_jax.main --config=experiments/testbed.py:quick --workdir=/tmp/testbed_quick

One job (score_jax.testbed.pipeline): a SentencePiece trained on the task text, a 0.28M-parameter
Gemma-style decoder pretrained on two-attempt transcripts, a greedy eval of that base model,
SCoRe (Stage I then Stage II) and the naive multi-turn RL baseline (same update budget, reward
on attempt 2 only, no Stage I, no bonus) for each seed, each evaluated greedy on held-out
problems; then the paper-style table and plots in DIR/report/. Rerunning resumes.

The task (score_jax.testbed.arith; registered as `testbed` by score_jax.testbed.task, which
score_jax.testbed.config imports): "What is 7+8+5+9+3+2+6+1+4+8?", answered in one pass by most
first attempts (the answer line alone) and redone in written steps by some second ones; a
fifth of first attempts are written in steps themselves. Status (BUILD_NOTES.md, design 34):
after 1000 pretraining steps the base model answers 63.9% in one pass and greedily copies
(Delta 0.0). Over 3 seeds SCoRe reaches 76.1 / 99.0 (Delta +23.0 +- 8.8, c->i 0.3), while naive
multi-turn RL collapses as in the paper: its first attempt takes the written steps too and the
second stops changing answers (98.9 / 98.7, Delta -0.2, answer change 0.5%). Seed 0's run takes
~16 min on 2 cores.
Hyperparameters that differ from the paper (Table 8) are set below with the reason.
`:quick` is the same pipeline, smaller (CI runs it). `:paper` runs the rows of the paper's tables
(Table 4, naive RL in both readings, STaR D+, Pair-SFT D, Self-Refine), 3 seeds each, on the
same base model (56 min on 2 cores with the base cached; README, "The paper's tables on the
testbed"); `python -m score_jax.report DIR/runs` renders them.
"""

import ml_collections

from score_jax import configs
from score_jax.testbed import config as testbed_config  # registers the testbed job and task
from score_jax.testbed import task as testbed_task


def get_config(arg: str = ""):
  c = configs.base_config()
  c.job = testbed_config.JOB
  c.model.preset = "testbed-gemma"
  c.model.chat_template = "gemma"
  c.mesh.fsdp = -1

  c.testbed = tb = ml_collections.ConfigDict()
  tb.tokenizer_problems = 3000  # transcripts the tokenizer is trained on
  tb.train_problems = 20000  # pretraining transcripts; RL prompts come from the same split
  tb.seq_len = 160  # pretraining stream slots (a transcript that does not fit is an error)
  # Measured on 7 terms (forced, greedy, 500 problems): at 600 steps the written redo is no better
  # than one pass (74.2% vs 75.6%); at 1000 it is (94.0% vs 82.2%). BUILD_NOTES.md, designs 26-30.
  tb.pretrain_steps = 1000
  tb.pretrain_batch = 32
  tb.pretrain_lr = 3e-3
  tb.pretrain_save_every = 100
  tb.mixture = ml_collections.ConfigDict()
  # Planted slips of the first-attempt writer (most first-attempt errors are the model's own).
  tb.mixture.first_error_rate = 0.2
  tb.mixture.drill = 0.0  # practice rows of one-step sums (0.3 measured: no better steps)
  tb.mixture.single_attempt = 0.1  # transcripts with no second attempt
  # First attempts written in steps (then restated, not redone): the exact path attempt 1 can
  # take too. At 0.1 naive RL's attempt 1 drifts there too slowly to collapse in 160 steps; at
  # 0.3 SCoRe's Stage II takes it within 10 steps as well (BUILD_NOTES.md, designs 32-34).
  tb.mixture.first_check = 0.2
  # A redo share of 0.5 made greedy second attempts redo (base Delta +6.8); at 0.4 they copy.
  tb.mixture.copy = 0.45  # second attempts that copy the first
  tb.mixture.resolve = 0.15  # ... that answer again in one pass (own slips)
  tb.mixture.check = 0.4  # ... that redo the sum in written steps
  tb.mixture.fast_form = "answer"  # one-pass answers are the answer line alone
  tb.mixture.verify = 0.0  # testbed v2's check that reads attempt 1 (experiments/testbed_v2.py)
  tb.mixture.first_verify = 0.0
  tb.eval_problems = 1000  # held-out problems of the final greedy evals
  tb.curve_problems = 200  # held-out problems of the evals during RL (the curves)
  tb.methods = ("score", "naive")
  tb.rl_seeds = (0,)
  # The figures' evaluations, run on the first seed of these methods (none by default).
  tb.figure_methods = ()
  tb.figure_evals = ("attempts", "scaling", "fixed_first")

  c.data.task = c.data.eval_task = testbed_task.NAME
  c.data.procedural_size = 20000  # testbed problems per split (test: the first eval_problems)
  c.data.system = ""
  c.rollout.num_samples = 4
  c.rollout.max_prompt_len = 40
  c.rollout.max_new_tokens = 104
  c.rollout.prompt_buckets = (40,)
  c.rollout.append_buckets = (32,)
  c.rollout.gen_buckets = (104,)
  # Paper: 5e-6 for a 2B model; a 0.28M model needs larger steps (1e-5 changed nothing in 60).
  c.optim.lr = 1e-4
  # Paper: Stage II runs longer than Stage I. Measured here (BUILD_NOTES.md): at this lr, Stage II
  # past 10 steps makes the second attempt change right answers too (c->i 2.5 -> 6.5 points).
  c.stage1.steps, c.stage2.steps = 30, 10
  # Paper: beta2 = 0.1 (10 x beta1). At lr 1e-4 that does not pin attempt 1: it leaves one pass
  # within 20 Stage I steps (design 33). 1.0 holds it at the base, as Stage I is meant to.
  c.stage1.beta2 = 1.0
  c.train.global_batch = 64  # 16 prompts x g=4 (paper: 512)
  c.train.stream_multiple = 32  # ~155 real tokens per episode: 160 slots, not the sampler's 269
  c.train.reward_workers = 2
  c.checkpoint.every_steps = 10
  c.checkpoint.async_save = False
  c.eval.every_steps = 10
  c.eval.batch_size = 250
  c.log.episodes_every_steps = 10
  c.log.num_episodes = 4
  if arg in ("quick", "tiny"):  # `tiny`: the name every experiment's CPU-size variant answers to
    quick(c)
  elif arg == "paper":
    paper_suite(c)
  elif arg:
    raise ValueError(
      f"experiments/testbed.py: unknown argument {arg!r} (expected '', 'quick' or 'paper')"
    )
  return c


# Table 4 (SCoRe and its five ablations), naive multi-turn RL in both readings, and the Table 2
# baselines (STaR D+, Pair-SFT D, Self-Refine); the base model is always evaluated.
PAPER_ROWS = (
  "score",
  "single_turn",
  "no_stage1",
  "no_shaping",
  "star_stage2",
  "offline_turn1",
  "naive",
  "naive_multiturn_eq1",
  "star_plus",
  "pair_sft",
  "self_refine",
)


def paper_suite(c):
  """`:paper`: the paper's rows on the testbed, 3 seeds each, every row with SCoRe's budget and
  hyperparameters (no per-method tuning; they were chosen for SCoRe, see README)."""
  c.testbed.methods = PAPER_ROWS
  c.testbed.rl_seeds = (0, 1, 2)
  c.testbed.figure_methods = ("base", "score", "star_plus", "pair_sft", "naive")


def quick(c):
  """The same pipeline at CI size: a shorter pretraining, fewer RL steps and eval problems."""
  tb = c.testbed
  tb.train_problems = 4000
  tb.tokenizer_problems = 1000
  tb.pretrain_steps = 60
  tb.pretrain_save_every = 30
  tb.eval_problems = 100
  tb.curve_problems = 50
  c.data.procedural_size = 4000
  c.stage1.steps, c.stage2.steps = 2, 2
  c.train.global_batch = 16
  c.eval.every_steps = 2
  c.eval.batch_size = 50
  c.checkpoint.every_steps = 2
  c.log.episodes_every_steps = 2
