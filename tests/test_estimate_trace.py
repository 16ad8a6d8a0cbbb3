"""workbench/estimate/trace.py: `workbench estimate --trace` records a real transformers + peft
step under FakeTensorMode on the CPU and replays it through the caching-allocator model."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import REPO, SHARED_DATA, TINY_MODEL, workbench

from workbench.estimate.memory import EstimateSettings, estimate_memory
from workbench.estimate.params import architecture_from_config, lora_params
from workbench.estimate.trace import (TraceUnsupported, check_traceable, record_step, trace_step,
                                      with_trace)

GPU_TRUTH = SHARED_DATA / "gpu-truth"
SMALL = EstimateSettings(r=8, batch=2, seq=64, grad_ckpt=False, dropout=0.0, loss_path="full_logits")


def tiny_config() -> dict:
    return json.loads((TINY_MODEL / "config.json").read_text())


def qwen_config(layers: int) -> dict:
    config = json.loads((REPO / "assets" / "configs" / "qwen2.5-0.5b" / "config.json").read_text())
    return {**config, "num_hidden_layers": layers}


def test_the_recorded_step_is_balanced_and_the_libraries_are_left_as_they_were():
    import peft.tuners.tuners_utils as tuners_utils
    import torch.nn.functional as F
    import transformers.masking_utils as masking_utils

    def patched():
        return (F.scaled_dot_product_attention, F.dropout, F.softmax, masking_utils.is_tracing,
                masking_utils.find_packed_sequence_indices,
                tuners_utils.BaseTunerLayer._move_adapter_to_device_of_base_layer)

    before = patched()
    events, trainable = record_step(tiny_config(), SMALL)
    assert before == patched()
    arch = architecture_from_config(tiny_config())
    assert trainable == lora_params(arch, SMALL.targets, 8)
    allocated = {}
    for ev in events:
        if ev[0] == "a":
            assert ev[1] not in allocated       # a key is freed before it is reused
            allocated[ev[1]] = ev[2]
        elif ev[0] == "f":
            assert allocated.pop(ev[1]) >= 0    # nothing freed that was not allocated
    # what outlives the steps: nothing of the steps (weights, adapters, optimizer were deleted)
    assert not allocated
    marks = [ev[1] for ev in events if ev[0] == "mark"]
    assert marks == ["empty_cache", "reset_peak"]
    phases = {ev[3].split(":")[0] for ev in events if ev[0] == "a"}
    assert {"build", "adapters", "step0.0.forward", "step1.0.backward", "step1.optimizer"} <= phases


def test_the_traced_allocated_peak_agrees_with_the_analytic_terms():
    """Two independent routes to the same bytes: the analytic terms and the traced step (2
    Qwen2.5 layers with its real 152k vocabulary, so the logits moment holds the peak)."""
    config = qwen_config(2)
    s = EstimateSettings(r=16, batch=2, seq=256, grad_ckpt=False, dropout=0.0,
                         loss_path="full_logits")
    est = estimate_memory(architecture_from_config(config), s)
    traced = trace_step(config, s)
    analytic_allocated = est.reserved_bytes - est.breakdown["allocator reserve"]
    assert traced.peak_allocated == pytest.approx(analytic_allocated, rel=0.05)
    assert "step1" in traced.peak_label and traced.peak_reserved >= traced.peak_allocated


def test_the_headline_follows_the_trace_and_the_terms_still_add_up():
    config = qwen_config(2)
    s = EstimateSettings(r=16, batch=2, seq=256, grad_ckpt=False, dropout=0.0,
                         loss_path="full_logits")
    est = estimate_memory(architecture_from_config(config), s)
    traced = trace_step(config, s)
    replayed = with_trace(est, traced)
    assert replayed.breakdown["allocator reserve"] == traced.reserve
    assert replayed.reserved_bytes == traced.peak_reserved
    assert replayed.peak_bytes == traced.peak_reserved + est.breakdown["CUDA context"]
    assert sum(replayed.breakdown.values()) == replayed.peak_bytes
    gap = traced.peak_allocated - (est.reserved_bytes - est.breakdown["allocator reserve"])
    assert replayed.breakdown.get("traced vs the terms", 0) == gap
    assert [k for k in replayed.breakdown if k != "traced vs the terms"] == list(est.breakdown)
    assert "replayed" in {t.name: t.why for t in replayed.terms}["allocator reserve"]
    # the analytic note about a possible extra logits block is settled by the replay
    assert any("one more fp32 logits block" in n for n in est.notes)
    assert not any("one more fp32 logits block" in n for n in replayed.notes)


def test_a_trace_that_disagrees_with_the_terms_says_so_and_wins():
    """Beyond 5% apart, the output names the disagreement and which number it used."""
    config = qwen_config(2)
    s = EstimateSettings(r=16, batch=2, seq=256, grad_ckpt=False, dropout=0.0)
    est = estimate_memory(architecture_from_config(config), s)
    traced = trace_step(config, s)
    inflated = dataclasses.replace(traced, peak_allocated=int(traced.peak_allocated * 1.2),
                                   peak_reserved=int(traced.peak_reserved * 1.2))
    out = with_trace(est, inflated)
    assert out.reserved_bytes == inflated.peak_reserved
    assert any("disagree" in n and "the headline uses the trace" in n for n in out.notes)
    assert not any("disagree" in n for n in with_trace(est, traced).notes)


@pytest.mark.parametrize("grad_ckpt", [False, True])
def test_the_runners_fused_loss_step_agrees_with_the_analytic_terms(grad_ckpt):
    """The runner's step (trl's fused LM head, no full logits) has no GPU measurement yet; the
    trace and the analytic terms are two independent routes to its allocated peak."""
    import trl.kernels.chunked_logprob as chunked

    before = (chunked._use_triton, chunked._forward_tile, chunked._backward_tile, chunked._addmm_fp32)
    config = qwen_config(2)
    s = EstimateSettings(r=16, batch=2, seq=256, grad_ckpt=grad_ckpt, dropout=0.0, loss_path="trl_fused")
    est = estimate_memory(architecture_from_config(config), s)
    traced = trace_step(config, s)
    assert traced.peak_allocated == pytest.approx(
        est.reserved_bytes - est.breakdown["allocator reserve"], rel=0.05)
    full = trace_step(config, EstimateSettings(**{**s.__dict__, "loss_path": "full_logits"}))
    # 512 tokens x 152k vocabulary: the full logits cost hundreds of MiB the fused head never builds
    assert full.peak_allocated - traced.peak_allocated > 512 * 151936 * 6
    assert before == (chunked._use_triton, chunked._forward_tile, chunked._backward_tile,
                      chunked._addmm_fp32)


def test_checkpointing_shrinks_the_traced_peak():
    config = qwen_config(2)
    off = trace_step(config, SMALL)
    on = trace_step(config, EstimateSettings(**{**SMALL.__dict__, "grad_ckpt": True}))
    assert on.peak_allocated < off.peak_allocated


def test_packing_is_traced_with_its_block_mask():
    """A packed step (positions restarting inside a row) builds the block-diagonal mask, and
    with it the k / v repeated to every head: more memory than the unmasked step."""
    config = qwen_config(2)
    plain = trace_step(config, SMALL)
    packed = trace_step(config, EstimateSettings(**{**SMALL.__dict__, "packing": True}))
    assert packed.peak_allocated > plain.peak_allocated


@pytest.mark.parametrize("change, why", [
    ({"method": "qlora"}, "QLoRA without gradient checkpointing"),
    ({"optimizer": "adamw_8bit"}, "optimizer adamw_8bit"),
    ({"attn": "flash_attention_2"}, "flash_attention_2"),
])
def test_what_cannot_be_traced_is_said(change, why):
    with pytest.raises(TraceUnsupported, match=why):
        check_traceable(EstimateSettings(**{**SMALL.__dict__, **change}))


@pytest.mark.skipif(not (GPU_TRUTH / "archs.json").is_file(), reason="../shared/data/gpu-truth is absent")
def test_the_committed_traces_reproduce():
    """bench/estimate_trace.jsonl holds the traces behind bench/estimate_accuracy.md; the
    smallest point traced again here gives the same bytes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("estimate_accuracy", REPO / "bench" / "estimate_accuracy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    archs, points, _ = bench.load_points(GPU_TRUTH)
    committed = bench.load_traces()
    key = "SmolLM2-135M/lora/r16qkvo/1x512/ck1"
    point = next(p for p in points if bench.point_key(p) == key)
    config = archs["SmolLM2-135M"]
    traced = trace_step(config, bench.settings_for(point, architecture_from_config(config)))
    assert (traced.peak_allocated, traced.peak_reserved) == (
        committed[key]["peak_allocated"], committed[key]["peak_reserved"])


def test_cli_trace_on_the_bundled_model(tmp_path, needs_tiny_model):
    proc = workbench("estimate", "--model", str(TINY_MODEL), "--batch", "2", "--seq", "64",
                     "--no-grad-ckpt", "--loss-path", "full_logits", "--trace", "--json",
                     cwd=tmp_path, check=True)
    out = json.loads(proc.stdout)
    trace = out["trace"]
    assert trace["traced"] and trace["events"] > 100 and trace["peak_reserved"] >= trace["peak_allocated"]
    assert out["breakdown"]["allocator reserve"] == trace["reserve"]
    assert sum(out["breakdown"].values()) == out["peak_bytes"]
    assert proc.stderr == ""            # no library chatter
    text = workbench("estimate", "--model", str(TINY_MODEL), "--batch", "2", "--seq", "64",
                     "--loss-path", "full_logits", "--trace", cwd=tmp_path, check=True).stdout
    assert "Traced: " in text and "replayed" in text
    fused = json.loads(workbench("estimate", "--model", str(TINY_MODEL), "--batch", "2", "--seq",
                                 "64", "--trace", "--json", cwd=tmp_path, check=True).stdout)
    assert fused["trace"]["traced"] and fused["settings"]["loss_path"] == "trl_fused"
    assert fused["breakdown"]["allocator reserve"] == fused["trace"]["reserve"]


def test_cli_trace_of_an_untraceable_step_keeps_the_analytic_estimate(tmp_path, needs_tiny_model):
    proc = workbench("estimate", "--model", str(TINY_MODEL), "--method", "qlora", "--trace",
                     "--no-grad-ckpt", "--json", cwd=tmp_path, check=True)
    out = json.loads(proc.stdout)
    assert out["trace"]["traced"] is False and "QLoRA" in out["trace"]["why"]
    analytic = json.loads(workbench("estimate", "--model", str(TINY_MODEL), "--method", "qlora",
                                    "--no-grad-ckpt", "--json", cwd=tmp_path, check=True).stdout)
    assert out["breakdown"] == analytic["breakdown"] and analytic["trace"] is None
    assert "transient bytes" in out["explain"]["allocator reserve"]


def test_cli_trace_of_a_model_transformers_cannot_build_says_so(tmp_path):
    model = tmp_path / "mystery"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({**tiny_config(), "model_type": "mystery-lm"}))
    # the analytic estimate reads the shape keys of any model type; transformers cannot build it
    proc = workbench("estimate", "--model", str(model), "--trace", "--json", cwd=tmp_path, check=True)
    why = json.loads(proc.stdout)["trace"]["why"]
    assert "the trace failed (ValueError: Unrecognized model identifier: mystery-lm" in why
    assert len(why) < 400 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("model", ["phi-3-mini-4k", "qwen2.5-0.5b"])
