"""`python -m score_jax.benchmarks train_step`: stream layouts, the spec peak, and a tiny run."""

import re
import types

import pytest

from score_jax.benchmarks import train_step
from score_jax.parallel import targets

NUM = r"([0-9.]+)"


def _args(*flags):
  return train_step.parse_args(["train_step", *flags])


def test_paper_math_streams_are_the_experiment_shapes():
  args = _args("--paper_math", "--batch=8", "--microbatches=2")
  assert train_step.stream_layout(args) == (1024, 1024, 128)
  assert args.seq == 1024 + 2 * 1024 + 128
  assert args.remat == "dots_with_no_batch_dims_saveable"


def test_default_layout_is_fractions_of_seq():
  args = _args("--seq=256")
  assert train_step.stream_layout(args) == (64, 96, 16)


@pytest.mark.parametrize(
  "flags, message",
  [
    (("--gen_len=8",), "--prompt_len and --instr_len"),
    (("--batch=6", "--microbatches=4"), "not a multiple"),
  ],
)
def test_bad_shapes_are_refused(flags, message, capsys):
  with pytest.raises(SystemExit):
    _args(*flags)
  assert message in capsys.readouterr().err


def test_spec_peak_by_device_kind_and_flag():
  h200 = types.SimpleNamespace(device_kind="NVIDIA H200")
  peak, source = train_step.spec_peak(_args("--dtype=bfloat16"), h200)
  assert peak == targets.CHIPS["h200"].peak_bf16_flops and "h200" in source
  assert train_step.spec_peak(_args("--dtype=float32"), h200)[0] == 0.0  # specs are bf16
  cpu = types.SimpleNamespace(device_kind="cpu")
  assert train_step.spec_peak(_args("--dtype=bfloat16"), cpu) == (0.0, "no spec for 'cpu'")
  assert train_step.spec_peak(_args("--spec_peak_tflops=2.5"), cpu)[0] == 2.5e12


def test_tiny_run_prints_mfu_against_both_peaks(capsys):
  flags = ("--width=64", "--layers=1", "--vocab=512", "--batch=8", "--steps=1", "--peak_n=256")
  train_step.main(["train_step", *flags, "--prompt_len=8", "--gen_len=6", "--instr_len=4"])
  out = capsys.readouterr().out
  assert "batch 8 x seq 24 (prompt 8, attempts 6 + 6, instruction 4)" in out
  assert "logits at <= 12 slots per row" in out
  m = re.search(rf"analytic model\s*:\s*{NUM} GFLOP/step\s+{NUM} GFLOP/s\s+MFU {NUM}%", out)
  assert m and min(map(float, m.groups())) > 0, out
  train_step.main(["train_step", *flags, "--seq=32", "--spec_peak_tflops=0.001"])
  out = capsys.readouterr().out
  assert re.search(rf"MFU {NUM}% of the matmul peak .*, {NUM}% of the spec peak", out), out
