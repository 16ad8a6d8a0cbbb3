"""The memory / time / cost model: parameter counts against published sizes and against
transformers itself, each term on small settings, speed, the CLI and its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from workbench.estimate.advice import remedies, verdict
from workbench.estimate.config import from_hf_cache, load_model_config, shipped_config_names
from workbench.estimate.gpus import GPUS, UnknownGpu, find_gpu
from workbench.estimate.memory import GIB, EstimateSettings, estimate, estimate_memory
from workbench.estimate.params import (ConfigError, architecture_from_config, lora_params,
                                       resolve_targets)
from workbench.estimate.speed import DataCount, estimate_time, flops_per_token, plan_steps
from workbench.fmt import fmt_gib, fmt_span

REPO = Path(__file__).resolve().parent.parent

PUBLISHED = {  # model card / paper sizes
    "llama-3.1-8b": 8.03e9, "mistral-7b-v0.3": 7.25e9, "qwen2.5-7b": 7.62e9,
    "qwen2.5-0.5b": 0.494e9, "phi-3-mini-4k": 3.82e9, "gemma-2-9b": 9.24e9,
    "smollm2-360m": 0.362e9, "smollm2-1.7b": 1.71e9, "tinyllama-1.1b": 1.10e9,
}


def arch(name):
    return architecture_from_config(load_model_config(name)[0])


def test_every_listed_architecture_is_shipped():
    assert set(PUBLISHED) <= set(shipped_config_names())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_published_size(name):
    assert arch(name).total_params == pytest.approx(PUBLISHED[name], rel=0.005)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_transformers_exactly(name):
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(REPO / "assets" / "configs" / name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert arch(name).total_params == sum(p.numel() for p in model.parameters())
    # and the linear layers we model are the ones the model has, with the same shapes
    layer = model.model.layers[0]
    for lin in arch(name).linears:
        module = layer.get_submodule(("self_attn." if "proj" in lin.name and lin.name in
                                      {"q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj"}
                                      else "mlp.") + lin.name)
        assert (module.in_features, module.out_features, module.bias is not None) == \
            (lin.d_in, lin.d_out, lin.bias)


@pytest.mark.parametrize("name,targets,r", [("tinyllama-1.1b", ["q_proj", "v_proj"], 8),
                                            ("phi-3-mini-4k", "all-linear", 16),
                                            ("qwen2.5-0.5b", "all-linear", 64)])
def test_lora_trainable_count_matches_peft(name, targets, r):
    torch = pytest.importorskip("torch")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(REPO / "assets" / "configs" / name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
        peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r,
                                                      target_modules=targets, task_type="CAUSAL_LM"))
    trainable, _ = peft_model.get_nb_trainable_parameters()
    assert lora_params(arch(name), targets, r) == trainable


def test_phi3_fuses_and_gemma2_has_wide_heads():
    phi = arch("phi-3-mini-4k")
    assert phi.linear_names == ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
    assert phi.linear("gate_up_proj").d_out == 2 * phi.intermediate
    gemma = arch("gemma-2-9b")
    assert gemma.head_dim == 256 and gemma.linear("q_proj").d_out == 4096 != gemma.hidden
    assert gemma.tied_embeddings and gemma.lm_head_params == 0
    assert gemma.norms_per_layer == 4


def test_unknown_target_module_says_what_exists():
    with pytest.raises(ConfigError, match="qkv_proj"):
        resolve_targets(arch("phi-3-mini-4k"), ["q_proj"])
    with pytest.raises(ConfigError, match="did you mean 'v_proj'"):
        resolve_targets(arch("llama-3.1-8b"), ["vproj"])


# ---- the terms --------------------------------------------------------------------------

LLAMA = None


def llama():
    global LLAMA
    LLAMA = LLAMA or arch("llama-3.1-8b")
    return LLAMA


def test_lora_frozen_weights_are_bf16_params():
    e = estimate(llama(), method="lora")
    assert e.breakdown["frozen weights"] == llama().total_params * 2
    assert e.breakdown["trainable params"] == e.trainable_params * 4  # fp32 adapters
    assert e.breakdown["optimizer states"] == e.trainable_params * 8  # AdamW m and v


def test_qlora_weights_are_nf4_plus_fp32_upcasts():
    a = llama()
    e = estimate(a, method="qlora")
    quantized = a.quantizable_params
    rest = a.total_params - quantized
    assert e.breakdown["frozen weights"] == quantized // 2 + rest * 4
    # double quantization: ~1 byte per 64 weights (not 4: that would be single quant)
    assert quantized / 64 < e.breakdown["quantization constants"] < quantized / 64 * 1.05


def test_tied_embeddings_count_once():
    q = arch("qwen2.5-0.5b")
    assert q.tied_embeddings and q.total_params == pytest.approx(0.494e9, rel=0.005)
    assert q.embedding_params == 151936 * 896 and q.lm_head_params == 0


def test_gradient_checkpointing_saves_activation_memory():
    on = estimate(llama(), grad_ckpt=True, batch=4, seq=2048)
    off = estimate(llama(), grad_ckpt=False, batch=4, seq=2048)
    assert on.breakdown["saved activations"] < off.breakdown["saved activations"] / 5
    assert on.peak_bytes < off.peak_bytes


def test_full_logits_cost_more_than_trls_fused_head():
    fused = estimate(arch("qwen2.5-7b"), grad_ckpt=True, batch=4, seq=2048)
    full = estimate(arch("qwen2.5-7b"), grad_ckpt=True, batch=4, seq=2048, loss_path="full_logits")
    # 8192 tokens x 152k vocab x 12 bytes ~ 14.9 GB of logits that trl never builds
    assert full.peak_bytes - fused.peak_bytes > 10 * GIB
    assert full.breakdown["logits and loss"] >= 8192 * 152064 * 12


def test_the_possible_extra_logits_block_is_said_where_it_can_happen():
    """bench/allocator_replay.md: without checkpointing and with full logits the allocator may
    keep one more fp32 logits block reserved (Qwen2.5-0.5B r64 all-linear at 4 x 2048: +4.6 GiB
    measured over its neighbour). The estimate says so with the size; not where it cannot."""
    a = arch("qwen2.5-0.5b")
    note = [n for n in estimate(a, grad_ckpt=False, batch=4, seq=2048, loss_path="full_logits").notes
            if "one more fp32 logits block" in n]
    assert len(note) == 1 and fmt_gib(4 * 8192 * a.vocab) in note[0]
    for quiet in (estimate(a, grad_ckpt=True, batch=4, seq=2048, loss_path="full_logits"),
                  estimate(a, grad_ckpt=False, batch=4, seq=2048)):  # trl's fused head
        assert not any("one more fp32 logits block" in n for n in quiet.notes)


def test_activations_scale_with_tokens_and_more_targets_cost_more():
    small = estimate(llama(), grad_ckpt=False, batch=1, seq=512)
    big = estimate(llama(), grad_ckpt=False, batch=2, seq=512)
    assert big.breakdown["saved activations"] == pytest.approx(
        2 * small.breakdown["saved activations"], rel=0.01)
    attn = estimate(llama(), grad_ckpt=False, targets=("q_proj", "v_proj"))
    every = estimate(llama(), grad_ckpt=False, targets="all-linear")
    assert every.trainable_params > attn.trainable_params
    assert every.breakdown["saved activations"] > attn.breakdown["saved activations"]


def test_eight_bit_and_sgd_optimizers_shrink_states():
    adam = estimate(llama(), method="full", grad_ckpt=True, batch=1, seq=512)
    adam8 = estimate(llama(), method="full", grad_ckpt=True, batch=1, seq=512, optimizer="adamw_8bit")
    sgd = estimate(llama(), method="full", grad_ckpt=True, batch=1, seq=512, optimizer="sgd")
    assert adam.breakdown["optimizer states"] > adam8.breakdown["optimizer states"] > 0
    assert sgd.breakdown["optimizer states"] == 0


def test_breakdown_adds_up_and_explains_itself():
    e = estimate(arch("gemma-2-9b"), method="qlora", r=64, targets="all-linear")
    assert sum(e.breakdown.values()) == e.peak_bytes
    assert e.reserved_bytes == e.peak_bytes - e.breakdown["CUDA context"]
    text = e.explain()
    for name in e.breakdown:
        assert name in text
    data = json.loads(e.to_json())
    assert data["peak_bytes"] == e.peak_bytes and data["trainable_params"] == e.trainable_params


def test_settings_are_checked_for_people():
    with pytest.raises(ConfigError, match="optimizer 'adam' is not one of"):
        estimate(llama(), optimizer="adam")
    with pytest.raises(ConfigError, match="batch must be at least 1"):
        estimate(llama(), batch=0)


def test_estimate_is_fast():
    a, s = llama(), EstimateSettings(targets="all-linear", method="qlora")
    estimate_memory(a, s)
    n = 200
    start = time.perf_counter()
    for _ in range(n):
        estimate_memory(a, s)
    assert (time.perf_counter() - start) / n < 0.005


def test_estimate_modules_import_no_torch_transformers_or_textual():
    code = ("import sys, workbench.estimate.memory, workbench.estimate.cli, "
            "workbench.estimate.speed, workbench.estimate.advice, workbench.estimate.gpu, "
            "workbench.estimate.config; "
            "bad = [m for m in ('torch', 'transformers', 'textual', 'peft', 'trl') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- GPUs, verdict, remedies, time ----------------------------------------------------

@pytest.mark.parametrize("nvml_name,key", [("NVIDIA H100 80GB HBM3", "h100"),
                                           ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
                                           ("NVIDIA A100 80GB PCIe", "a100-80gb"),
                                           ("NVIDIA GeForce RTX 4090", "rtx4090"),
                                           ("Tesla T4", "t4"), ("NVIDIA H200", "h200"),
                                           ("NVIDIA L40S", "l40s"), ("NVIDIA A10G", "a10g"),
                                           ("l4", "l4")])
def test_gpu_names_from_nvml_match_the_table(nvml_name, key):
    assert find_gpu(nvml_name).key == key


def test_unknown_gpu_suggests():
    with pytest.raises(UnknownGpu, match="did you mean 'h100'"):
        find_gpu("h10")


def test_verdict_thresholds():
    assert verdict(50, 100) == "fits"
    assert verdict(95, 100) == "tight"
    assert verdict(101, 100) == "does not fit"


def test_remedies_are_reestimated_and_fitting_ones_come_first():
    s = EstimateSettings(grad_ckpt=False, batch=8, seq=2048, targets="all-linear")
    rtx = find_gpu("rtx4090")
    found = remedies(llama(), s, rtx.memory_bytes)
    changes = [r.change for r in found]
    assert "turn on gradient checkpointing" in changes
    assert any(c.startswith("batch 4 with gradient accumulation 2") for c in changes)
    assert any("QLoRA" in c for c in changes) and any("8-bit" in c for c in changes)
    fits = [r.fits for r in found]
    assert fits == sorted(fits, reverse=True)
    for r in found:
        assert r.estimate.peak_bytes == estimate_memory(llama(), r.settings).peak_bytes


def test_flops_model_lora_vs_full_and_checkpointing():
    s = EstimateSettings(seq=2048, grad_ckpt=False, targets="all-linear")
    n = llama().total_params - llama().embedding_params
    lora = flops_per_token(llama(), s)
    full = flops_per_token(llama(), EstimateSettings(method="full", seq=2048, grad_ckpt=False))
    assert 4 * n < lora < 4.5 * n   # forward 2N + backward 2N (no weight gradients) + attention
    assert 6 * n < full < 6.5 * n
    ckpt = flops_per_token(llama(), EstimateSettings(seq=2048, grad_ckpt=True, targets="all-linear"))
    assert ckpt == pytest.approx(lora * 1.5, rel=0.02)


def test_time_and_cost_from_dataset_tokens():
    """A bare token total (--dataset-tokens) has no row count: rows are taken to fill batch x seq."""
    s = EstimateSettings(batch=4, seq=1024, grad_accum=2)
    h100 = find_gpu("h100")
    t = estimate_time(llama(), s, h100, data=DataCount(tokens=10 * 8192), epochs=2)
    assert t.steps == 20 and t.tokens_total == 2 * 10 * 8192
    assert t.usd == pytest.approx(t.seconds / 3600 * h100.usd_per_hour)
    assert t.seconds == pytest.approx(20 * t.step_seconds)
    assert estimate_time(llama(), s, h100, usd_per_hour=10.0).usd_per_hour == 10.0


def test_steps_are_counted_from_rows_as_transformers_counts_them():
    """540 rows, batch 4, grad_accum 4, 8 epochs, padded: 135 micro-batches an epoch, 34
    optimizer steps an epoch (the last one short), 272 steps: what the run's status shows. A
    count from tokens / (batch x seq) said 64."""
    from workbench.train.packing import pack

    s = EstimateSettings(batch=4, seq=128, grad_accum=4)
    data = DataCount(tokens=540 * 27, rows=540, lengths=tuple(20 + i % 15 for i in range(540)))
    plan = plan_steps(s, data, epochs=8)
    assert plan.steps == 272 and plan.micro_batches == 135 * 8
    # padding: each micro-batch of 4 random rows costs its longest row, never more than seq
    assert 27 < plan.row_tokens <= 34
    assert plan_steps(s, data, epochs=8, max_steps=20).steps == 20
    # packing: the runner's best-fit packs of up to seq tokens, batch packs a micro-batch
    packed = plan_steps(replace(s, packing=True), data, epochs=1)
    packs = len(pack([20 + i % 15 for i in range(540)], 128))
    assert packed.micro_batches == -(-packs // 4) and 120 < packed.row_tokens <= 128
    assert "540 rows packed into" in packed.why
    tokens_only = plan_steps(replace(s, packing=True), DataCount(tokens=540 * 27), epochs=1)
    assert tokens_only.micro_batches == -(-540 * 27 // (4 * 128)) and tokens_only.row_tokens == 128
    # on 4 GPUs each optimizer step takes 4 x the rows: a quarter of the steps
    assert plan_steps(s, data, epochs=8, world=4).steps == 9 * 8


def test_padding_makes_a_micro_batch_as_long_as_its_longest_row():
    data = DataCount(tokens=0, rows=4, lengths=(10, 10, 10, 100))
    assert data.padded_row_tokens(batch=4, seq=512) == 100
    assert data.padded_row_tokens(batch=4, seq=64) == 64  # truncated at max_seq_len
    assert data.padded_row_tokens(batch=1, seq=512) == 32.5


def test_without_a_data_count_the_run_is_not_priced():
    """Not "$0.01 for Llama 8B": one step's price is not the run's."""
    t = estimate_time(llama(), EstimateSettings(), find_gpu("h100"))
    assert t.seconds is None and t.usd is None and t.steps is None
    assert t.step_seconds > 0 and "not counted" in t.plan
    fixed = estimate_time(llama(), EstimateSettings(), find_gpu("h100"), max_steps=10)
    assert fixed.steps == 10 and fixed.seconds == pytest.approx(10 * fixed.step_seconds)


# ---- config loading and CLI ------------------------------------------------------------

def test_config_from_the_hf_cache_layout(tmp_path, monkeypatch):
    snap = tmp_path / "models--org--tiny" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "models--org--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert from_hf_cache("org/tiny") == snap / "config.json"
    assert load_model_config("org/tiny")[0] == {"model_type": "llama"}
    with pytest.raises(ConfigError, match="not in the Hugging Face cache"):
        load_model_config("org/absent")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "workbench.estimate.cli", *args],
                          capture_output=True, text=True, cwd=REPO)


def test_cli_json_schema():
    proc = run_cli("--model", "qwen2.5-7b", "--method", "qlora", "--r", "16", "--alpha", "32",
                   "--dropout", "0.05", "--targets", "all-linear", "--batch", "2", "--seq", "1024",
                   "--grad-ckpt", "--optimizer", "adamw_torch", "--precision", "bf16",
                   "--gpu", "a10g", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    for key in ("peak_bytes", "reserved_bytes", "breakdown", "trainable_params", "total_params",
                "fits", "verdict", "remedies", "time", "cost", "fits_on", "tokens_per_step"):
        assert key in data
    assert sum(data["breakdown"].values()) == data["peak_bytes"]
    assert data["gpu"]["key"] == "a10g" and isinstance(data["fits"], bool)
    assert data["settings"]["method"] == "qlora" and data["settings"]["targets"] == "all-linear"
    assert set(data["cost"]) == {g.key for g in GPUS}


def test_cli_with_a_profile_and_overrides(tmp_path):
    profile = tmp_path / "p.toml"
    cfg = REPO / "assets" / "configs" / "tinyllama-1.1b"
    profile.write_text(f'[model]\nname_or_path = "{cfg}"\n[data]\ntrain = "x.jsonl"\n'
                       f'[lora]\nmethod = "qlora"\nr = 8\n[train]\nbatch_size = 2\n'
                       f'max_seq_len = 512\n')
    data = json.loads(run_cli(str(profile), "--gpu", "t4", "--r", "32", "--json").stdout)
    assert data["settings"]["r"] == 32 and data["settings"]["batch"] == 2
    assert data["settings"]["method"] == "qlora" and data["verdict"] == "fits"


@pytest.mark.parametrize("args,message", [
    (["--model", "llama-3.1-8b", "--gpu", "h10"], "did you mean 'h100'"),
    (["--model", "lama-3.1-8b"], "did you mean 'llama-3.1-8b'"),
    (["--model", "/nonexistent-dir/"], "no model"),
    ([], "give a PROFILE or --model"),
])
def test_cli_errors_are_for_people(args, message, tmp_path):
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_cli_folder_without_config(tmp_path):
    proc = run_cli("--model", str(tmp_path))
    assert proc.returncode == 2 and "has no config.json" in proc.stderr


def test_cli_text_output_names_every_term():
    proc = run_cli("--model", "smollm2-360m", "--gpu", "t4")
    assert proc.returncode == 0, proc.stderr
    for word in ("frozen weights", "saved activations", "allocator reserve", "CUDA context",
                 "fits", "GPU"):
        assert word in proc.stdout


def test_bench_dry_run_writes_tables(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "estimate_memory_gpu.py"),
                           "--dry-run"], capture_output=True, text=True, cwd=REPO,
                          env={**__import__("os").environ, "OUT": str(tmp_path)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "estimate_memory_gpu.json").read_text())["points"]
    # LoRA, trl's fused loss and QLoRA (bitsandbytes quantizes on the CPU too) all ran.
    assert {(r["method"], r["loss_path"]) for r in rows} == {
        ("lora", "full_logits"), ("lora", "trl_fused"), ("qlora", "trl_fused")}
    assert all(r["status"] == "ran (dry run: not measured)" and r["estimated_bytes"] > 0
               for r in rows), rows
    assert "| model |" in (tmp_path / "estimate_memory_gpu.md").read_text()


def test_bench_plans_enough_points():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import estimate_memory_gpu as bench
    finally:
        sys.path.pop(0)
    points = bench.plan_points()
    assert len(points) >= 60
    assert len({p.model for p in points}) >= 8
    assert {p.method for p in points} == {"lora", "qlora"}
    assert {p.grad_ckpt for p in points} == {True, False}
    assert min(p.r for p in points) == 8 and max(p.r for p in points) == 64
    assert min(p.seq for p in points) == 256 and max(p.seq for p in points) == 4096
    assert min(p.batch for p in points) == 1 and max(p.batch for p in points) == 8
    assert any(p.targets == "all-linear" for p in points)
    assert any(p.targets != "all-linear" for p in points)
    # the runner's-step points carry their committed `--trace` estimate for the GPU run (LoRA,
    # and QLoRA with checkpointing through its bf16 twin)
    fused = [p for p in points if p.loss_path == "trl_fused" and (p.method == "lora" or p.grad_ckpt)]
    assert {p.method for p in fused} == {"lora", "qlora"}
    assert fused and all(p.traced_bytes for p in fused), "run bench/estimate_memory_gpu.py --trace-cpu"
    assert set(bench.traced_estimates()) == {p.key for p in fused}
    assert all(0.7 < p.traced_bytes / p.estimated_bytes < 1.3 for p in fused)


def test_profile_estimate_counts_the_rendered_dataset():
    from workbench.estimate.cli import count_dataset_tokens
    from workbench.profile import load_profile

    profile = load_profile("demo")
    data, how = count_dataset_tokens(profile)
    assert "540 training rows" in how  # the demo's 600 rows less its 10% validation hold-out
    assert 10_000 < data.tokens < 20_000  # short phrases: about 26 tokens a row
    assert data.rows == 540 and len(data.lengths) == 540 and sum(data.lengths) == data.tokens
    missing = load_profile("demo", ["data.train=nowhere.jsonl"])
    data, how = count_dataset_tokens(missing)
    assert data is None and how.startswith("not counted")


def test_which_attention_a_model_runs_follows_the_transformers_release():
    """Gemma-2 lost its SDPA path in transformers 5.21 (attention softcapping); before, it ran
    SDPA, which is what the H200 calibration (transformers 5.17) measured."""
    from workbench.estimate.memory import runs_eager

    assert runs_eager("gemma2", "5.21.0") and runs_eager("gemma2", "5.25.0.dev0")
    assert not runs_eager("gemma2", "5.17.0") and not runs_eager("llama", "5.25.0")
    gemma = json.loads((REPO / "assets" / "configs" / "gemma-2-9b" / "config.json").read_text())
    s = EstimateSettings(batch=4, seq=2048, grad_ckpt=False)
    old = estimate(gemma, s, transformers_version="5.17.0")
    new = estimate(gemma, s, transformers_version="5.21.0")
    assert old.settings.attn == "sdpa" and new.settings.attn == "eager"
    assert "sdpa attention" in old.explain() and "eager attention" in new.explain()
    # eager keeps 16 heads x 2048 x 2048 scores per layer and row: tens of GiB more here
    assert new.peak_bytes - old.peak_bytes > 42 * 4 * 16 * 2048 * 2048 * 6
    flash = next(n for n in new.notes if "flash_attention_2" in n)
    saved = estimate(gemma, replace(s, attn="flash_attention_2")).peak_bytes
    assert fmt_gib(new.peak_bytes - saved) in flash and "pip install flash-attn" in flash


def test_qlora_backward_holds_one_dequantized_weight():
    """bitsandbytes' MatMul4Bit backward dequantizes its 4-bit weight to bf16 for the input
    gradient: at the layers' backward the largest 4-bit linear's bf16 copy is alive."""
    arch = llama()
    s = EstimateSettings(method="qlora", batch=1, seq=512, grad_ckpt=True, dropout=0.0)
    qlora, lora = estimate_memory(arch, s), estimate_memory(arch, replace(s, method="lora"))
    largest = max(lin.d_in * lin.d_out for lin in arch.linears)
    assert qlora.phase == lora.phase == "the layers' backward runs"
    assert "dequantized to bf16" in {t.name: t.why for t in qlora.terms}["backward gradient buffers"]
    assert "dequantized" not in {t.name: t.why for t in lora.terms}["backward gradient buffers"]
    assert qlora.breakdown["backward gradient buffers"] >= 2 * largest == 2 * 14336 * 4096


def test_the_trainable_share_counts_the_adapters_in_all_params_as_peft_does():
    """The demo: 86,016 adapter parameters on a 1,771,200-parameter model are 4.63% of the
    1,857,216 parameters peft reports, not 4.86% of the frozen ones."""
    config = json.loads((REPO / "assets" / "tiny-model" / "config.json").read_text())
    est = estimate(config, EstimateSettings(r=16))
    assert est.all_params == est.total_params + est.trainable_params
    assert est.trainable_share == pytest.approx(est.trainable_params / est.all_params)
    assert f"of {est.all_params:,}" in est.explain()
    full = estimate(config, EstimateSettings(method="full"))
    assert full.all_params == full.total_params and full.trainable_share == 1.0
    assert fmt_span(0.4) == "0.4 s" and fmt_span(45) == "45 s"