@pytest.mark.parametrize("loss_path", ["trl_fused", "full_logits"])
def test_one_more_layer_costs_what_the_analytic_terms_say(model, loss_path):
    """The bytes one decoder layer adds to the allocated peak, analytic vs traced. Found this
    way: with Phi-3's fused qkv_proj and no KV cache (the runner's step), the v that attention
    saves is a view that keeps the whole q/k/v output alive (a term the analytic model lacked:
    -7% on Phi-3 at 4 x 2048)."""
    config = json.loads((REPO / "assets" / "configs" / model / "config.json").read_text())
    # enough tokens that activations, not weights, make most of a layer's bytes
    s = EstimateSettings(r=8, alpha=16, dropout=0.0, targets="all-linear", batch=4, seq=1024,
                         grad_ckpt=False, loss_path=loss_path)
    analytic, traced = [], []
    for layers in (2, 3):
        c = {**config, "num_hidden_layers": layers}
        est = estimate_memory(architecture_from_config(c), s)
        analytic.append(est.reserved_bytes - est.breakdown["allocator reserve"])
        traced.append(trace_step(c, s).peak_allocated)
    assert analytic[1] - analytic[0] == pytest.approx(traced[1] - traced[0], rel=0.02)


@pytest.mark.parametrize("change", [
    {"method": "dora"}, {"method": "dora", "grad_ckpt": True}, {"precision": "fp16"},
    {"precision": "fp32"}, {"optimizer": "adamw_torch_fused"}, {"optimizer": "sgd"},
    {"grad_accum": 4}, {"dropout": 0.1}, {"attn": "eager"},
], ids=lambda change: ",".join(f"{k}={v}" for k, v in change.items()))
def test_every_traceable_setting_traces_and_agrees_with_the_analytic_terms(change):
    config = qwen_config(2)
    s = EstimateSettings(**{**SMALL.__dict__, "loss_path": "trl_fused", **change})
    est = estimate_memory(architecture_from_config(config), s)
    traced = trace_step(config, s)
    assert traced.trainable_params == est.trainable_params
    assert traced.peak_allocated == pytest.approx(
        est.reserved_bytes - est.breakdown["allocator reserve"], rel=0.03)


