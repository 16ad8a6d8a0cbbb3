"""Before a sweep starts: does every configuration fit in GPU memory? The memory model answers
from config.json alone (no torch), so a grid with r=256 on a 24 GB card is refused up front
instead of failing one OOM at a time."""

from __future__ import annotations

from dataclasses import dataclass, replace

from workbench.fmt import fmt_gib


@dataclass
class FitCheck:
    gpu: str | None  # what the configurations were checked against; None: not checked
    available_bytes: int | None
    reason: str  # why not checked, or where the memory figure came from
    peaks: list[int | None]  # per configuration, the estimated peak (None: unknown model)
    unfit: list[int]  # indexes of configurations that do not fit

    def lines(self, labels: list[str]) -> list[str]:
        if self.gpu is None:
            return [f"memory check: {self.reason}"]
        out = [f"memory check against {self.gpu} ({fmt_gib(self.available_bytes)} available, "
               f"{self.reason}): {len(labels) - len(self.unfit)} of {len(labels)} configurations fit"]
        for i in self.unfit:
            out.append(f"  does not fit: {labels[i]} (estimated peak {fmt_gib(self.peaks[i])})")
        return out


def _target_gpu(profile) -> tuple[str | None, int | None, str]:
    """The GPU to check against: the profile's budget.gpu, else the GPU in this machine."""
    from workbench.estimate.gpu import telemetry
    from workbench.estimate.gpus import UnknownGpu, find_gpu

    if profile.budget.gpu:
        try:
            spec = find_gpu(profile.budget.gpu)
        except UnknownGpu as exc:
            return None, None, f"budget.gpu = {profile.budget.gpu!r} is unknown ({exc})"
        return spec.name, spec.memory_bytes, "budget.gpu, from the GPU table"
    state = telemetry()
    if state.available and state.gpus:
        here = state.gpus[0]
        free = here.memory_free if here.memory_free is not None else here.memory_total
        if free is not None:
            return here.name, free, "free memory now on GPU 0"
    return None, None, ("cannot check memory: no GPU here (trials run on the "
                        f"{profile.train.device if profile.train.device != 'auto' else 'CPU'}); "
                        "set budget.gpu to check against a GPU you will use")


def check_fit(profiles: list) -> FitCheck:
    from workbench.estimate.config import load_model_config
    from workbench.estimate.memory import EstimateSettings, estimate

    gpu, available, reason = _target_gpu(profiles[0])
    peaks: list[int | None] = []
    for p in profiles:
        try:
            config, _ = load_model_config(p.model.name_or_path, p.model.revision)
            settings = EstimateSettings.from_profile(p)
            if p.train.device == "cpu":  # what the runner resolves on the CPU
                settings = replace(settings, precision="fp32" if p.train.precision == "auto"
                                   else settings.precision)
            peaks.append(estimate(config, settings).peak_bytes)
        except Exception:  # noqa: BLE001 - a model the estimator does not know is not refused
            peaks.append(None)
    unfit = [] if available is None else [i for i, peak in enumerate(peaks)
                                          if peak is not None and peak > available]
    return FitCheck(gpu, available, reason, peaks, unfit)
