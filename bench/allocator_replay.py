"""Replay the H200 calibration step's device allocations through the caching-allocator model,
point by point, and show where new segments are created: the evidence for why the allocator's
reserve is not a function of the step's shape (bench/allocator_replay.md).

The tracer and the allocator model are the product's own (`workbench/estimate/trace.py`,
`workbench/estimate/allocator.py`, what `workbench estimate --trace` runs); this script adds
the per-point diagnosis: every segment of 64 MiB or more cudaMalloc'ed after the peak reset,
and which request set the allocated peak.

Run:  HF_HUB_OFFLINE=1 .venv/bin/python bench/allocator_replay.py [--points key|all|NAME...]
      [--steps 4] [--out replay.jsonl]     (5-20 s of one CPU core per point)
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workbench.estimate.allocator import replay  # noqa: E402
from workbench.estimate.memory import CUBLAS_WORKSPACE_BYTES, CUBLAS_WORKSPACES  # noqa: E402
from workbench.estimate.params import architecture_from_config  # noqa: E402
from workbench.estimate.trace import record_step  # noqa: E402

_spec = importlib.util.spec_from_file_location("estimate_accuracy", ROOT / "bench" / "estimate_accuracy.py")
accuracy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(accuracy)

MiB, GiB = 1 << 20, 1 << 30


def run_point(archs: dict, p: dict, steps: int) -> dict:
    start = time.monotonic()
    config = archs[p["arch"]]
    settings = accuracy.settings_for(p, architecture_from_config(config))
    events, trainable = record_step(config, settings, steps)
    log: list = []
    r = replay(events, preallocated=(CUBLAS_WORKSPACE_BYTES,) * CUBLAS_WORKSPACES, segment_log=log)
    for label, request, segment, allocated, reserved in log:
        if segment >= 64 * MiB:
            print(f"   new segment {segment / GiB:6.2f} GiB for {label} ({request / GiB:.3f} GiB): "
                  f"allocated {allocated / GiB:.2f} reserved {reserved / GiB:.2f}")
    print(f"   peak allocated at {r.peak_label}")
    return dict(point=accuracy.point_key(p), trainable=trainable, trainable_meas=p["trainable_params"],
                sim_alloc=r.peak_allocated, sim_reserved=r.peak_reserved,
                meas_alloc=p["peak_alloc"], meas_reserved=p["peak_reserved"],
                sim_res=r.reserve, meas_res=p["peak_reserved"] - p["peak_alloc"],
                extra_logits_segment_in_step2=any("step1" in x[0] and x[2] >= 64 * MiB for x in log),
                n_events=len(events), secs=round(time.monotonic() - start, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", nargs="*", default=["key"])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--out", default=None, help="append one JSON line per point to this file")
    a = ap.parse_args()
    archs, points, _ = accuracy.load_points(accuracy.DEFAULT_TRUTH)
    lora = [p for p in points if p["method"] == "lora"]
    if a.points == ["key"]:
        sel = [p for p in lora if p["arch"] in ("Qwen2.5-0.5B", "SmolLM2-135M") and p["batch"] == 4
               and not p["grad_ckpt"]]
    elif a.points == ["all"]:
        sel = sorted(lora, key=lambda p: (p["batch"] * p["seq"], p["arch"]))
    else:
        sel = [p for p in lora if any(s in accuracy.point_key(p) for s in a.points)]
    for p in sel:
        rec = run_point(archs, p, a.steps)
        print(f"{rec['point']:45s} alloc sim {rec['sim_alloc'] / GiB:7.2f} meas {rec['meas_alloc'] / GiB:7.2f} | "
              f"reserve sim {rec['sim_res'] / GiB:6.2f} meas {rec['meas_res'] / GiB:6.2f} | {rec['secs']}s",
              flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
