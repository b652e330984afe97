"""Sampling: the jitted KV-cache sampler and K-attempt episodes on one continuing cache.

Public face (import the modules):
- `sampling.Sampler`, `sampling.SamplingParams`, `sampling.StopReason`: bucketed prefill,
  appended turns and a while-loop decode (`programs` holds the jitted bodies);
- `rollout.run_episodes` -> `rollout.Episodes` (an `rl.experience.Experience` plus texts,
  lengths, truncation), `rollout.RolloutConfig`, `rollout.chat_inputs`;
- `offline.training_episodes`: one training step's episodes, Stage II's base-model first
  attempts included.
"""