def test_full_fine_tuning_traces_and_agrees_with_the_analytic_terms():
    config = qwen_config(24)  # all of Qwen2.5-0.5B: weights, gradients and AdamW states dominate
    s = EstimateSettings(method="full", batch=1, seq=128, grad_ckpt=False, dropout=0.0)
    est = estimate_memory(architecture_from_config(config), s)
    traced = trace_step(config, s)
    assert traced.trainable_params == est.trainable_params == 494_032_768
    assert "optimizer" in traced.peak_label and est.phase == "the optimizer steps"
    assert traced.peak_allocated == pytest.approx(
        est.reserved_bytes - est.breakdown["allocator reserve"], rel=0.03)


def test_lora_dropout_costs_a_one_byte_mask_per_adapted_input():
    """The profile default, dropout 0.05: on CUDA torch's fused dropout saves a 1-byte mask of
    each adapted layer's (fp32) input beside the bf16 copy lora_A saves. The CPU's dropout saves
    an fp32 noise tensor instead; traced as is, it made the README example's trace say 20.6 GiB
    where the step allocates 15.1 GiB."""
    config = qwen_config(2)
    arch = architecture_from_config(config)
    base = EstimateSettings(r=8, alpha=16, targets="all-linear", batch=4, seq=1024,
                            grad_ckpt=False, loss_path="trl_fused", dropout=0.0)
    with_dropout = dataclasses.replace(base, dropout=0.05)
    traced = trace_step(config, with_dropout).peak_allocated - trace_step(config, base).peak_allocated
    analytic = [estimate_memory(arch, x) for x in (base, with_dropout)]
    counted = [e.reserved_bytes - e.breakdown["allocator reserve"] for e in analytic]
    inputs = sum(lin.d_in for lin in arch.linears)  # every linear is adapted (all-linear)
    assert counted[1] - counted[0] == 4 * 1024 * inputs * arch.layers
    # layer 0's q/k/v inputs need no gradient (no checkpointing): their masks are not kept
    assert traced == pytest.approx(counted[1] - counted[0], rel=0.15)
    assert traced < 2 * (counted[1] - counted[0])  # not the CPU's 4-byte noise


