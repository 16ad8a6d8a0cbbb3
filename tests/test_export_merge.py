"""`workbench export --format merged`: the proof, a wrong merge caught, and bad input refused
with a message and nothing written. A real LoRA on the bundled tiny model (test_export_support)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO
from test_export_support import edit_adapter_config, make_run

from workbench.export.cli import main


def _export(capsys, *argv):
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _leftovers(run):
    root = run.path / "export"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def merged_run(runs_dir):
    run = make_run(runs_dir, name="merged")
    assert main([str(run.path), "--format", "merged", "--json"]) == 0
    return run


def test_merged_export_is_proven_equal_to_the_adapter_model(merged_run):
    folder = merged_run.path / "export" / "merged"
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "generation_config.json",
            "verify.json"} <= names
    assert not any(n.endswith(".bin") for n in names)
    proof = json.loads((folder / "verify.json").read_text())
    assert proof["ok"] and proof["prompts"] == 8 and proof["tokens_compared"] > 0
    assert proof["max_logit_diff"] <= proof["atol"] == 1e-3 and proof["dtype"] == "float32"
    gen = json.loads((folder / "generation_config.json").read_text())
    eos = gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    assert tok.convert_tokens_to_ids("<|im_end|>") in eos
    assert "<|im_start|>" in tok.chat_template  # the chat template travels with the model
    # The merge changed the weights (the adapter is not a no-op), so the proof proved something.
    from safetensors.torch import load_file

    merged = load_file(str(folder / "model.safetensors"))
    base = load_file(str(REPO / "assets" / "tiny-model" / "model.safetensors"))
    key = next(k for k in merged if k.endswith("q_proj.weight"))
    assert (merged[key] - base[key]).abs().max() > 1e-3
    assert _leftovers(merged_run) == ["merged"]


def test_existing_export_needs_force(merged_run, capsys):
    code, out, err = _export(capsys, merged_run.path, "--format", "merged")
    assert code == 2 and "already exists" in err and "hint: pass --force to replace it" in err
    assert "Traceback" not in err
    # The app runs the same command; its hint names the tick box the app has instead.
    code, out, err = _export(capsys, merged_run.path, "--format", "merged", "--json",
                             "--hints-for", "app")
    hint = json.loads(out)["hint"]
    assert code == 2 and hint == 'tick "force" to replace it, or move it away first'
    assert 'hint: tick "force"' in err and "--force" not in err


def test_a_wrong_merge_fails_the_proof_with_evidence_and_leaves_nothing(runs_dir, capsys,
                                                                        monkeypatch):
    import torch

    from workbench.export import merge

    real = merge.merge_adapter

    def corrupt(model):
        merged = real(model)
        with torch.no_grad():
            merged.model.layers[0].self_attn.q_proj.weight.add_(0.5)
        return merged

    monkeypatch.setattr(merge, "merge_adapter", corrupt)
    run = make_run(runs_dir, name="corrupt")
    code, out, err = _export(capsys, run.path, "--format", "merged", "--format", "ollama")
    assert code == 1, err
    assert "proof FAILED" in err and "first differing token" in err or "logits differ" in err
    assert "adapter answer:" in err and "merged answer:" in err and "max |logit diff|" in err
    assert not (run.path / "export").exists()
    assert not [p for p in run.path.iterdir() if ".partial" in p.name]


def test_json_evidence_on_failure(runs_dir, capsys, monkeypatch):
    from workbench.export import merge

    real = merge.merge_adapter

    def zero_out(model):  # drops the adapter: answers become the base model's
        model.unload()
        return model.base_model.model

    monkeypatch.setattr(merge, "merge_adapter", zero_out)
    run = make_run(runs_dir, name="dropped")
    code, out, err = _export(capsys, run.path, "--format", "merged", "--json")
    assert code == 1
    evidence = json.loads(out)["evidence"]
    assert evidence["ok"] is False and evidence["mismatch"]["prompt"]
    assert evidence["mismatch"]["max_logit_diff"] > evidence["mismatch"]["allowed"]
    assert real is not zero_out and not (run.path / "export").exists()


def test_run_without_adapter(runs_dir, capsys):
    import shutil

    run = make_run(runs_dir, name="noadapter")
    shutil.rmtree(run.adapter_dir)
    run.write_status(state="running", pid=os.getpid(), step=5, total_steps=20)
    code, out, err = _export(capsys, run.path, "--format", "merged")
    assert code == 2 and "no adapter yet" in err and "still training (step 5/20)" in err
    assert "workbench attach" in err
    run.write_status(state="stopped", pid=None)
    code, out, err = _export(capsys, run.path, "--format", "merged")
    assert code == 2 and f"workbench resume {run.name}" in err
    assert not (run.path / "export").exists()


def test_adapter_for_another_base_model(runs_dir, capsys):
    run = make_run(runs_dir, name="otherbase")
    edit_adapter_config(run, base_model_name_or_path="meta-llama/Llama-3.1-8B")
    code, out, err = _export(capsys, run.path, "--format", "merged")
    assert code == 2 and "'meta-llama/Llama-3.1-8B'" in err and "tiny-model" in err
    assert not (run.path / "export").exists()


@pytest.mark.parametrize("change, words", [
    ({"r": 4}, "other shapes"),
    ({"target_modules": ["gate_proj_missing"]}, "does not have"),
])
def test_rank_or_target_mismatch(runs_dir, capsys, change, words):
    run = make_run(runs_dir, name="mismatch")
    edit_adapter_config(run, **change)
    code, out, err = _export(capsys, run.path, "--format", "merged")
    assert code == 2, err
    assert words in err and "Traceback" not in err
    assert not (run.path / "export").exists()


def test_unknown_format_and_adapter_only_clash(merged_run, capsys):
    code, _, err = _export(capsys, merged_run.path, "--format", "onnx")
    assert code == 2 and "unknown export format 'onnx'" in err
    code, _, err = _export(capsys, merged_run.path, "--format", "merged", "--adapter-only")
    assert code == 2 and "--adapter-only" in err


def test_cli_module_imports_no_heavy_libraries():
    code = ("import sys, workbench.export.cli; "
            "bad = [m for m in ('torch', 'transformers', 'textual', 'peft') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
