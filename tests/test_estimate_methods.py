"""The memory and time estimate knows the training method (train.method): DPO, ORPO, SimPO
and KTO as trl 1.16's trainers run them (workbench/estimate/memory.py `_preference_settings`,
`_pair_logits_peak`, `_reference_pass`; speed.py `passes`; trace_preference.py)."""

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
from workbench.estimate.memory import (REFERENCE_MOMENT, EstimateSettings, estimate_memory)
from workbench.estimate.params import architecture_from_config
from workbench.estimate.speed import DataCount, estimate_time, step_seconds

TOLERANCE = 0.05  # traced vs analytic allocated peak, as the SFT trace tests allow


def config(name: str, layers: int | None = None) -> dict:
    path = TINY_MODEL if name == "tiny" else REPO / "assets" / "configs" / name
    c = json.loads((path / "config.json").read_text())
    return {**c, "num_hidden_layers": layers} if layers else c


def arch(name: str, layers: int | None = None):
    return architecture_from_config(config(name, layers))


def allocated(est) -> int:
    return est.reserved_bytes - est.breakdown["allocator reserve"]


BASE = EstimateSettings(r=16, batch=2, seq=1024, dropout=0.0)


# ---- analytic ------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["llama-3.1-8b", "qwen2.5-0.5b", "phi-3-mini-4k", "tiny"])
@pytest.mark.parametrize("grad_ckpt", [True, False])
def test_dpo_needs_more_than_sft_and_trains_both_sides(model, grad_ckpt):
    a = arch(model)
    targets = "all-linear" if model == "phi-3-mini-4k" else BASE.targets
    s = replace(BASE, grad_ckpt=grad_ckpt, targets=targets)
    sft, dpo = estimate_memory(a, s), estimate_memory(a, replace(s, train_method="dpo"))
    assert dpo.peak_bytes > sft.peak_bytes
    assert dpo.tokens_per_step == 2 * sft.tokens_per_step  # chosen and rejected, stacked
    # the policy's step is SFT's at 2 x batch rows; the reference forward adds a moment of its own
    doubled = estimate_memory(a, replace(s, batch=2 * s.batch))
    assert allocated(dpo) >= allocated(doubled)
    assert set(doubled.moments) < set(dpo.moments) and REFERENCE_MOMENT in dpo.moments
    assert "reference pass (no grad)" in dpo.breakdown and dpo.to_dict()["method"] == "dpo"


def test_the_reference_forward_holds_the_peak_where_its_transient_is_largest():
    """Eager attention without checkpointing: the reference's no-grad scores (fp32 softmax) sit
    beside every layer's saved activations; that moment holds the peak, and precomputing the
    reference removes it. With checkpointing the backward's recomputation is larger."""
    a = arch("qwen2.5-0.5b")
    s = replace(BASE, train_method="dpo", attn="eager", grad_ckpt=False)
    dpo = estimate_memory(a, s)
    assert dpo.phase == REFERENCE_MOMENT
    assert {"policy log-probs held", "reference pass (no grad)"} <= set(dpo.breakdown)
    assert dpo.breakdown["reference pass (no grad)"] > 0
    pre = estimate_memory(a, replace(s, precompute_ref=True))
    assert pre.peak_bytes < dpo.peak_bytes
    assert REFERENCE_MOMENT not in pre.moments and "reference pass (no grad)" not in pre.breakdown
    assert "reference precomputed" in pre.explain()


@pytest.mark.parametrize("model", ["llama-3.1-8b", "qwen2.5-0.5b", "tiny"])
@pytest.mark.parametrize("grad_ckpt", [True, False])
@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_precomputing_the_reference_never_raises_the_peak(model, grad_ckpt, method):
    a = arch(model)
    s = replace(BASE, train_method=method, grad_ckpt=grad_ckpt, batch=4)
    on, pre = estimate_memory(a, s), estimate_memory(a, replace(s, precompute_ref=True))
    assert pre.peak_bytes <= on.peak_bytes
    if on.phase != REFERENCE_MOMENT:  # the reference is a transient below the peak: named, 0
        assert on.breakdown["reference pass (no grad)"] == 0 and pre.peak_bytes == on.peak_bytes
        assert "not at the peak" in {t.name: t.why for t in on.terms}["reference pass (no grad)"]


