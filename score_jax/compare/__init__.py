"""The `compare` job: a pretrained checkpoint, its base evaluation, the compared methods trained
from it, their exports to Hugging Face and a parity check against transformers.

- `job`: the job (register it by importing; `experiments/smollm2_selfcorrect.py` is its example);
- `export`: a run's selected policy as a transformers checkpoint directory;
- `hf_check`: transformers' greedy attempts vs our evaluation (base parity, export parity).
"""
