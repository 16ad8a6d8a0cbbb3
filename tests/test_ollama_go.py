"""The Ollama TEMPLATE checked by Go: Go's own text/template (the engine Ollama runs) renders
the exported Modelfile's TEMPLATE for sample conversations, and the result must be the
prompt the tokenizer's chat template builds. Also for the real chat-template families the
project can derive a TEMPLATE from. Skips when `go` is not installed (CI installs Debian's
golang-go); the renderer is tests/gotemplate/render.go."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from chat_template_corpus import FAMILIES, family_tokenizer
from test_export_support import make_run

from workbench.export.cli import main

GO = shutil.which("go")
RENDER_GO = Path(__file__).parent / "gotemplate" / "render.go"
SYSTEM = "You translate English to French."

pytestmark = pytest.mark.skipif(GO is None, reason="Go is not installed (apt-get install golang-go)")

CONVERSATIONS = [
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "the cat"},
     {"role": "assistant", "content": "le chat"}, {"role": "user", "content": "the dog"}],
    [{"role": "user", "content": "good morning"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
     {"role": "user", "content": "quotes \" ' {{ braces }} and\nnewlines"}],
]


@pytest.fixture(scope="module")
def go_render(tmp_path_factory):
    """Build the renderer once; return render(jobs) -> list of outputs (or error strings)."""
    folder = tmp_path_factory.mktemp("go")
    binary = folder / "render"
    env = dict(os.environ, GOCACHE=str(folder / "cache"), GOPATH=str(folder / "gopath"),
               GOFLAGS="-mod=mod", GO111MODULE="off")
    subprocess.run([GO, "build", "-o", str(binary), str(RENDER_GO)], check=True, env=env,
                   capture_output=True, timeout=300)

    def render(jobs: list[tuple[str, dict]]) -> list:
        payload = json.dumps([{"template": t, "values": v} for t, v in jobs])
        proc = subprocess.run([str(binary)], input=payload, capture_output=True, text=True,
                              check=True, timeout=60)
        return [r.get("output", "ERROR: " + r.get("error", "")) for r in json.loads(proc.stdout)]
    return render


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("runs"), system_prompt=SYSTEM, r=8)
    assert main([str(run.path), "--format", "merged,ollama", "--name", "tiny"]) == 0
    return run


def test_exported_template_renders_in_go_as_the_chat_template(run, go_render):
    from transformers import AutoTokenizer

    from workbench.export.gotemplate import ollama_values
    from workbench.export.ollama import parse_modelfile

    mf = parse_modelfile((run.path / "export" / "ollama" / "Modelfile").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(run.path / "export" / "merged"))
    got = go_render([(mf["TEMPLATE"], ollama_values(c)) for c in CONVERSATIONS])
    for conv, out in zip(CONVERSATIONS, got):
        want = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        assert out == want, f"Go rendered {out!r}\nchat template gives {want!r}"


def test_go_catches_a_broken_template(go_render):
    """The check can fail: a template Go cannot run, or one that renders differently."""
    broken, wrong = go_render([("{{ range .Messages }}{{ .Content }}", {"Messages": []}),
                               ("{{ .System }}", {"System": "x", "Messages": []})])
    assert broken.startswith("ERROR:") and wrong == "x"


def test_real_template_families_render_the_same_in_go(go_render):
    """For every real chat-template family the export derives a TEMPLATE for, Go renders it
    as the project's own renderer does, and as the family's Jinja template does wherever the
    export's own proof accepts it."""
    from workbench.export.chat_template import TemplateNotDerivable, derive_skeleton
    from workbench.export.gotemplate import build_template, ollama_values, render

    jobs, expected, derived = [], [], []
    for name in FAMILIES:
        tok = family_tokenizer(name)
        try:
            template = build_template(derive_skeleton(tok))
        except TemplateNotDerivable:
            continue
        derived.append(name)
        for conv in CONVERSATIONS:
            if FAMILIES[name].system != "keep":
                conv = [m for m in conv if m["role"] != "system"]
            ours = render(template, ollama_values(conv))
            try:  # some families' templates need more than messages (tools, dates)
                jinja = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
            except Exception:  # noqa: BLE001 - then only the project's renderer is compared
                jinja = None
            jobs.append((template, ollama_values(conv)))
            expected.append((name, ours, jinja))
    assert len(derived) >= 3, derived
    matched = set()
    for (name, ours, jinja), go in zip(expected, go_render(jobs)):
        assert go == ours, f"{name}: Go {go!r} vs the project's renderer {ours!r}"
        if ours == jinja:
            matched.add(name)
    assert len(matched) >= 3, (derived, matched)
