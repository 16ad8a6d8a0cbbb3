"""The memory and time estimate knows GRPO (train.method = "grpo", trl 1.16's GRPOTrainer with
LoRA): the generation of the generation batch (KV cache, logits), the training micro-batches
through the fused LM head over the completions, the reference pass when beta > 0, colocated
vLLM's share of the GPU (workbench/estimate/memory.py `_generation_peak`, `_grpo_settings`;
speed.py `generation_seconds`; trace_grpo.py, the step traced on the CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import pytest
from conftest import REPO, TINY_MODEL, workbench

from workbench.estimate.gpus import find_gpu
from workbench.estimate.memory import (GENERATION_MOMENT, OLD_LOGPS_MOMENT, REFERENCE_MOMENT,
                                       TRAINING_MOMENTS, EstimateSettings, estimate_memory)
from workbench.estimate.params import architecture_from_config
from workbench.estimate.speed import estimate_time, generation_seconds, step_seconds

TOLERANCE = 0.05  # traced vs analytic allocated peak, as the SFT and preference trace tests allow
GIB = 1024 ** 3


def config(name: str, layers: int | None = None) -> dict:
    path = TINY_MODEL if name == "tiny" else REPO / "assets" / "configs" / name
    c = json.loads((path / "config.json").read_text())
    return {**c, "num_hidden_layers": layers} if layers else c


def arch(name: str, layers: int | None = None):
    return architecture_from_config(config(name, layers))


def allocated(est) -> int:
    return est.reserved_bytes - est.breakdown["allocator reserve"]


GRPO = EstimateSettings(r=16, batch=8, grad_accum=1, train_method="grpo", num_generations=8,
                        max_prompt_len=512, max_completion_len=256)


# ---- analytic ------------------------------------------------------------------------------

def test_grpo_is_a_train_method_and_its_rows_are_prompt_plus_completion():
    est = estimate_memory(arch("qwen2.5-0.5b"), replace(GRPO, seq=99))
    assert est.to_dict()["method"] == "grpo" and est.settings.seq == 512 + 256
    assert est.tokens_per_step == 8 * 768  # batch completions x (prompt + completion)
    assert "GRPOTrainer" in est.to_dict()["step_modeled"]
    assert "(GRPO, lora, r=16, batch 8 completions x (512 prompt + 256 completion" in est.explain()
    with pytest.raises(Exception, match="packing is for supervised fine-tuning"):
        replace(GRPO, packing=True).check()
    with pytest.raises(Exception, match="generation 'sglang' is not one of"):
        replace(GRPO, generation="sglang").check()
    # TRL refuses a generation batch that is not whole groups: said, still estimated
    odd = estimate_memory(arch("qwen2.5-0.5b"), replace(GRPO, batch=6))
    assert any("multiple of num_generations" in n for n in odd.notes)


def test_the_peak_is_the_larger_of_generation_and_training_and_the_breakdown_says_so():
    """Llama-3.1-8B: at grad_accum 1 the training micro-batch holds the peak; at grad_accum 8
    the generation batch is 64 sequences, whose prefill and KV cache hold it. The phase that
    is not the peak is named at 0 bytes, with its own peak in the why."""
    a = arch("llama-3.1-8b")
    small = estimate_memory(a, GRPO)
    big = estimate_memory(a, replace(GRPO, grad_accum=8))
    assert small.phase in TRAINING_MOMENTS and big.phase == GENERATION_MOMENT
    assert small.breakdown["generation KV cache"] == 0
    why = {t.name: t.why for t in small.terms}["generation KV cache"]
    assert why.startswith("not at the peak: the generation phase peaks at")
    assert big.breakdown["generation KV cache"] > 0 and big.breakdown["generation activations"] > 0
    assert big.breakdown["training phase"] == 0 and "saved activations" not in big.breakdown
    # generation and training do not coexist: the peak is their max, not their sum
    for est in (small, big):
        gen, train = est.moments[GENERATION_MOMENT], max(est.moments[m] for m in TRAINING_MOMENTS)
        assert max(est.moments.values()) == max(gen, train)
        assert any(n.startswith("GRPO generates, then trains") for n in est.notes)
    # the training moments do not depend on the generation batch
    assert all(small.moments[m] == big.moments[m] for m in TRAINING_MOMENTS)


def test_the_kv_cache_term_is_the_generation_batch_times_the_cache_per_token():
    """A decoding-bound point (short prompts, long completions): the KV cache at the last
    decoding step is N x (P + C - 1) x layers x 2 (keys, values) x kv_dim x 2 bytes (bf16, no
    autocast); fp32 for QLoRA (fp32 residual stream, Linear4bit returns its input's dtype)."""
    a = arch("llama-3.1-8b")
    s = replace(GRPO, batch=2, grad_accum=16, max_prompt_len=64, max_completion_len=2048)
    est = estimate_memory(a, s)
    n = 2 * 16
    assert est.phase == GENERATION_MOMENT
    assert est.breakdown["generation KV cache"] == n * (64 + 2048 - 1) * a.layers * 2 * a.kv_dim * 2
    q = estimate_memory(a, replace(s, method="qlora"))
    assert q.breakdown["generation KV cache"] == 2 * est.breakdown["generation KV cache"]
    # longer completions, more cache; more completions a step, more cache
    longer = estimate_memory(a, replace(s, max_completion_len=4096))
    wider = estimate_memory(a, replace(s, grad_accum=32))
    assert longer.breakdown["generation KV cache"] > est.breakdown["generation KV cache"]
    assert wider.breakdown["generation KV cache"] == pytest.approx(
        2 * est.breakdown["generation KV cache"])


def test_the_fused_head_scores_the_completions_only():
    """logits_to_keep = max_completion_len: the fused head's kept hidden states and hidden
    gradient scale with the completion's tokens, not the prompt's."""
    a = arch("llama-3.1-8b")
    s = replace(GRPO, max_prompt_len=3072, max_completion_len=1024, grad_ckpt=False)
    grpo = estimate_memory(a, s)
    sft = estimate_memory(a, EstimateSettings(r=16, batch=8, seq=4096, grad_ckpt=False, dropout=0.05))
    loss = "the loss is computed and its backward starts"
    # the same rows, so the same saved activations; the head keeps, per scored position, its
    # bf16 hidden state, 10 fp32 statistics, then an fp32 and a bf16 hidden gradient
    per_scored = 2 * a.hidden + 40 + 4 * a.hidden + 2 * a.hidden
    assert sft.moments[loss] - grpo.moments[loss] == 8 * (4095 - 1024) * per_scored


def test_beta_adds_the_reference_pass_before_training():
    """With beta > 0 the reference (the adapter disabled, no grad) scores the samples before any
    training forward: nothing of the policy is alive beside it, so it is below the training."""
    a = arch("qwen2.5-0.5b")
    plain = estimate_memory(a, GRPO)
    kl = estimate_memory(a, replace(GRPO, beta=0.04))
    assert REFERENCE_MOMENT not in plain.moments and "reference pass (no grad)" not in plain.breakdown
    assert REFERENCE_MOMENT in kl.moments and kl.breakdown["reference pass (no grad)"] == 0
    assert kl.moments[REFERENCE_MOMENT] < max(kl.moments[m] for m in TRAINING_MOMENTS)
    assert kl.peak_bytes == plain.peak_bytes
    assert ", beta 0.04" in kl.explain()


def test_colocated_vllm_takes_its_share_of_the_gpu_and_the_generation_moves_there():
    a = arch("llama-3.1-8b")
    h100 = find_gpu("h100")
    s = replace(GRPO, generation="vllm", grad_accum=8)
    unknown = estimate_memory(a, s)
    on = estimate_memory(a, replace(s, gpu_memory_bytes=h100.memory_bytes))
    assert GENERATION_MOMENT not in on.moments and OLD_LOGPS_MOMENT in on.moments
    assert "generation KV cache" not in on.breakdown
    assert on.breakdown["vLLM (colocated)"] == int(0.3 * h100.memory_bytes)
    assert unknown.breakdown["vLLM (colocated)"] == 0
    assert any("0.3 of the GPU's total memory on top of this estimate" in n for n in unknown.notes)
    assert on.peak_bytes == unknown.peak_bytes + on.breakdown["vLLM (colocated)"]
    assert "colocated vLLM" in on.to_dict()["step_modeled"]
    # a T4's 30% cannot hold Llama-3.1-8B's weights: said
    t4 = estimate_memory(a, replace(s, gpu_memory_bytes=find_gpu("t4").memory_bytes))
    assert any("vLLM will refuse to start" in n for n in t4.notes)


def test_lora_dropout_stays_on_in_grpo():
    """GRPOConfig defaults to disable_dropout=False (the preference configs to True)."""
    a = arch("qwen2.5-0.5b")
    s = replace(GRPO, grad_ckpt=False, dropout=0.05)
    assert (estimate_memory(a, s).breakdown["saved activations"]
            > estimate_memory(a, replace(s, dropout=0.0)).breakdown["saved activations"])
    assert not any("disable_dropout" in n for n in estimate_memory(a, s).notes)


def test_settings_come_from_the_profile_and_old_profiles_still_read():
    from workbench.profile import load_profile

    profile = load_profile("grpo-demo", ["grpo.num_generations=8", "grpo.max_completion_len=32",
                                         "grpo.beta=0.04", "grpo.generation=vllm",
                                         "train.device=cuda"])
    s = EstimateSettings.from_profile(profile)
    assert (s.train_method, s.num_generations, s.max_prompt_len, s.max_completion_len) == (
        "grpo", 8, 64, 32)
    assert (s.beta, s.generation, s.seq) == (0.04, "vllm", 96)
    old = SimpleNamespace(train=profile.train, lora=profile.lora, model=profile.model)  # no [grpo]
    s = EstimateSettings.from_profile(old)
    assert (s.num_generations, s.max_completion_len, s.seq) == (8, 256, 512 + 256)
    assert estimate_memory(arch("tiny"), s).peak_bytes > 0


def test_a_halved_completion_is_a_remedy_and_a_halved_seq_is_not():
    from workbench.estimate.advice import remedies

    a = arch("llama-3.1-8b")
    s = replace(GRPO, grad_accum=8, max_completion_len=1024)
    changes = {r.change: r for r in remedies(a, s, 16 * GIB)}
    assert "grpo.max_completion_len 512" in changes and "grpo.max_prompt_len 256" in changes
    assert changes["grpo.max_completion_len 512"].estimate.peak_bytes < estimate_memory(a, s).peak_bytes
    assert not any(c.startswith("sequence length") for c in changes)


# ---- time ----------------------------------------------------------------------------------

def test_the_step_time_counts_the_generation_once_a_step():
    a, gpu = arch("qwen2.5-0.5b"), find_gpu("h100")
    s = replace(GRPO, grad_accum=4)
    gen = generation_seconds(a, s, gpu)
    assert gen > 0 and generation_seconds(a, replace(s, train_method="sft"), gpu) == 0
    # decoding is the bulk: twice the completion, about twice the time
    longer = generation_seconds(a, replace(s, max_completion_len=512), gpu)
    assert 1.7 * gen < longer < 2.2 * gen
    # vLLM has no eager per-layer overhead per decoding step
    assert generation_seconds(a, replace(s, generation="vllm"), gpu) < gen / 5
    t = estimate_time(a, s, gpu, max_steps=10)
    micro = step_seconds(a, replace(s, seq=768), gpu)[0]
    assert t.generation_seconds == pytest.approx(gen)
    assert t.step_seconds == pytest.approx(4 * micro + gen)
    assert t.seconds == pytest.approx(10 * t.step_seconds)
    # beta > 0: a no-grad reference forward of the micro-batch's rows as well
    assert step_seconds(a, replace(s, seq=768, beta=0.04), gpu)[0] > micro


# ---- the command ---------------------------------------------------------------------------

def test_the_command_estimates_a_grpo_profile_and_counts_its_prompts(tmp_path, needs_tiny_model):
    out = json.loads(workbench("estimate", "grpo-demo", "--gpu", "t4", "--json",
                               cwd=tmp_path, check=True).stdout)
    assert out["method"] == "grpo" and out["settings"]["max_completion_len"] == 16
    assert "generation KV cache" in out["breakdown"]
    assert "as GRPO trains on them" in out["dataset_tokens_source"]
    assert out["dataset_rows"] % 4 == 0  # completions: num_generations a prompt
    assert out["time"]["generation_seconds"] > 0
    text = workbench("estimate", "grpo-demo", "--gpu", "t4", "--no-count-data", cwd=tmp_path,
                     check=True).stdout
    assert "(GRPO, lora, r=16, batch 8 completions x (64 prompt + 16 completion tokens)" in text
    assert "of which generation:" in text


def test_the_command_takes_grpo_flags(tmp_path):
    out = json.loads(workbench("estimate", "--model", "qwen2.5-0.5b", "--train-method", "grpo",
                               "--num-generations", "4", "--max-completion-len", "64",
                               "--max-prompt-len", "128", "--beta", "0.04", "--batch", "8",
                               "--grad-accum", "2", "--json", cwd=tmp_path, check=True).stdout)
    s = out["settings"]
    assert (s["num_generations"], s["max_completion_len"], s["seq"], s["beta"]) == (4, 64, 192, 0.04)
    assert out["tokens_per_step"] == 8 * 192 * 2 and "reference pass (no grad)" in out["breakdown"]
    vllm = json.loads(workbench("estimate", "--model", "qwen2.5-0.5b", "--train-method", "grpo",
                                "--generation", "vllm", "--gpu", "h100", "--json", cwd=tmp_path,
                                check=True).stdout)
    share = vllm["breakdown"]["vLLM (colocated)"]
    assert share == int(0.3 * vllm["gpu"]["memory_bytes"])
    # each table GPU is judged with vLLM's share of that GPU: 30% of a T4 holds a 0.5B model
    assert vllm["fits_on"]["t4"] and vllm["fits_on"]["h100"]


# ---- traced vs analytic --------------------------------------------------------------------

def _phase_peaks(events) -> dict[str, int]:
    """The allocated peak of the second step's generation, reference and training, and what was
    allocated when its generation began (the static bytes then)."""
    from workbench.estimate.trace import CUBLAS_WORKSPACE_BYTES

    live, total, peaks = {}, 0, {"generate": 0, "reference": 0, "train": 0}
    before = None
    for ev in events:
        if ev[0] == "a":
            label = ev[3].split(":")[0]
            if label.startswith("step1.0.forward.generate") and before is None:
                before = total
            live[ev[1]] = ev[2]
            total += ev[2]
            if label.startswith("step1"):
                kind = ("generate" if ".generate" in label else
                        "reference" if ".reference" in label else "train")
                peaks[kind] = max(peaks[kind], total)
        elif ev[0] == "f" and ev[1] in live:
            total -= live.pop(ev[1])
    extra = 2 * CUBLAS_WORKSPACE_BYTES
    return {**{k: v + extra if v else 0 for k, v in peaks.items()}, "static": before + extra}


@pytest.mark.parametrize("model, layers, settings", [
    # the prefill holds the generation's peak: 16 prompts of 128 tokens, LoRA on every linear
    ("qwen2.5-0.5b", 2, dict(batch=4, grad_accum=4, max_prompt_len=128, max_completion_len=16,
                             dropout=0.05, targets="all-linear")),
    # the last decoding step holds it: 64 sequences, the logits of a 49k vocabulary
    ("smollm2-360m", 4, dict(batch=8, grad_accum=8, max_prompt_len=16, max_completion_len=48,
                             dropout=0.05)),
    # the training holds the step's peak; beta > 0: the reference pass
    ("qwen2.5-0.5b", 2, dict(batch=2, grad_accum=2, max_prompt_len=128, max_completion_len=32,
                             dropout=0.0, beta=0.04, grad_ckpt=False)),
], ids=["qwen-prefill", "smollm-decode", "qwen-beta-train"])
def test_the_traced_grpo_step_agrees_with_the_analytic_terms(model, layers, settings):
    from workbench.estimate.allocator import replay
    from workbench.estimate.trace import CUBLAS_WORKSPACE_BYTES, record_step

    c = config(model, layers)
    s = EstimateSettings(r=16, train_method="grpo", **settings)
    est = estimate_memory(architecture_from_config(c), s)
    events, trainable = record_step(c, s)
    traced = replay(events, preallocated=(CUBLAS_WORKSPACE_BYTES,) * 2)
    assert trainable == est.trainable_params
    assert traced.peak_allocated == pytest.approx(allocated(est), rel=TOLERANCE)
    peaks = _phase_peaks(events)
    training = max(est.moments[m] for m in TRAINING_MOMENTS)
    assert peaks["train"] == pytest.approx(training, rel=TOLERANCE)
    assert peaks["generate"] == pytest.approx(est.moments[GENERATION_MOMENT], rel=TOLERANCE)
    # the generation's own bytes (KV cache, activations, logits), not only the weights around them
    generation = est.moments[GENERATION_MOMENT] - peaks["static"]
    assert peaks["generate"] - peaks["static"] == pytest.approx(generation, rel=0.1)
    if s.beta:
        assert peaks["reference"] == pytest.approx(est.moments[REFERENCE_MOMENT], rel=TOLERANCE)
    else:
        assert peaks["reference"] == 0
    assert (est.phase == GENERATION_MOMENT) == (".generate" in traced.peak_label)


def test_the_grpo_trace_leaves_transformers_and_trl_as_they_were():
    import transformers.generation.utils as gen_utils
    import transformers.masking_utils as masking_utils
    import trl.trainer.utils as trl_utils

    from workbench.estimate.trace import TraceUnsupported, trace_step

    before = (gen_utils.StopCheck.__call__, masking_utils.fast_all, trl_utils._use_triton)
    s = EstimateSettings(r=8, batch=2, grad_accum=2, num_generations=2, max_prompt_len=16,
                         max_completion_len=4, grad_ckpt=True, train_method="grpo", beta=0.1)
    t = trace_step(config("tiny"), s)
    assert t.peak_allocated > 0 and t.trainable_params > 0
    assert before == (gen_utils.StopCheck.__call__, masking_utils.fast_all, trl_utils._use_triton)
    # vLLM's generation is its own, QLoRA's generation is fp32: the analytic estimate stays
    with pytest.raises(TraceUnsupported, match="colocated vLLM"):
        trace_step(config("tiny"), replace(s, generation="vllm"))
    with pytest.raises(TraceUnsupported, match="GRPO with QLoRA"):
        trace_step(config("tiny"), replace(s, method="qlora"))


def test_the_command_traces_a_grpo_step(tmp_path):
    out = json.loads(workbench("estimate", "--model", str(TINY_MODEL), "--train-method", "grpo",
                               "--batch", "4", "--grad-accum", "2", "--num-generations", "4",
                               "--max-prompt-len", "32", "--max-completion-len", "8", "--trace",
                               "--json", cwd=tmp_path, check=True).stdout)
    assert out["trace"]["traced"] is True, out["trace"]
    assert out["trace"]["peak_allocated"] == pytest.approx(out["trace"]["analytic_allocated"],
                                                           rel=TOLERANCE)


# ---- the GPU check -------------------------------------------------------------------------

def test_the_gpu_check_has_a_grpo_step_that_runs_dry(tmp_path):
    script = (REPO / "bench" / "gpu_checks.sh").read_text()
    assert subprocess.run(["bash", "-n", "bench/gpu_checks.sh"], cwd=REPO).returncode == 0
    assert 'step grpo "GRPO step"' in script and "bench/grpo_gpu_step.py" in script
    proc = subprocess.run([sys.executable, "bench/grpo_gpu_step.py", "--dry-run"], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", OUT=str(tmp_path)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads((tmp_path / "grpo_gpu_step.json").read_text())
    assert len(out["points"]) == 2
    for point in out["points"]:
        assert point["status"] == "ran (dry run: not measured)", point["status"]
        assert point["estimate_reserved"] > 0 and point["estimate_generation"] > 0
        assert point["step_seconds"] > 0 and point["completion_tokens"] > 0
    assert "| tiny/Lall/grpo/g4/" in (tmp_path / "grpo_gpu_step.md").read_text()