@pytest.mark.parametrize("grad_ckpt", [False, True])
def test_eager_attention_at_long_sequences_agrees_with_the_trace(grad_ckpt):
    """Eager attention (Gemma-2 in transformers >= 5.21, or attn_implementation = "eager"):
    the saved scores, the fp32 softmax (one CUDA kernel from the bf16 scores) and, in the
    backward, the probabilities' gradient and its fp32 upcast. The analytic terms lean over
    (they count a whole recomputed layer beside the softmax backward) but never under."""
    config = qwen_config(2)
    s = EstimateSettings(r=8, alpha=16, targets="all-linear", batch=2, seq=1024, attn="eager",
                         grad_ckpt=grad_ckpt, loss_path="trl_fused", dropout=0.05)
    est = estimate_memory(architecture_from_config(config), s)
    traced = trace_step(config, s).peak_allocated
    analytic = est.reserved_bytes - est.breakdown["allocator reserve"]
    assert 0.98 * traced <= analytic <= 1.12 * traced


def test_an_older_transformers_traces_gemma2_with_sdpa():
    """The H200 calibration ran transformers 5.17, where Gemma-2 still had an SDPA path: the
    trace follows the release it is asked for, and the analytic terms with it."""
    config = json.loads((REPO / "assets" / "configs" / "gemma-2-9b" / "config.json").read_text())
    config = {**config, "num_hidden_layers": 2}
    s = EstimateSettings(r=8, alpha=16, batch=1, seq=512, grad_ckpt=False, dropout=0.0,
                         loss_path="full_logits")
    then = trace_step(config, s, transformers_version="5.17.0").peak_allocated
    now = trace_step(config, s, transformers_version="5.21.0").peak_allocated
    assert now - then > 2 * 8 * 512 * 512 * 4  # two layers of eager scores (8 heads... at least)
    arch = architecture_from_config(config)
    est = estimate_memory(arch, s, transformers_version="5.17.0")
    assert est.settings.attn == "sdpa"
    assert then == pytest.approx(est.reserved_bytes - est.breakdown["allocator reserve"], rel=0.03)


