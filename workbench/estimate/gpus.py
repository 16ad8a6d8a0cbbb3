"""A table of common GPUs, so a user can plan for a GPU they do not have.

Memory is what the card reports (NVML total, GiB as sold); dense bf16/fp16 tensor throughput
is the vendor's datasheet figure WITHOUT sparsity; $/hour is a typical on-demand cloud price
in late 2026 (one GPU, community/secure cloud median; prices move, the profile's
budget.gpu_hourly_usd overrides it). Memory bandwidth is the datasheet figure (TB/s). The time
model (speed.py) was measured on the H200 only; other cards are derived from these figures.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

GIB = 1024 ** 3


@dataclass(frozen=True)
class GpuSpec:
    key: str           # short name used on the command line: "h100"
    name: str          # display name
    memory_gib: float  # as sold (80 GB cards report ~79.6 GiB usable through NVML)
    bf16_tflops: float  # dense tensor-core peak; T4 has no bf16, its fp16 figure is used
    usd_per_hour: float
    bandwidth_tbs: float  # datasheet memory bandwidth, TB/s
    bf16: bool = True  # False: bf16 unsupported, training runs in fp16
    aliases: tuple[str, ...] = ()

    @property
    def memory_bytes(self) -> int:
        # NVML's total is the card's memory in bytes; "80GB" cards are 80 GiB-ish minus
        # reserved areas. Use the marketing figure in GiB less 1.5% for ECC/driver areas.
        return int(self.memory_gib * GIB * 0.985)


GPUS: tuple[GpuSpec, ...] = (
    GpuSpec("t4", "Tesla T4 16GB", 16, 65, 0.35, 0.32, bf16=False, aliases=("tesla t4",)),
    GpuSpec("l4", "L4 24GB", 24, 121, 0.70, 0.3),
    GpuSpec("a10g", "A10G 24GB", 24, 70, 1.00, 0.6, aliases=("a10",)),
    GpuSpec("rtx3090", "RTX 3090 24GB", 24, 71, 0.25, 0.936,
            aliases=("geforce rtx 3090", "3090")),
    GpuSpec("rtx4090", "RTX 4090 24GB", 24, 165, 0.40, 1.008,
            aliases=("geforce rtx 4090", "4090")),
    GpuSpec("l40s", "L40S 48GB", 48, 362, 0.90, 0.864),
    GpuSpec("a100-40gb", "A100 40GB", 40, 312, 1.30, 1.555, aliases=("a100-sxm4-40gb", "a100-pcie-40gb")),
    GpuSpec("a100-80gb", "A100 80GB", 80, 312, 1.70, 2.039, aliases=("a100-sxm4-80gb", "a100 80gb pcie", "a100")),
    GpuSpec("h100", "H100 80GB", 80, 989, 2.50, 3.35, aliases=("h100 80gb hbm3", "h100-sxm", "h100 pcie")),
    GpuSpec("h200", "H200 141GB", 141, 989, 3.50, 4.8, aliases=("h200 nvl",)),
)


class UnknownGpu(ValueError):
    pass


def _norm(text: str) -> str:
    text = text.lower().replace("nvidia", "").replace("geforce", "")
    return re.sub(r"[^a-z0-9]+", "", text)


def find_gpu(name: str) -> GpuSpec:
    """A table entry for a short key ("h100"), a display name, or an NVML name such as
    "NVIDIA H100 80GB HBM3" or "NVIDIA A100-SXM4-40GB". UnknownGpu says what is close."""
    wanted = _norm(name)
    if not wanted:
        raise UnknownGpu("empty GPU name")
    for gpu in GPUS:
        if wanted in {_norm(gpu.key), _norm(gpu.name), *(_norm(a) for a in gpu.aliases)}:
            return gpu
    # NVML names carry extra words (memory type, form factor): match the model number,
    # and for the A100 the memory size, by containment.
    candidates = []
    for gpu in GPUS:
        core = _norm(gpu.key.split("-")[0])
        if core and core in wanted:
            candidates.append(gpu)
    if len(candidates) > 1:
        sized = [g for g in candidates if f"{int(g.memory_gib)}gb" in wanted]
        candidates = sized or [max(candidates, key=lambda g: g.memory_gib)]
    if candidates:
        return candidates[0]
    keys = [g.key for g in GPUS]
    close = difflib.get_close_matches(name.lower(), keys, n=2, cutoff=0.4)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise UnknownGpu(f"unknown GPU {name!r}; {hint}known: {', '.join(keys)}")
