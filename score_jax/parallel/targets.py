"""The accelerators a run can target, by the names users type (`v5e-16`, `v5p-8`, `h100x8`).

One table serves the preflight (the topology string the TPU / GPU compiler takes, the memory a
program may use, the chip's peak for an estimated step time) and `launch/` (the gcloud
accelerator type, TPU VM image and host count). Pure data: nothing here imports JAX.

Naming follows Cloud TPU: the number after `v5e-` / `v6e-` counts chips, after `v5p-` it counts
TensorCores (two per chip, fused into one JAX device by megacore), so `v5p-8` is 4 chips on one
host. Peaks are the vendors' dense bf16 specs; usable memory is what the compiler may allocate
per device (HBM less what the runtime reserves; the TPU figures are the compiler's own limits
printed in its RESOURCE_EXHAUSTED messages for libtpu 0.0.42).
"""

import dataclasses
import re

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  platform: str  # "tpu" or "cuda"
  hbm_bytes: int  # physical memory per device
  usable_bytes: int  # what one compiled program may use per device
  peak_bf16_flops: float  # dense, per device (a megacore v5p device = one chip)
  hbm_bandwidth: float  # bytes/s per device
  chips_per_host: int
  # bytes/s one device receives over the slice / node interconnect (ICI, NVLink); only used to
  # rank plans (each micro-batch all-gathers FSDP-sharded weights), a rough public figure.
  interconnect_bandwidth: float = 200e9
  gcloud_prefix: str = ""  # accelerator type prefix, e.g. "v5litepod" -> v5litepod-16
  runtime_version: str = ""  # TPU VM image
  cores_per_device: int = 1  # TensorCores per JAX device (v5p megacore: 2)


CHIPS = {
  "v5e": Chip(
    "v5e",
    "tpu",
    16 * GIB,
    int(15.75 * GIB),
    197e12,
    819e9,
    chips_per_host=4,
    gcloud_prefix="v5litepod",
    runtime_version="v2-alpha-tpuv5-lite",
  ),
  "v5p": Chip(
    "v5p",
    "tpu",
    int(95.74 * GIB),  # the spec sheet says 95 GB; the compiler allots all 95.74 GiB
    int(95.74 * GIB),
    459e12,
    2765e9,
    chips_per_host=4,
    interconnect_bandwidth=600e9,
    gcloud_prefix="v5p",
    runtime_version="v2-alpha-tpuv5",
    cores_per_device=2,
  ),
  "v6e": Chip(
    "v6e",
    "tpu",
    32 * GIB,
    int(31.25 * GIB),
    918e12,
    1640e9,
    chips_per_host=4,
    interconnect_bandwidth=448e9,
    gcloud_prefix="v6e",
    runtime_version="v2-alpha-tpuv6e",
  ),
  # GPUs: XLA's GPU compiler does not fail on OOM; the preflight compares the peak with
  # `usable_bytes` itself (HBM less ~10% for the CUDA context, cuBLAS workspaces and the
  # allocator's fragmentation; XLA_PYTHON_CLIENT_MEM_FRACTION defaults to 0.75 of the rest, which
  # launch/ raises to 0.9).
  "h100": Chip(
    "h100",
    "cuda",
    80 * GIB,
    int(72 * GIB),
    989e12,
    3.35e12,
    chips_per_host=8,
    interconnect_bandwidth=450e9,
  ),
  "h200": Chip(
    "h200",
    "cuda",
    141 * GIB,
    int(127 * GIB),
    989e12,
    4.8e12,
    chips_per_host=8,
    interconnect_bandwidth=450e9,
  ),
}


# JAX's `device_kind` strings -> CHIPS keys (TPU v5p reports "TPU v5"; H100 PCIe and NVL parts
# have other peaks and are left out rather than given the SXM figure).
_DEVICE_KINDS = {
  "tpu v5 lite": "v5e",
  "tpu v5e": "v5e",
  "tpu v5": "v5p",
  "tpu v5p": "v5p",
  "tpu v6 lite": "v6e",
  "tpu v6e": "v6e",
  "nvidia h100 80gb hbm3": "h100",
  "nvidia h200": "h200",
}