def test_orpo_and_simpo_have_no_reference_and_pay_for_full_logits():
    """trl's ORPOTrainer and CPOTrainer (trl.experimental) build the full logits of the 2 x
    batch rows (fp32 after accelerate), where DPO's fused head never does: below DPO with the
    tiny model's 768-token vocabulary, far above it with Llama-3's 128k."""
    for model in ("tiny", "llama-3.1-8b"):
        a = arch(model)
        dpo = estimate_memory(a, replace(BASE, train_method="dpo"))
        orpo = estimate_memory(a, replace(BASE, train_method="orpo"))
        simpo = estimate_memory(a, replace(BASE, train_method="simpo"))
        for est in (orpo, simpo):
            assert REFERENCE_MOMENT not in est.moments
            assert not any("reference" in name for name in est.breakdown)
        assert simpo.peak_bytes < orpo.peak_bytes  # no NLL on the chosen rows (cpo_alpha = 0)
        if model == "tiny":
            assert orpo.peak_bytes < dpo.peak_bytes
        else:
            tokens, vocab = 2 * BASE.batch * BASE.seq, a.vocab
            assert orpo.breakdown["logits and loss"] >= 10 * tokens * vocab
            assert simpo.breakdown["logits and loss"] >= 8 * tokens * vocab
            assert orpo.peak_bytes > dpo.peak_bytes + 8 * tokens * vocab


def test_kto_trains_one_answer_a_row_and_is_sane():
    a = arch("llama-3.1-8b")
    s = replace(BASE, train_method="kto", batch=4)
    kto = estimate_memory(a, s)
    sft = estimate_memory(a, replace(s, train_method="sft"))
    dpo = estimate_memory(a, replace(s, train_method="dpo"))
    assert kto.tokens_per_step == sft.tokens_per_step
    assert sft.peak_bytes * 0.97 <= kto.peak_bytes < dpo.peak_bytes
    assert REFERENCE_MOMENT in kto.moments
    # trl refuses KTO at batch 1 (its KL estimate needs another row): said, and never advised
    one = estimate_memory(a, replace(s, batch=1))
    assert any("batch_size >= 2" in n for n in one.notes)
    from workbench.estimate.advice import remedies

    assert not any(r.settings.batch < 2 for r in remedies(a, replace(s, batch=2), 1))


def test_preference_trainers_disable_lora_dropout():
    a = arch("qwen2.5-0.5b")
    s = replace(BASE, train_method="dpo", dropout=0.05, grad_ckpt=False)
    assert estimate_memory(a, s).breakdown == estimate_memory(a, replace(s, dropout=0.0)).breakdown
    assert any("disable_dropout" in n for n in estimate_memory(a, s).notes)


def test_settings_come_from_the_profile_and_old_profiles_read_as_sft():
    from workbench.profile import load_profile

    profile = load_profile("demo", ["train.method=dpo", "preference.precompute_ref=true"])
    s = EstimateSettings.from_profile(profile)
    assert (s.train_method, s.precompute_ref) == ("dpo", True)
    assert s.method == profile.lora.method  # the adapter stays the adapter
    old = SimpleNamespace(train=SimpleNamespace(**{k: v for k, v in vars(profile.train).items()
                                                   if k != "method"}),
                          lora=profile.lora, model=profile.model)
    s = EstimateSettings.from_profile(old)
    assert (s.train_method, s.precompute_ref) == ("sft", False)
    with pytest.raises(Exception, match="packing is for supervised fine-tuning"):
        replace(s, train_method="orpo", packing=True).check()


def test_sft_is_unchanged_by_the_new_settings():
    """`train_method` defaults to "sft"; an SFT estimate ignores precompute_ref."""
    for model in ("llama-3.1-8b", "tiny"):
        a = arch(model)
        for s in (BASE, replace(BASE, grad_ckpt=False, loss_path="full_logits")):
            plain = estimate_memory(a, s)
            assert plain.to_dict()["method"] == "sft"
            for other in (replace(s, train_method="sft"), replace(s, precompute_ref=True)):
                est = estimate_memory(a, other)
                assert (est.breakdown, est.explain()) == (plain.breakdown, plain.explain())
            assert "reference" not in plain.explain()


# ---- time ----------------------------------------------------------------------------------

