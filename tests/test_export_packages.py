"""Ollama, vLLM, bnb4, GGUF and the Hub push, checked against the run's files."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from conftest import TINY_MODEL
from test_export_support import make_run

from workbench.export.cli import main

SYSTEM = "You translate English to French."
FAKE_TOKEN = "hf_FAKEtoken0123456789abcdef"


def _export(capsys, *argv):
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("runs"), system_prompt=SYSTEM, r=8)
    assert main([str(run.path), "--format", "merged,ollama,vllm", "--name", "Tiny FR"]) == 0
    return run


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TINY_MODEL))


def test_modelfile_matches_the_chat_template(run, tokenizer):
    from workbench.export.gotemplate import ollama_values, render
    from workbench.export.ollama import parse_modelfile

    folder = run.path / "export" / "ollama"
    mf = parse_modelfile((folder / "Modelfile").read_text())
    assert Path(mf["FROM"]) == run.path / "export" / "merged" and Path(mf["FROM"]).is_dir()
    assert mf["SYSTEM"] == SYSTEM
    assert mf["PARAMETER"] == [("stop", "<|im_end|>")]
    for conv in ([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "the cat"},
                  {"role": "assistant", "content": "le chat"},
                  {"role": "user", "content": "the dog"}],
                 [{"role": "user", "content": "good morning"}]):
        want = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        assert render(mf["TEMPLATE"], ollama_values(conv)) == want
    readme = (folder / "README.md").read_text()
    assert "architectures" in readme and "safetensors" in readme


def test_ollama_create_command(run):
    command = (run.path / "export" / "ollama" / "create.sh").read_text().splitlines()[-1]
    argv = shlex.split(command)
    assert argv[:3] == ["ollama", "create", "tiny-fr"]
    assert argv[argv.index("-f") + 1] == str(run.path / "export" / "ollama" / "Modelfile")
    assert Path(argv[argv.index("-f") + 1]).is_file()
    assert argv[argv.index("--quantize") + 1] == "q4_K_M"


def test_ollama_adapter_only(run, capsys):
    from workbench.export.ollama import parse_modelfile

    code, out, err = _export(capsys, run.path, "--format", "ollama", "--adapter-only", "--force")
    assert code == 0, err
    mf = parse_modelfile((run.path / "export" / "ollama" / "Modelfile").read_text())
    assert mf["FROM"] == str(TINY_MODEL.resolve()) and mf["ADAPTER"] == str(run.adapter_dir)
    assert Path(mf["ADAPTER"], "adapter_config.json").is_file()


def test_vllm_commands_fit_the_run(run):
    import json

    from workbench.export.vllm import check_command

    folder = run.path / "export" / "vllm"
    config = json.loads((run.adapter_dir / "adapter_config.json").read_text())
    # The last line is `exec vllm serve ... "$@"`: the command, then the caller's arguments.
    merged = shlex.split((folder / "serve_merged.sh").read_text().splitlines()[-1])[1:-1]
    adapter = shlex.split((folder / "serve_adapter.sh").read_text().splitlines()[-1])[1:-1]
    assert merged[:3] == ["vllm", "serve", str(run.path / "export" / "merged")]
    assert merged[merged.index("--served-model-name") + 1] == "tiny-fr"
    assert adapter[:3] == ["vllm", "serve", str(TINY_MODEL.resolve())]
    name, _, path = adapter[adapter.index("--lora-modules") + 1].partition("=")
    assert name == "tiny-fr" and Path(path) == run.adapter_dir
    assert "--enable-lora" in adapter and int(adapter[adapter.index("--max-lora-rank") + 1]) >= config["r"] == 8
    assert check_command(merged, config) == [] and check_command(adapter, config) == []
    too_small = [*adapter[:adapter.index("--max-lora-rank") + 1], "4"]
    assert any("below the adapter's r = 8" in p for p in check_command(too_small, config))
    client = (folder / "client.py").read_text()
    compile(client, "client.py", "exec")
    assert "tiny-fr" in client and SYSTEM in client


def test_bnb4_on_cpu_says_a_gpu_is_needed(run, capsys):
    code, out, err = _export(capsys, run.path, "--format", "bnb4")
    assert code == 2 and "needs an NVIDIA CUDA GPU" in err and "Traceback" not in err
    assert not (run.path / "export" / "bnb4").exists()


def test_gguf_without_converter_says_how_to_get_it(run, capsys, monkeypatch, tmp_path):
    from workbench.export import llamacpp

    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))  # no unpacked llama-cpp-python either
    monkeypatch.setattr(llamacpp, "COMMON_PLACES", ())
    monkeypatch.setattr(llamacpp.shutil, "which", lambda name: None)
    code, out, err = _export(capsys, run.path, "--format", "gguf")
    assert code == 2 and "no GGUF converter" in err and "git clone" in err and "LLAMA_CPP_DIR" in err
    assert "python -m workbench.export.llamacpp" in err
    assert not (run.path / "export" / "gguf").exists()


def test_gguf_output_that_is_not_gguf_is_refused(run, capsys, monkeypatch, tmp_path):
    (tmp_path / "convert_hf_to_gguf.py").write_text(
        "import sys\nout = sys.argv[sys.argv.index('--outfile') + 1]\n"
        "open(out, 'wb').write(b'not a gguf file')\n")
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path))
    code, out, err = _export(capsys, run.path, "--format", "gguf")
    assert code == 2 and "is not a GGUF file" in err
    assert not (run.path / "export" / "gguf").exists()


def test_hub_push_offline_fails_cleanly_and_never_writes_the_token(run, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = _export(capsys, run.path, "--format", "vllm", "--force",
                             "--push-to-hub", "someone/tiny-fr")
    assert code == 1 and "push to the Hub (someone/tiny-fr) failed" in err
    assert FAKE_TOKEN not in out + err
    for path in run.path.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path


def test_hub_push_without_token_refuses_before_work(run, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    code, out, err = _export(capsys, run.path, "--format", "vllm", "--force",
                             "--push-to-hub", "someone/tiny-fr")
    assert code == 2 and "HF_TOKEN" in err


LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
          "<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
GEMMA = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
         "{% endif %}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}"
         "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def test_template_is_derived_not_hard_coded(tokenizer):
    from workbench.export.chat_template import TemplateNotDerivable, derive_skeleton
    from workbench.export.gotemplate import build_template, ollama_values, render

    tokenizer = tokenizer.__class__.from_pretrained(str(TINY_MODEL))
    tokenizer.chat_template = LLAMA3
    template = build_template(derive_skeleton(tokenizer))
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}]
    for c in (conv, conv[1:2]):
        assert render(template, ollama_values(c)) == tokenizer.apply_chat_template(
            c, tokenize=False, add_generation_prompt=True)
    tokenizer.chat_template = GEMMA
    with pytest.raises(TemplateNotDerivable, match="System role not supported"):
        derive_skeleton(tokenizer)
