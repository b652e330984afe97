"""The run: setup, the RL loop, held-out evaluation, checkpoints, metrics and the console.

Public face (import the modules):
- `loop.run(config, workdir)` (the `score` job: train, then the evaluation suite) and
  `suite.run` (the `evaluate` job: `config.eval.suite` on any workdir's best / latest / given
  checkpoint, one JSON per evaluation under WORKDIR/eval/), `evaluate.evaluate` (greedy
  K-attempt metrics of any params), `repair.run` (the `repair_set` job: the MBPP-R stand-in);
- `collect`: the SFT baselines' (STaR, Pair-SFT) collection rounds;
- `setup`: meshes, the base model and tokenizer, the sampler and the typed settings built
  from a validated config; `schedule.phases` / `phase_at`: which algorithm trains when;
- `checkpoint.Checkpointer` (Orbax keep-N + best), `metrics` (Acc@t1/t2, Delta, i->c, c->i,
  edit distance), `metric_writers` (TensorBoard + JSONL, progress lines), `console` (terminal
  vs DIR/log.txt). `step_log` is the loop's own bookkeeping.
"""