def test_a_dpo_step_does_twice_the_work_plus_the_reference_forward():
    a, gpu = arch("llama-3.1-8b"), find_gpu("h100")
    s = replace(BASE, batch=4, seq=2048, grad_ckpt=True)
    sft_s, sft_fpt = step_seconds(a, s, gpu)
    dpo_s, dpo_fpt = step_seconds(a, replace(s, train_method="dpo"), gpu)
    pre_s, pre_fpt = step_seconds(a, replace(s, train_method="dpo", precompute_ref=True), gpu)
    orpo_s, _ = step_seconds(a, replace(s, train_method="orpo"), gpu)
    # per trained token, the reference adds one no-grad forward of the base model: about a
    # third of a checkpointed forward + backward + recomputation
    assert 0.2 < dpo_fpt / sft_fpt - 1 < 0.4 and pre_fpt == sft_fpt
    # twice the rows' compute; the per-layer overhead of a pass does not double with its rows
    assert 2.0 * sft_s < dpo_s < 2.9 * sft_s
    assert 1.5 * sft_s < pre_s < 2 * sft_s and pre_s < dpo_s and orpo_s == pytest.approx(pre_s)
    kto_s, _ = step_seconds(a, replace(s, train_method="kto"), gpu)
    assert 1.5 * sft_s < kto_s < dpo_s  # batch rows trained, three no-grad forwards of batch rows


def test_the_run_counts_both_sides_and_the_precompute_pass():
    a, gpu = arch("qwen2.5-0.5b"), find_gpu("h100")
    s = replace(BASE, batch=4, seq=1024, grad_accum=2, train_method="dpo")
    data = DataCount(tokens=2 * 1000 * 512, rows=1000, lengths=(512,) * 50)
    t = estimate_time(a, s, gpu, data=data, epochs=2)
    sft = estimate_time(a, replace(s, train_method="sft"), gpu, data=data, epochs=2)
    assert t.steps == sft.steps == 250  # 1000 pairs / 4 a micro-batch / 2 accumulated x 2 epochs
    assert t.tokens_per_step == 2 * sft.tokens_per_step and t.tokens_total == 2 * sft.tokens_total
    pre = estimate_time(a, replace(s, precompute_ref=True), gpu, data=data, epochs=2)
    no_pass = 500 * step_seconds(a, replace(s, seq=512, precompute_ref=True), gpu)[0]
    assert no_pass < pre.seconds < t.seconds  # one reference pass over the pairs, not per epoch


# ---- the command ---------------------------------------------------------------------------

def test_the_command_says_the_method_in_text_and_json(tmp_path, needs_tiny_model):
    profile = tmp_path / "dpo.toml"
    profile.write_text(f'[model]\nname_or_path = "{TINY_MODEL}"\n[data]\ntrain = "x.jsonl"\n'
                       '[train]\nmethod = "dpo"\nbatch_size = 2\nmax_seq_len = 128\n')
    out = json.loads(workbench("estimate", str(profile), "--no-count-data", "--gpu", "t4", "--json",
                               cwd=tmp_path, check=True).stdout)
    assert out["method"] == "dpo" and out["settings"]["train_method"] == "dpo"
    assert out["tokens_per_step"] == 2 * 2 * 128 * 4  # both sides x batch x seq x grad_accum
    assert "reference pass (no grad)" in out["breakdown"] and "DPOTrainer" in out["step_modeled"]
    text = workbench("estimate", str(profile), "--no-count-data", "--gpu", "t4", cwd=tmp_path,
                     check=True).stdout
    assert "(DPO, lora, r=16" in text and "reference pass (no grad)" in text
    orpo = json.loads(workbench("estimate", "--model", str(TINY_MODEL), "--train-method", "orpo",
                                "--json", cwd=tmp_path, check=True).stdout)
    assert orpo["method"] == "orpo" and "ORPOTrainer" in orpo["step_modeled"]
    sft = json.loads(workbench("estimate", "--model", str(TINY_MODEL), "--json", cwd=tmp_path,
                               check=True).stdout)
    assert sft["method"] == "sft"


def test_the_preference_data_is_counted_as_its_trainer_gets_it(needs_tiny_model):
    from workbench.estimate.cli import count_dataset_tokens
    from workbench.profile import load_profile

    profile = load_profile("dpo-demo")
    data, how = count_dataset_tokens(profile)
    assert data is not None, how
    assert "training pairs of" in how and "as DPO trains on them" in how and data.rows > 100
    assert data.tokens == 2 * sum(data.lengths)  # both sides, each padded to the longer one
    kto, how = count_dataset_tokens(load_profile("dpo-demo", ["train.method=kto"]))
    assert kto.rows == 2 * data.rows and "answers" in how  # a pair trains as its two answers


