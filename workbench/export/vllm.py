"""vLLM: the exact `vllm serve` commands (the merged model; the base with the adapter as a
LoRA module) and an OpenAI-compatible client snippet, checked against the run's files."""

from __future__ import annotations

import shlex
from pathlib import Path

from workbench.export.common import ExportError, staged_dir, write_text

# vLLM accepts only these values for --max-lora-rank; the adapter's r is rounded up to one.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
LOCAL_HOST = "127.0.0.1"

CLIENT = '''"""Ask the model served by `vllm serve` (OpenAI-compatible API; pip install openai)."""
import os

from openai import OpenAI

# The serve scripts bind 127.0.0.1:8000; with VLLM_API_KEY set, the server requires that key.
client = OpenAI(base_url=os.environ.get("VLLM_URL", "http://127.0.0.1:8000/v1"),
                api_key=os.environ.get("VLLM_API_KEY", "EMPTY"))
response = client.chat.completions.create(
    model={model!r},  # the merged model's name, or the LoRA module's name
    messages={messages!r},
    temperature=0.0,
    max_tokens={max_tokens},
)
print(response.choices[0].message.content)
'''

# A serve script: the exact command, made safe by default on a shared machine. vLLM's own
# default binds every interface with no key; this binds 127.0.0.1 unless --host is given,
# passes every extra argument to `vllm serve` ("$@": --port, --gpu-memory-utilization, ...),
# and leaves the key in VLLM_API_KEY, which vLLM reads itself (never on the command line,
# where `ps` would show it to every user of the machine).
SERVE_SCRIPT = """#!/bin/sh
# {what}
# Usage: ./{script} [any vllm serve argument ...]
#   listens on 127.0.0.1:8000 unless you pass --host (e.g. --host 0.0.0.0 to open it up)
#   on a GPU shared with other jobs: ./{script} --gpu-memory-utilization 0.5
#   export VLLM_API_KEY=... first to require that key from every client
set -e
host=127.0.0.1
for arg in "$@"; do
    case "$arg" in
        --host|--host=*) host= ;;
    esac
done
if [ -n "$host" ]; then
    set -- --host "$host" "$@"
fi
if [ -z "${{VLLM_API_KEY:-}}" ]; then
    echo "{script}: no VLLM_API_KEY set: any local user can query the server" >&2
fi
exec {command} "$@"
"""


def lora_rank_flag(r: int) -> int:
    for allowed in VLLM_LORA_RANKS:
        if allowed >= r:
            return allowed
    raise ExportError(f"the adapter's rank r = {r} is above vLLM's largest --max-lora-rank "
                      f"({VLLM_LORA_RANKS[-1]})", hint="serve the merged model instead")


def _common(profile) -> list[str]:
    flags = []
    if profile.model.trust_remote_code:
        flags.append("--trust-remote-code")
    return flags


def merged_command(profile, merged: Path, name: str) -> list[str]:
    return ["vllm", "serve", str(merged), "--served-model-name", name, *_common(profile)]


def adapter_command(profile, adapter: Path, rank: int, name: str) -> list[str]:
    argv = ["vllm", "serve", profile.model.name_or_path]
    if profile.model.revision and profile.model.revision != "main":
        argv += ["--revision", profile.model.revision]
    argv += ["--enable-lora", "--lora-modules", f"{name}={adapter}",
             "--max-lora-rank", str(lora_rank_flag(rank)), *_common(profile)]
    if profile.model.chat_template:  # trained with a custom template: serve with it too
        argv += ["--chat-template", profile.model.chat_template]
    return argv


def check_command(argv: list[str], adapter_config: dict | None = None) -> list[str]:
    """Problems with a `vllm serve` command: a local path that does not exist, a LoRA
    module without adapter_config.json, a --max-lora-rank below the adapter's r."""
    problems = []
    if argv[:2] != ["vllm", "serve"] or len(argv) < 3:
        return [f"not a `vllm serve MODEL` command: {shlex.join(argv)}"]
    model = argv[2]
    if (model.startswith(("/", ".", "~")) or Path(model).exists()) and not (
            Path(model).expanduser() / "config.json").is_file():
        problems.append(f"model folder {model} has no config.json")
    if "--lora-modules" in argv:
        spec = argv[argv.index("--lora-modules") + 1]
        name, _, path = spec.partition("=")
        if not name or not (Path(path) / "adapter_config.json").is_file():
            problems.append(f"--lora-modules {spec}: expected NAME=PATH to an adapter folder")
        if "--enable-lora" not in argv:
            problems.append("--lora-modules without --enable-lora")
        rank = int(argv[argv.index("--max-lora-rank") + 1]) if "--max-lora-rank" in argv else 16
        r = (adapter_config or {}).get("r")
        if r is not None and rank < int(r):
            problems.append(f"--max-lora-rank {rank} is below the adapter's r = {r}")
    return problems


def export_vllm(run, profile, adapter_config: dict, target: Path, *, name: str,
                merged: Path | None, force: bool) -> dict:
    commands = {}
    if merged is not None:
        commands["merged"] = merged_command(profile, merged, name)
    commands["adapter"] = adapter_command(profile, run.adapter_dir, int(adapter_config["r"]),
                                          name)
    for which, argv in commands.items():
        problems = check_command(argv, adapter_config)
        if problems:
            raise ExportError(f"the vLLM command for the {which} model does not fit the run's "
                              "files: " + "; ".join(problems))
    system = profile.data.system_prompt
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": "Hello!"}]
    with staged_dir(target, force) as staging:
        lines = ["# vLLM for " + name, ""]
        for which, argv in commands.items():
            script = f"serve_{which}.sh"
            what = ("the merged model" if which == "merged"
                    else "the base model, with the adapter as a LoRA module")
            write_text(staging / script, SERVE_SCRIPT.format(
                what=f"Serve {what} with vLLM.", script=script, command=shlex.join(argv)),
                executable=True)
            lines += [f"Serve {what} ({script}):", "",
                      f"    ./{script}            # = {shlex.join(argv)} --host {LOCAL_HOST}", ""]
        lines += ["The scripts listen on 127.0.0.1 only (vLLM's own default is every "
                  "interface) unless you pass `--host`; any other argument goes to `vllm "
                  "serve` as is. On a GPU shared with other jobs, cap vLLM's memory (it takes "
                  "90% of the GPU by default):", "",
                  "    ./serve_merged.sh --gpu-memory-utilization 0.5 --max-model-len 4096", "",
                  "To require a key, `export VLLM_API_KEY=...` before starting (vLLM reads it; "
                  "the key never appears on the command line) and give clients the same "
                  "variable.", "",
                  "Then ask it (client.py, OpenAI-compatible API on 127.0.0.1:8000):", "",
                  "    python client.py", "",
                  "--max-lora-rank is the adapter's r rounded up to a value vLLM accepts "
                  f"({', '.join(map(str, VLLM_LORA_RANKS))}).", ""]
        write_text(staging / "README.md", "\n".join(lines))
        write_text(staging / "client.py", CLIENT.format(
            model=name, messages=messages, max_tokens=profile.eval.max_new_tokens))
    # What is printed and copied is what the scripts run: bound to 127.0.0.1.
    return {"path": str(target), "scripts": {k: str(target / f"serve_{k}.sh") for k in commands},
            "commands": {k: shlex.join([*v, "--host", LOCAL_HOST]) for k, v in commands.items()}}
