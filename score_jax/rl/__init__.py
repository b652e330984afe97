"""RL on episode streams: the batch type, the objectives, the algorithm table, the jitted steps.

Public face (import the modules):
- `experience.Experience`: the episode batch every step takes (fields, dtypes, axes, checks);
- `algorithms.ALGORITHMS` / `METHODS` / `register` / `Coefficients`: one row per objective,
  methods as phases, the traced alpha / beta1 / beta2;
- `steps.Steps(...).update(name)`, `steps.LossConfig`: sharded jitted steps built on demand;
- `losses` (RLOO, per-turn weights, aggregation), `kl` (estimators, adaptive beta2),
  `optim` (AdamW, TrainState), `scoring.stream_scores` (per-slot log-probs of a stream).
`update` holds the step bodies `steps` jits; callers go through `steps`.
"""