# ---- traced vs analytic --------------------------------------------------------------------

@pytest.mark.parametrize("model, layers, settings", [
    ("tiny", None, dict(batch=4, seq=128, grad_ckpt=False)),
    ("qwen2.5-0.5b", 2, dict(batch=2, seq=512, grad_ckpt=True)),
    ("qwen2.5-0.5b", 2, dict(batch=2, seq=512, grad_ckpt=False)),
], ids=["tiny", "qwen2.5-0.5b-ckpt", "qwen2.5-0.5b"])
@pytest.mark.parametrize("method", ["dpo", "orpo", "kto", "simpo"])
def test_the_traced_step_agrees_with_the_analytic_terms(model, layers, settings, method):
    from workbench.estimate.trace import trace_step

    c = config(model, layers)
    s = EstimateSettings(r=16, dropout=0.05, train_method=method, **settings)
    est = estimate_memory(architecture_from_config(c), s)
    traced = trace_step(c, s)
    assert traced.trainable_params == est.trainable_params
    assert traced.peak_allocated == pytest.approx(allocated(est), rel=TOLERANCE)


def test_the_traced_reference_forward_agrees_with_its_analytic_moment():
    """A Llama-3.1-8B layer without checkpointing: there the traced step's peak is the reference
    forward (its MLP's no-grad activations beside the policy's saved ones)."""
    from workbench.estimate.allocator import replay
    from workbench.estimate.trace import CUBLAS_WORKSPACE_BYTES, record_step

    c = config("llama-3.1-8b", 1)
    s = EstimateSettings(r=16, dropout=0.0, batch=1, seq=2048, grad_ckpt=False, train_method="dpo")
    events, _ = record_step(c, s)
    result = replay(events, preallocated=(CUBLAS_WORKSPACE_BYTES,) * 2)
    assert ".reference:" in result.peak_label
    live, total, peak = {}, 0, 0
    for ev in events:  # the largest allocated moment inside the second step's reference forward
        if ev[0] == "a":
            live[ev[1]] = ev[2]
            total += ev[2]
            if ev[3].startswith("step1.0.forward.reference"):
                peak = max(peak, total)
        elif ev[0] == "f" and ev[1] in live:
            total -= live.pop(ev[1])
    est = estimate_memory(architecture_from_config(c), s)
    assert peak + 2 * CUBLAS_WORKSPACE_BYTES == pytest.approx(est.moments[REFERENCE_MOMENT], rel=0.02)


def test_the_preference_trace_leaves_trl_as_it_was():
    import trl.kernels.chunked_logprob as chunked
    import trl.trainer.utils as trl_utils

    from workbench.estimate.trace import trace_step

    before = (trl_utils.is_triton_available, trl_utils._supports_trl_loss_kernel,
              chunked._use_triton, hasattr(trl_utils, "_fused_logprob_entropy"))
    s = EstimateSettings(r=8, batch=2, seq=32, grad_ckpt=False, train_method="orpo")
    assert trace_step(config("tiny"), s).peak_allocated > 0
    assert trace_step(config("tiny"), replace(s, train_method="dpo")).peak_allocated > 0
    assert before == (trl_utils.is_triton_available, trl_utils._supports_trl_loss_kernel,
                      chunked._use_triton, hasattr(trl_utils, "_fused_logprob_entropy"))


# ---- the GPU check -------------------------------------------------------------------------

def test_the_gpu_check_parses_and_its_preference_step_runs_dry(tmp_path):
    assert subprocess.run(["bash", "-n", "bench/gpu_checks.sh"], cwd=REPO).returncode == 0
    assert "bench/preference_gpu_step.py" in (REPO / "bench" / "gpu_checks.sh").read_text()
    proc = subprocess.run([sys.executable, "bench/preference_gpu_step.py", "--dry-run",
                           "--only", "dpo"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", OUT=str(tmp_path)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads((tmp_path / "preference_gpu_step.json").read_text())
    (point,) = out["points"]
    assert point["status"] == "ran (dry run: not measured)" and point["estimate_reserved"] > 0
    assert point["step_seconds"] > 0 and point["estimate_phase"]
    assert "| tiny/Lall/dpo/" in (tmp_path / "preference_gpu_step.md").read_text()
