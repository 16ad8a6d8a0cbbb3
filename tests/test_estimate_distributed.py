"""Per-GPU memory, time and cost for a run on several GPUs (DDP, FSDP2, DeepSpeed ZeRO-2/3),
checked term by term against the one-GPU estimate it rewrites."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.estimate.advice import strategy_verdict
from workbench.estimate.config import load_model_config
from workbench.estimate.gpus import find_gpu
from workbench.estimate.memory import GIB, EstimateSettings, estimate_memory
from workbench.estimate.params import architecture_from_config
from workbench.estimate.pergpu import (INTER_NODE_SCALING, LAYERS_GATHERED, SCALING,
                                       choose_strategy, estimate_time_multi,
                                       layer_weight_bytes, per_gpu_memory, root_weight_bytes)
from workbench.estimate.speed import DataCount, estimate_time

REPO = Path(__file__).resolve().parent.parent


def arch(name):
    return architecture_from_config(load_model_config(name)[0])


@pytest.fixture(scope="module")
def llama():
    a = arch("llama-3.1-8b")
    # The optimizer step holds the peak for a full fine-tune: every gradient exists.
    return a, estimate_memory(a, EstimateSettings(method="lora", batch=2, seq=1024))


def test_ddp_is_a_full_replica_plus_gradient_buckets(llama):
    a, one = llama
    ddp = per_gpu_memory(one, a, "ddp", 4)
    for name, value in one.breakdown.items():
        if name != "allocator reserve":
            assert ddp.breakdown[name] == value, name
    assert ddp.breakdown["DDP gradient buckets"] == one.trainable_params * 4
    assert ddp.peak_bytes == one.peak_bytes + one.trainable_params * 4
    # One GPU is no distribution at all: the same numbers.
    assert per_gpu_memory(one, a, "ddp", 1).peak_bytes == one.peak_bytes


@pytest.mark.parametrize("strategy,zero", [("fsdp", 3), ("deepspeed", 3)])
def test_fully_sharded_divides_weights_and_states_and_adds_gathers(llama, strategy, zero):
    a, one = llama
    world = 4
    got = per_gpu_memory(one, a, strategy, world, zero)
    for name in ("frozen weights", "trainable params", "optimizer states"):
        assert got.breakdown[name] == -(-one.breakdown[name] // world), name
    for name in ("saved activations", "recomputation", "backward gradient buffers"):
        assert got.breakdown[name] == one.breakdown[name], name  # activations: per rank
    layer = (a.layer_linear_params + a.layer_norm_params) * 2 + one.trainable_params // a.layers * 4
    assert layer_weight_bytes(a, one) == layer
    assert got.breakdown["all-gather buffers"] == LAYERS_GATHERED * layer
    assert got.breakdown["root module gathered"] == (a.embedding_params + a.lm_head_params
                                                     + a.hidden) * 2
    assert got.peak_bytes == sum(got.breakdown.values())
    assert got.peak_bytes < per_gpu_memory(one, a, "ddp", world).peak_bytes
    # More GPUs, less memory each; never below the unsharded parts.
    assert per_gpu_memory(one, a, strategy, 8, zero).peak_bytes < got.peak_bytes


def test_zero2_shards_states_not_weights(llama):
    a, one = llama
    z2 = per_gpu_memory(one, a, "deepspeed", 4, zero_stage=2)
    assert z2.strategy == "deepspeed-2"
    assert z2.breakdown["frozen weights"] == one.breakdown["frozen weights"]
    assert z2.breakdown["optimizer states"] == -(-one.breakdown["optimizer states"] // 4)
    assert "all-gather buffers" not in z2.breakdown


def test_full_fine_tune_shards_gradients_at_the_optimizer_step():
    a = arch("qwen2.5-0.5b")
    one = estimate_memory(a, EstimateSettings(method="full", batch=1, seq=256))
    assert one.phase == "the optimizer steps"
    fsdp = per_gpu_memory(one, a, "fsdp", 2)
    assert fsdp.breakdown["gradients"] == -(-one.breakdown["gradients"] // 2)
    assert fsdp.breakdown["trainable params"] == -(-one.breakdown["trainable params"] // 2)


def test_cpu_offload_moves_sharded_state_off_the_gpu(llama):
    a, one = llama
    off = per_gpu_memory(one, a, "fsdp", 4, cpu_offload=True)
    assert off.breakdown["frozen weights"] == 0 and off.breakdown["optimizer states"] == 0
    assert off.peak_bytes < per_gpu_memory(one, a, "fsdp", 4).peak_bytes
    z2 = per_gpu_memory(one, a, "deepspeed", 4, zero_stage=2, cpu_offload=True)
    assert z2.breakdown["optimizer states"] == 0
    assert z2.breakdown["frozen weights"] == one.breakdown["frozen weights"]


def test_qlora_layer_gather_is_4bit():
    a = arch("llama-3.1-8b")
    one = estimate_memory(a, EstimateSettings(method="qlora", batch=1, seq=1024))
    lora = estimate_memory(a, EstimateSettings(method="lora", batch=1, seq=1024))
    assert layer_weight_bytes(a, one) < layer_weight_bytes(a, lora) / 3
    assert root_weight_bytes(a, one) == 2 * root_weight_bytes(a, lora)  # fp32 after prepare


def test_auto_picks_ddp_when_a_replica_fits_else_fsdp():
    assert choose_strategy(10 * GIB, 40 * GIB)[0] == "ddp"
    strategy, why = choose_strategy(50 * GIB, 40 * GIB)
    assert strategy == "fsdp" and "does not fit" in why


def test_verdict_says_fits_only_sharded():
    # 70B-class LoRA on 8 x 80 GB: no replica fits, FSDP does.
    a = arch("llama-3.1-8b")
    one = estimate_memory(a, EstimateSettings(method="lora", batch=1, seq=1024))
    per = {k: per_gpu_memory(one, a, s, 4, z) for k, s, z in
           (("ddp", "ddp", 3), ("fsdp", "fsdp", 3), ("deepspeed-3", "deepspeed", 3))}
    available = (per["ddp"].peak_bytes + per["fsdp"].peak_bytes) // 2
    text = strategy_verdict(per, available, "fsdp")
    assert "fits only sharded" in text and text.startswith("fsdp: ")
    assert "use fsdp" in strategy_verdict(per, available, "ddp")
    assert "fits too" in strategy_verdict(per, per["ddp"].peak_bytes * 2, "fsdp")
    assert "any strategy" in strategy_verdict(per, 1 * GIB, "fsdp")


def test_time_and_cost_on_n_gpus_use_the_stated_scaling(llama):
    a, _ = llama
    s = EstimateSettings(method="lora", batch=2, seq=1024, grad_accum=4)
    h100 = find_gpu("h100")
    data = DataCount(tokens=10_000_000)
    one = estimate_time(a, s, h100, data=data)
    four = estimate_time_multi(one, s, 4, "ddp", data=data)
    assert four.scaling == SCALING["ddp"]
    assert four.seconds == pytest.approx(one.seconds / (4 * SCALING["ddp"]), rel=1e-3)
    assert four.usd == pytest.approx(four.seconds / 3600 * one.usd_per_hour * 4)
    assert four.tokens_per_step == 4 * one.tokens_per_step
    two_nodes = estimate_time_multi(one, s, 4, "fsdp", nnodes=2, data=data)
    assert two_nodes.scaling == pytest.approx(SCALING["fsdp"] * INTER_NODE_SCALING)
    fixed = estimate_time_multi(one, s, 4, "ddp", max_steps=10)
    assert fixed.steps == 10 and fixed.tokens_total == 10 * 4 * one.tokens_per_step
    assert estimate_time_multi(one, s, 4, "ddp").seconds is None  # nothing counted, nothing priced


def test_estimate_cli_per_gpu_json():
    out = subprocess.run(
        [sys.executable, "-m", "workbench.estimate.cli", "--model", "llama-3.1-8b", "--gpus", "4",
         "--gpu", "a100-40gb", "--batch", "2", "--seq", "1024", "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)["distributed"]
    assert d["gpus"] == 4 and set(d["per_gpu"]) == {"ddp", "fsdp", "deepspeed-2", "deepspeed-3"}
    assert d["strategy"] == "ddp" and "fits each GPU" in d["why"]
    assert d["time"]["gpus"] == 4 and d["time"]["scaling"] == SCALING["ddp"]
    assert d["cost"]["h100"]["usd_per_hour"] == pytest.approx(4 * find_gpu("h100").usd_per_hour)
    one_gpu = subprocess.run(
        [sys.executable, "-m", "workbench.estimate.cli", "--model", "llama-3.1-8b", "--gpu",
         "h100", "--json"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert json.loads(one_gpu.stdout)["distributed"] is None


def test_estimate_cli_auto_chooses_fsdp_when_no_replica_fits():
    out = subprocess.run(
        [sys.executable, "-m", "workbench.estimate.cli", "--model", "llama-3.1-8b", "--gpus", "8",
         "--gpu", "t4", "--method", "lora", "--batch", "1", "--seq", "512", "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)["distributed"]
    assert d["strategy"] == "fsdp" and "does not fit" in d["why"]
    assert "fits only sharded" in d["verdict"]
