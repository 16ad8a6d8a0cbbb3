"""GPU telemetry with a fake NVML: no driver, unsupported queries, two GPUs, processes."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import pytest

from workbench.estimate import gpu


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):
    pass


def fake_nvml(gpus=(), init_error=None, unsupported=()):
    """A pynvml stand-in: `gpus` is a list of dicts; names in `unsupported` raise."""
    m = types.ModuleType("pynvml")
    m.NVMLError = NVMLError
    m.NVML_TEMPERATURE_GPU = 0

    def maybe(name, value):
        def fn(*args):
            if name in unsupported:
                raise NVMLError_NotSupported("Not Supported")
            return value(*args) if callable(value) else value
        return fn

    def init():
        if init_error:
            raise init_error
    m.nvmlInit = init
    m.nvmlSystemGetDriverVersion = maybe("driver", "550.54.15")
    m.nvmlDeviceGetCount = maybe("count", len(gpus))
    m.nvmlDeviceGetHandleByIndex = lambda i: gpus[i]
    m.nvmlDeviceGetName = maybe("name", lambda h: h["name"].encode())
    m.nvmlDeviceGetMemoryInfo = maybe("memory", lambda h: SimpleNamespace(
        total=h["total"], used=h["used"], free=h["total"] - h["used"]))
    m.nvmlDeviceGetUtilizationRates = maybe("util", lambda h: SimpleNamespace(gpu=h["util"], memory=0))
    m.nvmlDeviceGetTemperature = maybe("temperature", lambda h, kind: h["temp"])
    m.nvmlDeviceGetPowerUsage = maybe("power", lambda h: h["mw"])
    m.nvmlDeviceGetEnforcedPowerLimit = maybe("power_limit", lambda h: 700000)
    m.nvmlDeviceGetComputeRunningProcesses = maybe("processes", lambda h: [
        SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in h["procs"]])
    return m


GIB = 1024 ** 3
H100 = {"name": "NVIDIA H100 80GB HBM3", "total": 80 * GIB, "used": 10 * GIB, "util": 97,
        "temp": 61, "mw": 512345, "procs": [(4242, 9 * GIB)]}
A10G = {"name": "NVIDIA A10G", "total": 24 * GIB, "used": 0, "util": 0, "temp": 30, "mw": 25000,
        "procs": []}


@pytest.fixture
def use(monkeypatch):
    def install(module):
        if module is None:
            monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
        else:
            monkeypatch.setitem(sys.modules, "pynvml", module)
        gpu._reset_for_tests()
    yield install
    gpu._reset_for_tests()


def test_two_gpus_with_processes_and_driver(use):
    use(fake_nvml([H100, A10G]))
    t = gpu.telemetry()
    assert t.available and t.driver_version == "550.54.15" and len(t.gpus) == 2
    h = t.gpus[0]
    assert h.name == "NVIDIA H100 80GB HBM3" and h.memory_free == 70 * GIB
    assert h.utilization == 97 and h.temperature_c == 61 and h.power_w == 512.3
    assert h.power_limit_w == 700.0
    assert [(p.pid, p.used_memory) for p in h.processes] == [(4242, 9 * GIB)]
    assert t.gpus[1].processes == []
    snap = gpu.gpu_snapshot()
    assert [s["name"] for s in snap] == ["NVIDIA H100 80GB HBM3", "NVIDIA A10G"]
    assert set(snap[0]) == {"index", "name", "memory_total", "memory_used", "memory_free",
                            "utilization", "temperature_c", "power_w", "power_limit_w"}


def test_driver_missing_reads_as_no_gpu(use):
    use(fake_nvml(init_error=NVMLError("NVML Shared Library Not Found")))
    t = gpu.telemetry()
    assert not t.available and "no NVIDIA GPU found" in t.reason
    assert "Library Not Found" in t.reason
    assert gpu.gpu_snapshot() == []


def test_pynvml_not_installed(use):
    use(None)
    t = gpu.telemetry()
    assert not t.available and "not installed" in t.reason


def test_zero_devices(use):
    use(fake_nvml([]))
    t = gpu.telemetry()
    assert not t.available and "0 devices" in t.reason


def test_unsupported_queries_read_as_na(use):
    use(fake_nvml([H100], unsupported={"power", "temperature", "processes", "driver"}))
    t = gpu.telemetry()
    g = t.gpus[0]
    assert t.available and t.driver_version is None
    assert g.power_w is None and g.temperature_c is None and g.processes is None
    assert g.show("power_w") == "n/a" and g.show("utilization") == "97"
    assert g.memory_total == 80 * GIB  # the rest still answers


def test_estimate_cli_uses_the_detected_gpu(use, capsys):
    use(fake_nvml([H100]))
    from workbench.estimate import cli

    assert cli.main(["--model", "qwen2.5-0.5b", "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["gpu"]["key"] == "h100" and data["gpu"]["available_bytes"] == 70 * GIB
    assert data["verdict"] == "fits"
