"""vLLM: the exact `vllm serve` commands (the merged model; the base with the adapter as a
LoRA module) and an OpenAI-compatible client snippet, checked against the run's files."""

from __future__ import annotations

import shlex
from pathlib import Path

from workbench.export.common import ExportError, staged_dir, write_text

# vLLM accepts only these values for --max-lora-rank; the adapter's r is rounded up to one.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

CLIENT = '''"""Ask the model served by `vllm serve` (OpenAI-compatible API; pip install openai)."""
from openai import OpenAI

client = OpenAI(base_url="http://localhost:8000/v1", api_key="EMPTY")  # vLLM needs no key
response = client.chat.completions.create(
    model={model!r},  # the merged model's name, or the LoRA module's name
    messages={messages!r},
    temperature=0.0,
    max_tokens={max_tokens},
)
print(response.choices[0].message.content)
'''


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
            write_text(staging / script, "#!/bin/sh\nset -e\nexec " + shlex.join(argv) + "\n",
                       executable=True)
            what = ("the merged model" if which == "merged"
                    else "the base model, with the adapter as a LoRA module")
            lines += [f"Serve {what} ({script}):", "", "    " + shlex.join(argv), ""]
        lines += ["Then ask it (client.py, OpenAI-compatible API on port 8000):", "",
                  "    python client.py", "",
                  "--max-lora-rank is the adapter's r rounded up to a value vLLM accepts "
                  f"({', '.join(map(str, VLLM_LORA_RANKS))}).", ""]
        write_text(staging / "README.md", "\n".join(lines))
        write_text(staging / "client.py", CLIENT.format(
            model=name, messages=messages, max_tokens=profile.eval.max_new_tokens))
    return {"path": str(target), "commands": {k: shlex.join(v) for k, v in commands.items()}}
