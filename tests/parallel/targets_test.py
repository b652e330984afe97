"""User target names -> chips, device counts, compiler topologies, gcloud accelerator types."""

import pytest

from score_jax.parallel import targets


@pytest.mark.parametrize(
  "name, devices, hosts, topology, accelerator",
  [
    ("v5e-4", 4, 1, "v5e:2x2", "v5litepod-4"),
    ("v5e-8", 8, 1, "v5e:2x4", "v5litepod-8"),
    ("v5e-16", 16, 4, "v5e:4x4", "v5litepod-16"),
    ("v5e-256", 256, 64, "v5e:16x16", "v5litepod-256"),
    ("v5p-8", 4, 1, "v5p:2x2x1", "v5p-8"),  # v5p counts TensorCores: 2 per chip (megacore)
    ("v5p-128", 64, 16, "v5p:4x4x4", "v5p-128"),
    ("v6e-16", 16, 4, "v6e:4x4", "v6e-16"),
  ],
)
def test_tpu_names(name, devices, hosts, topology, accelerator):
  t = targets.parse(name)
  assert (t.num_devices, t.num_hosts, t.topology, t.accelerator_type) == (
    devices,
    hosts,
    topology,
    accelerator,
  )
  assert t.chip.platform == "tpu" and t.chip.usable_bytes <= t.chip.hbm_bytes


def test_gpu_nodes_and_slices():
  t = targets.parse("h100x8")
  assert (t.num_devices, t.num_hosts, t.topology, t.chip.platform) == (8, 1, "1x1x8", "cuda")
  two = targets.parse("v5e-16", num_slices=2)
  assert (two.num_devices, two.num_hosts, two.accelerator_type) == (32, 8, "v5litepod-16")


@pytest.mark.parametrize("bad", ["v5e-3", "v5p-7", "v4-8", "h100x9", "tpu", ""])
def test_unknown_names_say_what_is_accepted(bad):
  with pytest.raises(ValueError, match="v5e|v5p|GPUs|TensorCores"):
    targets.parse(bad)


def test_plan_targets_all_parse():
  assert [targets.parse(n).name for n in targets.known_names()] == targets.known_names()


@pytest.mark.parametrize(
  "kind, chip",
  [
    ("NVIDIA H200", "h200"),  # as jax.devices()[0].device_kind read on an H200 (2026-12-04)
    ("NVIDIA H100 80GB HBM3", "h100"),
    ("TPU v5 lite", "v5e"),
    ("TPU v5", "v5p"),
    ("TPU v6 lite", "v6e"),
  ],
)
def test_device_kinds_map_to_their_chip(kind, chip):
  assert targets.chip_for_device_kind(kind) is targets.CHIPS[chip]


@pytest.mark.parametrize("kind", ["cpu", "NVIDIA H100 PCIe", "NVIDIA A100-SXM4-80GB", ""])
def test_unknown_device_kinds_have_no_spec(kind):
  # An H100 PCIe has a lower peak than the SXM part: no spec beats a wrong one.
  assert targets.chip_for_device_kind(kind) is None
