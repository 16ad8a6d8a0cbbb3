"""GPU telemetry through NVML (nvidia-ml-py). No torch import.

Every query is wrapped: a machine without an NVIDIA driver, or a GPU that does not support
one query (power on some cards, temperature in some containers), reads as None / "n/a"
instead of raising. That matters because the runner logs telemetry while training and the
app polls it: a telemetry hiccup must never end a run.
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_initialized: bool | None = None  # None: not tried yet; False: no NVML here


def _nvml():
    global _initialized
    with _lock:
        if _initialized is False:
            return None
        try:
            import pynvml  # provided by nvidia-ml-py
        except ImportError:
            _initialized = False
            return None
        if _initialized is None:
            try:
                pynvml.nvmlInit()
                _initialized = True
            except Exception:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
                _initialized = False
                return None
        return pynvml


def _query(fn, *args) -> Any:
    try:
        return fn(*args)
    except Exception:
        return None


def gpu_snapshot() -> list[dict]:
    """One dict per GPU: index, name, memory total / used / free (bytes), utilization (%),
    temperature (C), power (W) and power limit (W). An empty list when there is no NVML."""
    nvml = _nvml()
    if nvml is None:
        return []
    count = _query(nvml.nvmlDeviceGetCount) or 0
    gpus = []
    for index in range(count):
        handle = _query(nvml.nvmlDeviceGetHandleByIndex, index)
        if handle is None:
            continue
        name = _query(nvml.nvmlDeviceGetName, handle)
        if isinstance(name, bytes):
            name = name.decode(errors="replace")
        mem = _query(nvml.nvmlDeviceGetMemoryInfo, handle)
        util = _query(nvml.nvmlDeviceGetUtilizationRates, handle)
        temp = _query(nvml.nvmlDeviceGetTemperature, handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
        power = _query(nvml.nvmlDeviceGetPowerUsage, handle)
        limit = _query(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        gpus.append({
            "index": index,
            "name": name or "n/a",
            "memory_total": getattr(mem, "total", None),
            "memory_used": getattr(mem, "used", None),
            "memory_free": getattr(mem, "free", None),
            "utilization": getattr(util, "gpu", None),
            "temperature_c": temp,
            "power_w": round(power / 1000, 1) if power is not None else None,
            "power_limit_w": round(limit / 1000, 1) if limit is not None else None,
        })
    return gpus
