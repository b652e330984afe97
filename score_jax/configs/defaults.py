"""The defaults every experiment starts from: one field per knob, each with a one-line comment.

Experiment files in `experiments/` call `base_config()` and override fields; `main.py` loads
them with `config_flags` (locked, so a typo in `--config.x=...` is an error and a value of the
wrong type is refused). Which values are accepted is `score_jax.configs.validation`'s business.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by every experiment. Each field carries a one-line comment."""
  c = ml_collections.ConfigDict()
  c.job = "generate"  # what main runs: a registered job (score_jax.configs.jobs)
  c.seed = 0  # root PRNG seed; every other key is folded from it

  c.model = ml_collections.ConfigDict()
  c.model.preset = "smollm2-135m-instruct"  # a name from score_jax.models.presets
  c.model.checkpoint = (
    ""  # HF dir/.safetensors, Gemma Flax dir, .gguf, "smollm2-gguf", or "" = random init
  )
  c.model.tokenizer = ""  # tokenizer.model / tokenizer.json; "" = the one inside the checkpoint
  c.model.vocab_size = 0  # 0 = the preset's; else a random-init model's vocabulary (tiny runs)
  c.model.tokenizer_train_vocab = 0  # > 0: train a SentencePiece on the task text (tiny runs)
  c.model.chat_template = ""  # gemma | chatml | llama3; "" = the preset family's default
  c.model.dtype = "float32"  # compute dtype
  c.model.param_dtype = "float32"  # storage dtype of the parameters
  c.model.remat_policy = "none"  # activation rematerialisation in the scanned layer

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = 1  # pure data-parallel replicas
  c.mesh.fsdp = -1  # parameter/optimizer sharding axis; -1 = all remaining devices
  c.mesh.tensor = 1  # tensor (model) parallel axis

  c.generate = ml_collections.ConfigDict()
  c.generate.prompts = ("What is 12+7?",)  # one chat turn each
  c.generate.system = ""  # system message ("" = the template's default)
  c.generate.max_new_tokens = 64  # per prompt
  c.generate.temperature = 0.0  # 0 = greedy
  c.generate.top_k = 0  # 0 = off
  c.generate.top_p = 1.0  # nucleus mass in (0, 1]

  c.data = ml_collections.ConfigDict()
  c.data.task = "math"  # a registered task (score_jax.tasks): math, mbpp, procedural:<x>, ...
  c.data.eval_task = ""  # held-out task ("" = data.task); e.g. humaneval for MBPP training
  c.data.train_split = "train"  # MATH: train (12k); MBPP: train/test/validation/prompt
  c.data.eval_split = "test"  # MATH: test (MATH500); MBPP: test; ignored for HumanEval
  c.data.train_path = ""  # a user's own copy of the training file ("" = the package copy)
  c.data.eval_path = ""  # a user's own copy of the eval file ("" = the package copy)
  c.data.max_train_examples = 0  # use only the first N training examples (0 = all)
  c.data.procedural_size = 2000  # generated tasks: problems per split
  c.data.system = ""  # system message of every episode ("" = the chat template's default)

  c.rollout = ml_collections.ConfigDict()
  # g: RLOO group size. Not stated in the paper; 4 keeps a leave-one-out baseline of 3 samples
  # while spending most of the batch on distinct prompts.
  c.rollout.num_samples = 4
  c.rollout.num_attempts = 2  # K: attempts per episode (SCoRe: 2)
  c.rollout.max_prompt_len = 1024  # longer prompts are dropped from the data (logged)
  c.rollout.max_new_tokens = 512  # per attempt
  c.rollout.temperature = 1.0  # training sampling temperature (Table 8)
  c.rollout.top_p = 1.0  # nucleus mass (1.0 = off)
  c.rollout.top_k = 0  # 0 = off
  c.rollout.prompt_buckets = (256, 512, 1024)  # prompt-length buckets (static shapes)
  c.rollout.append_buckets = (64, 128)  # correction-instruction length buckets
  c.rollout.gen_buckets = (128, 256, 512)  # generation-length buckets
  # Prompts per sampler call on each host (0 = all of the host's prompts of a step at once).
  # The KV cache holds one call's rows: a smaller value trades sampler throughput for memory
  # (`python -m score_jax.preflight` says what fits). Samples do not depend on it.
  c.rollout.prompts_per_call = 0
  # How decode steps read the weights: "on" = per-layer arrays and a per-layer cache, made once
  # per decode call (a second copy of the weights while it runs); "off" = the stacked [layers,
  # ...] tree, sliced per layer in every step; "auto" = on for CPUs, off for accelerators.
  # Compiled for an H200, the stacked layout copies every layer's weights in every step
  # (BUILD_NOTES.md, 2026-12-04): try "on" on GPUs.
  c.rollout.decode_layout = "auto"
  # When the decode loop gathers FSDP-sharded weights (several devices in one process, e.g. one
  # 8-GPU node or a single-host TPU): "per_call" = once per decode call, a transient
  # compute-dtype replica on every device while it runs; "per_step" = every layer's weights in
  # every step (least memory, but each token then moves the weights over the interconnect).
  # Several processes sample from a per-process replica already, so it changes nothing there.
  c.rollout.weight_gather = "per_call"

  c.stage1 = ml_collections.ConfigDict()
  c.stage1.steps = 1000  # Stage I updates (per round when interleaved); not stated in the paper
  c.stage1.beta2 = 0.1  # beta2: first-attempt KL weight (0.1 MATH, 0.25 code)
  c.stage1.adaptive_beta2 = False  # adapt beta2 to balance attempt-1 KL and attempt-2 objective
  c.stage1.adaptive_target_ratio = 1.0  # target of beta2 * KL_turn1 / mean|A_turn2|
  c.stage1.adaptive_rate = 0.05  # log-space gain per update of the beta2 controller

  c.stage2 = ml_collections.ConfigDict()
  c.stage2.steps = 2000  # Stage II updates (per round when interleaved)
  c.stage2.alpha = 10.0  # alpha: reward-shaping bonus on r2 - r1
  c.stage2.offline_first_attempt_ratio = 0.0  # fraction of prompts whose y1 the base model samples

  c.rl = ml_collections.ConfigDict()
  # A row of score_jax.rl.algorithms.METHODS: score (Stage I then II), naive_multiturn,
  # naive_multiturn_eq1, single_turn, no_stage1, no_shaping, star_stage2, star, star_plus,
  # pair_sft, pair_sft_plus, self_refine, base. Every trained method gets stage1.steps +
  # stage2.steps updates of train.global_batch episodes (the paper's fixed budget).
  c.rl.method = "score"
  c.rl.beta1 = 0.01  # beta1: KL weight of the rewarded attempts
  c.rl.kl_estimator = "k1_reward"  # k1_reward (in the reward) | k2 | k3 (in the loss) | none
  c.rl.aggregation = "token_mean"  # token_mean | seq_mean_token_mean | constant
  c.rl.kl_clamp = 10.0  # |log pi - log ref| clamp before any estimator
  c.rl.baseline = "rloo"  # rloo | mean | none

  c.sft = ml_collections.ConfigDict()
  # STaR (and STaR in Stage II): collect-then-fit rounds, each collecting from the current model
  # (ReST-EM, as the paper's 3 iterations). Pair-SFT collects once, from the base model.
  c.sft.star_iterations = 3

  c.schedule = ml_collections.ConfigDict()
  c.schedule.kind = "sequential"  # sequential: Stage I then II | interleaved: I, II, I, II (v1)
  c.schedule.num_rounds = 1  # interleaved: number of (Stage I, Stage II) rounds

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 5e-6  # Adam learning rate (5e-6 MATH, 1e-5 code)
  c.optim.warmup_steps = 0  # linear warmup
  c.optim.decay = "constant"  # constant | cosine | linear
  c.optim.end_lr_ratio = 0.0  # final lr / peak lr of cosine/linear decay
  c.optim.max_grad_norm = 1.0  # global-norm clipping (0 = off)
  c.optim.weight_decay = 0.0  # the paper uses plain Adam
  c.optim.b1 = 0.9  # Adam beta1
  c.optim.b2 = 0.999  # Adam beta2
  c.optim.eps = 1e-8  # Adam epsilon

  c.train = ml_collections.ConfigDict()
  # Episodes (prompts x g) per update, summed over hosts: the rows the mesh and the micro-batches
  # split. 512 = Table 8's MATH batch read as sequences per update (128 prompts x g=4).
  c.train.global_batch = 512
  c.train.num_microbatches = 1  # gradient accumulation; the update equals one full batch
  # Update streams drop the sampler's holes (generation.rollout.compact_streams) and are padded to a
  # multiple of this many slots: fewer slots, few distinct shapes. 0 keeps the sampler's layout.
  c.train.stream_multiple = 128
  c.train.on_nonfinite = "stop"  # stop: save step + batch to workdir/nonfinite/ | skip
  c.train.debug_nan_step = -1  # testing only: feed a NaN reference at this step (-1 = off)
  c.train.reward_workers = 2  # reward pool processes per host
  c.train.math_timeout_s = 5.0  # per math check
  c.train.code_timeout_s = 10.0  # per program

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 100  # save every N steps (and at the end / on SIGTERM)
  c.checkpoint.keep = 3  # newest checkpoints kept
  c.checkpoint.keep_best = 1  # plus the highest-training-reward ones (the paper's selection)
  c.checkpoint.async_save = True  # write in the background

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 250  # held-out evaluation every N steps (0 = only at the end)
  c.eval.num_examples = 500  # held-out problems (0 = the whole split)
  c.eval.batch_size = 64  # prompts per sampler call (per host)
  c.eval.num_attempts = 2  # K attempts at evaluation
  c.eval.greedy = True  # temperature 0 (the paper's protocol); else rollout.temperature
  c.eval.max_new_tokens = 0  # per attempt (0 = rollout.max_new_tokens)
  c.eval.checkpoint = "best"  # evaluate job: best | latest | <step>
  # Evaluations written to WORKDIR/eval/<name>.json after training and by the evaluate job:
  # final (greedy K attempts, CIs) | attempts (Figure 8) | scaling (Figure 1 right) |
  # fixed_first (corrections of the base model's first attempts, Figure 4) | pass_at_k | repair.
  c.eval.suite = ("final",)
  # forced_check: the opening attempt 2 is made to start with (a check's first words)
  c.eval.forced_prefix = ""
  c.eval.file_suffix = ""  # eval/<name><suffix>.json: a second evaluation of the same kind
  c.eval.curve_attempts = 10  # attempts: K of the K-attempt curve (Figure 8)
  c.eval.curve_problems = 0  # attempts / scaling / pass_at_k problems (0 = eval.num_examples)
  c.eval.scaling_budgets = (2, 4, 8, 16, 32)  # scaling: samples per problem (Figure 1 right)
  c.eval.scaling_temperature = 0.7  # scaling: the paper's sampling temperature
  c.eval.pass_k = (1, 5)  # pass_at_k: the k of pass@k (unbiased estimator, Chen et al. 2021)
  c.eval.pass_samples = 10  # pass_at_k: samples per problem (>= max k)
  c.eval.pass_temperature = 0.8  # pass_at_k: sampling temperature
  c.eval.repair_set = ""  # repair: JSONL of fixed first attempts (the MBPP-R stand-in)
  c.eval.repair_out = ""  # repair_set job: the JSONL it writes ("" = WORKDIR/repair_set.jsonl)

  c.report = ml_collections.ConfigDict()
  c.report.table = ""  # the paper table this run is a row of (table1..table4, figures)
  c.report.row = ""  # its row name in that table (e.g. no_stage1); "" = the method's name

  c.log = ml_collections.ConfigDict()
  c.log.every_steps = 1  # metrics to TensorBoard + metrics.jsonl
  c.log.episodes_every_steps = 50  # dump full episodes (0 = never)
  c.log.num_episodes = 8  # episodes per dump

  c.distributed = ml_collections.ConfigDict()
  c.distributed.enabled = False  # call jax.distributed.initialize() (multi-host / multi-process)
  c.distributed.coordinator_address = ""  # host:port; "" = auto-detect (TPU pods, SLURM)
  c.distributed.num_processes = 0  # 0 = auto-detect
  c.distributed.process_id = -1  # -1 = auto-detect
  c.distributed.cpu_collectives = "gloo"  # CPU backend collectives across processes ("" = default)
  return c
