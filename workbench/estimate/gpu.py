"""GPU telemetry through NVML (nvidia-ml-py). No torch import.

Every query is wrapped (as nvitop does): a machine without an NVIDIA driver reads as a clear
"no NVIDIA GPU found" state, and a query one GPU does not support (power on some cards,
temperature in some containers, processes in others) reads as None, shown as "n/a", instead
of raising. That matters because the runner logs telemetry while training and the app polls
it: a telemetry hiccup must never end a run.

- `telemetry()` -> Telemetry(available, reason, driver_version, gpus=[GpuStatus...])
- `gpu_snapshot()` -> list of plain dicts (the runner's events use these keys)
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

NA = "n/a"

_lock = threading.Lock()
_initialized: bool | None = None  # None: not tried yet; False: no NVML here
_reason: str = ""


def _reset_for_tests() -> None:
    """Forget the cached NVML state (tests swap in a fake pynvml)."""
    global _initialized, _reason
    with _lock:
        _initialized, _reason = None, ""


def _nvml():
    global _initialized, _reason
    with _lock:
        if _initialized is False:
            return None
        try:
            import pynvml  # provided by nvidia-ml-py
        except ImportError:
            _initialized, _reason = False, "nvidia-ml-py (pynvml) is not installed"
            return None
        if _initialized is None:
            try:
                pynvml.nvmlInit()
                _initialized = True
            except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
                _initialized = False
                _reason = f"no NVIDIA GPU found (NVML: {_describe(exc)})"
                return None
        return pynvml


def _describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.decode(errors="replace") if isinstance(text, bytes) else text


def _query(fn, *args) -> Any:
    try:
        return fn(*args)
    except Exception:  # NVMLError_NotSupported, NoPermission, GpuIsLost...: "n/a"
        return None


def _text(value) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


@dataclass
class GpuProcess:
    pid: int
    used_memory: int | None  # bytes; None when NVML cannot tell (e.g. in some containers)


@dataclass
class GpuStatus:
    index: int
    name: str
    memory_total: int | None
    memory_used: int | None
    memory_free: int | None
    utilization: int | None
    temperature_c: int | None
    power_w: float | None
    power_limit_w: float | None
    processes: list[GpuProcess] | None = None  # None: the query is not supported

    def show(self, key: str) -> str:
        value = getattr(self, key)
        return NA if value is None else str(value)


@dataclass
class Telemetry:
    available: bool
    reason: str = ""
    driver_version: str | None = None
    gpus: list[GpuStatus] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _processes(nvml, handle) -> list[GpuProcess] | None:
    found = None
    for name in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        fn = getattr(nvml, name, None)
        if fn is None:
            continue
        procs = _query(fn, handle)
        if procs is None:
            continue
        found = found or {}
        for p in procs:
            used = getattr(p, "usedGpuMemory", None)
            # NVML reports "not available" as a huge sentinel on some drivers.
            if used is not None and used >= 2 ** 63:
                used = None
            found.setdefault(int(p.pid), GpuProcess(int(p.pid), used))
    return list(found.values()) if found is not None else None


def _status(nvml, index: int) -> GpuStatus | None:
    handle = _query(nvml.nvmlDeviceGetHandleByIndex, index)
    if handle is None:
        return None
    name = _text(_query(nvml.nvmlDeviceGetName, handle))
    mem = _query(nvml.nvmlDeviceGetMemoryInfo, handle)
    util = _query(nvml.nvmlDeviceGetUtilizationRates, handle)
    temp = _query(nvml.nvmlDeviceGetTemperature, handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
    power = _query(nvml.nvmlDeviceGetPowerUsage, handle)
    limit = _query(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
    return GpuStatus(
        index=index, name=name or NA,
        memory_total=getattr(mem, "total", None), memory_used=getattr(mem, "used", None),
        memory_free=getattr(mem, "free", None), utilization=getattr(util, "gpu", None),
        temperature_c=temp,
        power_w=round(power / 1000, 1) if power is not None else None,
        power_limit_w=round(limit / 1000, 1) if limit is not None else None,
        processes=_processes(nvml, handle))


def telemetry() -> Telemetry:
    """Every GPU's state now, or available=False with the reason."""
    nvml = _nvml()
    if nvml is None:
        return Telemetry(False, _reason or "no NVIDIA GPU found")
    count = _query(nvml.nvmlDeviceGetCount)
    driver = _text(_query(nvml.nvmlSystemGetDriverVersion))
    if not count:
        return Telemetry(False, "no NVIDIA GPU found (the driver sees 0 devices)", driver)
    gpus = [g for g in (_status(nvml, i) for i in range(count)) if g is not None]
    return Telemetry(True, "", driver, gpus)


def gpu_snapshot() -> list[dict]:
    """One dict per GPU: index, name, memory total / used / free (bytes), utilization (%),
    temperature (C), power (W) and power limit (W). An empty list when there is no NVML."""
    keys = ("index", "name", "memory_total", "memory_used", "memory_free", "utilization",
            "temperature_c", "power_w", "power_limit_w")
    return [{k: getattr(g, k) for k in keys} for g in telemetry().gpus]
