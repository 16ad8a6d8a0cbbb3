"""The Ollama package: a Modelfile whose TEMPLATE is derived from the tokenizer's chat
template (chat_template.py reads its skeleton, gotemplate.py writes it in Go-template syntax
and renders it back to prove it matches), stop PARAMETERs from the end-of-turn tokens,
SYSTEM from the profile, and the exact `ollama create` command."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from workbench.export.common import ExportError, staged_dir, write_text

README = """# Ollama package for {name}

Create the model (run on the machine where Ollama runs, from this folder):

    {command}

then chat with it:

    ollama run {name}

`FROM` is {from_what}. {quantize_note}

Ollama imports a GGUF file directly, whatever the architecture llama.cpp converted; it imports
safetensors only for the architectures it knows (Llama, Mistral, Gemma, Phi-3, Qwen2 and a few
more, depending on the Ollama version; an adapter only for Llama, Mistral and Gemma bases).
Export with `--format gguf,ollama` (add `--quant q4_K_M` for a 4-bit file) and FROM is the
GGUF, proven by llama.cpp to answer like the trained model (../gguf/verify.json).

Ollama listens on 127.0.0.1:11434 unless OLLAMA_HOST says otherwise; keep it so on a shared
machine (Ollama has no API key).

## How TEMPLATE was made

The tokenizer's Jinja chat template was rendered with placeholder messages; the text around
each placeholder (system, user, assistant, generation prompt) was cut out and written as a
Go template over `.System` and `.Messages`. The export rendered this TEMPLATE back with a
sample conversation and got the same prompt string the tokenizer builds (checked: {checked}).
Limits: content filters such as `| trim` are not reproduced (content is inserted as is), tool
calls and templates that format a turn differently by position are not supported, and
values computed at render time (dates) are frozen at export time.
"""


def _quote(text: str) -> str:
    if '"""' in text:
        raise ExportError('the chat template contains """, which a Modelfile cannot quote',
                          hint="write the TEMPLATE by hand for this model")
    return f'"""{text}"""'


def _param_quote(value: str) -> str:
    return json.dumps(value)  # a Go-style double-quoted string: Ollama unquotes it


def sample_conversations(system: str) -> list[list[dict]]:
    sys_msgs = [{"role": "system", "content": system or "You are a helpful assistant."}]
    turns = [{"role": "user", "content": "What is 2 + 2?"},
             {"role": "assistant", "content": "4"},
             {"role": "user", "content": "And 3 + 3?"}]
    return [sys_msgs + turns, turns, turns[:1]]


def build_modelfile(tokenizer, profile, from_path: str, adapter_path: str | None = None):
    from workbench.export.chat_template import (TemplateNotDerivable, derive_skeleton,
                                                end_of_turn_tokens)
    from workbench.export.gotemplate import build_template, ollama_values, render
    from workbench.train.plan import profile_chat_format

    try:
        skeleton = derive_skeleton(tokenizer)
    except TemplateNotDerivable as exc:
        raise ExportError(f"cannot derive an Ollama TEMPLATE from the chat template: {exc}",
                          hint="write TEMPLATE by hand in the Modelfile (see "
                               "https://github.com/ollama/ollama/blob/main/docs/template.md)") from exc
    template = build_template(skeleton)
    # Proof: the Go template gives the prompt training gave (the run's ChatFormat: system
    # text folded or dropped as data.system says), for real conversations.
    fmt = profile_chat_format(tokenizer, profile)
    for conv in sample_conversations(profile.data.system_prompt):
        want = fmt.prompt(conv)
        got = render(template, ollama_values(conv))
        if got != want:
            why = ""
            if fmt.system != "keep" and any(m["role"] == "system" for m in conv):
                why = (f" (training used data.system = \"{fmt.system}\", which an Ollama "
                       "TEMPLATE derived from the chat template does not do)")
            raise ExportError("the derived Ollama TEMPLATE does not reproduce the prompt "
                              f"training used{why}:\n  training:  {want!r}\n  TEMPLATE:  {got!r}",
                              hint="write TEMPLATE by hand in the Modelfile")
    stops = end_of_turn_tokens(tokenizer, skeleton)
    lines = [f"FROM {from_path}"]
    if adapter_path:
        lines.append(f"ADAPTER {adapter_path}")
    lines.append(f"TEMPLATE {_quote(template)}")
    lines += [f"PARAMETER stop {_param_quote(s)}" for s in stops]
    if profile.data.system_prompt:
        lines.append(f"SYSTEM {_quote(profile.data.system_prompt)}")
    return "\n".join(lines) + "\n", stops


_INSTRUCTION = re.compile(r'^([A-Z]+) (?:"""(.*?)"""|(.*?))$', re.S | re.M)


def parse_modelfile(text: str) -> dict:
    """The instructions of a Modelfile we wrote: {"FROM": ..., "TEMPLATE": ..., "PARAMETER":
    [(key, value)]}. Used to check our own output, and by the tests."""
    out: dict = {"PARAMETER": []}
    for cmd, quoted, plain in _INSTRUCTION.findall(text):
        value = quoted or plain
        if cmd == "PARAMETER":
            key, _, raw = value.partition(" ")
            out["PARAMETER"].append((key, json.loads(raw) if raw.startswith('"') else raw))
        else:
            out[cmd] = value
    return out


def export_ollama(run, profile, tokenizer, target: Path, *, name: str, merged: Path | None,
                  force: bool, gguf: tuple[str, bool] | None = None) -> dict:
    """`gguf`: (path, already quantized) of the GGUF exported with it, which FROM then names."""
    quantize = profile.export.ollama_quantize
    if gguf is not None:
        from_path, adapter = gguf[0], None
        from_what = f"the GGUF file {gguf[0]}"
        if gguf[1]:
            quantize = ""  # already quantized by llama.cpp: Ollama cannot requantize it
    elif merged is not None:
        from_path, adapter, from_what = str(merged), None, f"the merged model ({merged})"
    else:
        from_path, adapter = profile.model.name_or_path, str(run.adapter_dir)
        from_what = f"the base model ({from_path}) with ADAPTER {adapter}"
    text, stops = build_modelfile(tokenizer, profile, from_path, adapter)
    quantize_note = (f"`--quantize {quantize}` makes Ollama quantize the weights while "
                     "importing (only from a full-precision FROM model; set "
                     "export.ollama_quantize in the profile to change it)." if quantize else
                     "It is already quantized, so `ollama create` imports it as is.")
    with staged_dir(target, force) as staging:
        modelfile = staging / "Modelfile"
        write_text(modelfile, text)
        final_modelfile = target / "Modelfile"
        argv = ["ollama", "create", name, "-f", str(final_modelfile)]
        argv += ["--quantize", quantize] if quantize else []
        command = shlex.join(argv)
        write_text(staging / "README.md", README.format(
            name=name, command=command, from_what=from_what, quantize_note=quantize_note,
            checked="system + multi-turn, multi-turn, single turn"))
        write_text(staging / "create.sh", "#!/bin/sh\nset -e\n" + command + "\n", executable=True)
    return {"path": str(target), "modelfile": str(final_modelfile), "command": command,
            "stop": stops, "from": from_path, "adapter": adapter}