@pytest.mark.parametrize("precision,dropout,grad_ckpt", [
    ("bf16", 0.0, False), ("bf16", 0.1, True), ("fp32", 0.05, False), ("fp32", 0.0, True)])
def test_the_bundled_model_traces_as_the_analytic_terms_say(precision, dropout, grad_ckpt,
                                                            needs_tiny_model):
    """A 768-token vocabulary: trl's fused head still allocates its 4096 x 32768 tile buffer
    (32 MiB in bf16, most of the demo's step), which the analytic terms once sized by the
    vocabulary (26-39% under)."""
    config = json.loads((TINY_MODEL / "config.json").read_text())
    s = EstimateSettings(r=16, batch=4, seq=128, grad_ckpt=grad_ckpt, dropout=dropout,
                         precision=precision)
    est = estimate_memory(architecture_from_config(config), s)
    traced = trace_step(config, s)
    assert traced.peak_allocated == pytest.approx(
        est.reserved_bytes - est.breakdown["allocator reserve"], rel=0.03)


def test_qlora_with_checkpointing_takes_its_bf16_twins_reserve():
    """bitsandbytes cannot run under FakeTensorMode: with checkpointing the same step with bf16
    LoRA weights is traced, its replayed reserve x QLORA_RESERVE_FACTOR (measured on the 8 H200
    QLoRA points with checkpointing) stands in for QLoRA's; the allocated terms stay analytic."""
    from workbench.estimate.trace import QLORA_RESERVE_FACTOR

    config = qwen_config(2)
    s = EstimateSettings(method="qlora", r=8, batch=2, seq=256, grad_ckpt=True, dropout=0.0)
    est = estimate_memory(architecture_from_config(config), s)
    twin = trace_step(config, s)
    assert twin.stands_in_for == "qlora" and twin.reserve > 0
    assert twin.trainable_params == est.trainable_params
    out = with_trace(est, twin)
    assert out.breakdown["allocator reserve"] == int(QLORA_RESERVE_FACTOR * twin.reserve)
    assert "traced vs the terms" not in out.breakdown  # the twin's allocations are not QLoRA's
    assert (out.reserved_bytes - out.breakdown["allocator reserve"]
            == est.reserved_bytes - est.breakdown["allocator reserve"])
    assert sum(out.breakdown.values()) == out.peak_bytes
    with pytest.raises(TraceUnsupported, match="QLoRA without gradient checkpointing"):
        check_traceable(dataclasses.replace(s, grad_ckpt=False))


def test_a_cancelled_trace_stops_between_ops_and_restores_the_libraries():
    """The Configure screen cancels its trace when the app quits: the worker thread must end
    within an op, not after the whole step (10-20 s on a real model)."""
    import torch.nn.functional as F

    from workbench.estimate.trace import TraceCancelled

    before = (F.dropout, F.softmax, F.scaled_dot_product_attention)
    asked = []

    def cancel() -> bool:
        asked.append(1)
        return len(asked) > 50

    with pytest.raises(TraceCancelled):
        trace_step(qwen_config(2), SMALL, cancel=cancel)
    assert len(asked) == 51
    assert before == (F.dropout, F.softmax, F.scaled_dot_product_attention)
    assert trace_step(qwen_config(2), SMALL).peak_allocated > 0  # and the next trace runs