def chip_for_device_kind(device_kind: str) -> Chip | None:
  """The chip a JAX device reports as `device_kind` ("NVIDIA H200", "TPU v5 lite"), or None."""
  name = _DEVICE_KINDS.get(device_kind.strip().lower())
  return None if name is None else CHIPS[name]


@dataclasses.dataclass(frozen=True)
class Target:
  """A slice or node: `name` as typed, its chip, device count and compiler topology string."""

  name: str
  chip: Chip
  num_devices: int
  topology: str  # TPU: "v5e:4x4"; GPU: "1x1x8" (slices x hosts x devices per host)
  num_slices: int = 1

  @property
  def num_hosts(self) -> int:
    chips = self.num_devices // self.num_slices
    if self.chip.platform == "tpu" and self.chip.cores_per_device == 1 and chips <= 8:
      return self.num_slices  # v5e / v6e slices up to 8 chips are one VM (8 chips per host)
    return -(-chips // self.chip.chips_per_host) * self.num_slices

  @property
  def accelerator_type(self) -> str:
    """gcloud's --accelerator-type (TPU only), e.g. v5litepod-16, v5p-8."""
    per_slice = self.num_devices // self.num_slices * self.chip.cores_per_device
    return f"{self.chip.gcloud_prefix}-{per_slice}"


# Chips per slice -> the compiler's topology string (2D tori for v5e / v6e, 3D for v5p).
_TPU_TOPOLOGIES = {
  "v5e": {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"},
  "v6e": {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"},
  "v5p": {
    4: "2x2x1",
    8: "2x2x2",
    16: "2x2x4",
    32: "2x4x4",
    64: "4x4x4",
    128: "4x4x8",
    256: "4x8x8",
    512: "8x8x8",
  },
}

_NAME = re.compile(r"^(v5e|v5p|v6e)-(\d+)$|^(h100|h200)x(\d+)$")


def parse(name: str, num_slices: int = 1) -> Target:
  """`v5e-16`, `v5p-8`, `v6e-16`, `h100x8`, `h200x8` (per slice / node) -> Target.

  Raises ValueError naming the accepted forms.
  """
  m = _NAME.match(name.strip().lower())
  if not m or num_slices < 1:
    raise ValueError(
      f"unknown target {name!r} (num_slices={num_slices}): use v5e-N / v6e-N (N chips), v5p-N "
      f"(N TensorCores = N/2 chips) or h100xN / h200xN (N GPUs on one node), "
      f"with num_slices >= 1"
    )
  if m.group(1):
    chip = CHIPS[m.group(1)]
    count = int(m.group(2))
    if count % chip.cores_per_device:
      raise ValueError(f"{name}: {chip.name} counts TensorCores, two per chip; use an even number")
    chips = count // chip.cores_per_device
    table = _TPU_TOPOLOGIES[chip.name]
    if chips not in table:
      sizes = ", ".join(f"{chip.name}-{c * chip.cores_per_device}" for c in table)
      raise ValueError(f"{name}: no {chip.name} slice of {chips} chips; known: {sizes}")
    topology = f"{chip.name}:{table[chips]}"
    return Target(name, chip, chips * num_slices, topology, num_slices)
  chip = CHIPS[m.group(3)]
  gpus = int(m.group(4))
  if not 1 <= gpus <= 8:
    raise ValueError(f"{name}: one node holds 1-8 GPUs; use --num_slices for more nodes")
  return Target(name, chip, gpus * num_slices, f"{num_slices}x1x{gpus}", num_slices)


def known_names() -> list[str]:
  """Every target the plan table covers, in the table's order."""
  return ["v5e-16", "v5e-64", "v5e-256", "v5p-8", "v5p-32", "v5p-128", "v6e-16", "h100x8", "h200x8"]
