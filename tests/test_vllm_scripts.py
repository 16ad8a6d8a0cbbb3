"""The vLLM serve scripts, run for real by /bin/sh: a `vllm` executable placed first on PATH
records the argv and environment the script hands it (it stands in for the server binary the
script execs, not for anything the workbench does). Safe by default: 127.0.0.1 unless --host
is given, every extra argument passed through, the key read from VLLM_API_KEY and never put
on the command line."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from test_export_support import make_run

from workbench.export.cli import main

RECORDER = """#!/bin/sh
# Records what the serve script executed: argv (one JSON list) and whether a key came through.
python3 - "$@" <<'EOF'
import json, os, sys
with open(os.environ["VLLM_RECORD"], "w") as fh:
    json.dump({"argv": sys.argv[1:], "key": os.environ.get("VLLM_API_KEY")}, fh)
EOF
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("runs"), r=8)
    assert main([str(run.path), "--format", "merged,vllm", "--name", "tiny"]) == 0
    return run


@pytest.fixture
def serve(run, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vllm").write_text(RECORDER)
    (bin_dir / "vllm").chmod(0o755)
    record = tmp_path / "record.json"

    def call(script: str, *args: str, key: str | None = None):
        env = {k: v for k, v in os.environ.items() if k != "VLLM_API_KEY"}
        env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", VLLM_RECORD=str(record))
        if key is not None:
            env["VLLM_API_KEY"] = key
        proc = subprocess.run(["/bin/sh", str(run.path / "export" / "vllm" / script), *args],
                              env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        got = json.loads(record.read_text())
        return got["argv"], got["key"], proc.stderr
    return call


def _host(argv: list[str]) -> list[str]:
    hosts = [argv[i + 1] for i, a in enumerate(argv) if a == "--host"]
    return hosts + [a.split("=", 1)[1] for a in argv if a.startswith("--host=")]


@pytest.mark.parametrize("script", ["serve_merged.sh", "serve_adapter.sh"])
def test_binds_localhost_by_default(serve, run, script):
    argv, key, err = serve(script)
    assert argv[0] == "serve" and _host(argv) == ["127.0.0.1"]
    if script == "serve_merged.sh":
        assert argv[1] == str(run.path / "export" / "merged")
    else:
        assert "--enable-lora" in argv and "--lora-modules" in argv
    assert key is None and "no VLLM_API_KEY" in err


@pytest.mark.parametrize("host_args", [["--host", "0.0.0.0"], ["--host=0.0.0.0"]])
def test_host_given_replaces_the_default(serve, host_args):
    argv, _, _ = serve("serve_merged.sh", *host_args)
    assert _host(argv) == ["0.0.0.0"] and "127.0.0.1" not in argv


def test_extra_arguments_pass_through_unchanged(serve):
    extra = ["--gpu-memory-utilization", "0.5", "--max-model-len", "2048",
             "--chat-template", "/tmp/a dir/with 'quotes'.jinja"]
    argv, _, _ = serve("serve_merged.sh", *extra)
    assert argv[-len(extra):] == extra  # last: vLLM's argparse lets them override ours
    assert _host(argv) == ["127.0.0.1"]


def test_api_key_comes_from_the_environment_not_the_command_line(serve):
    argv, key, err = serve("serve_adapter.sh", key="s3cret-key")
    assert key == "s3cret-key" and "s3cret-key" not in " ".join(argv)
    assert "no VLLM_API_KEY" not in err


def test_printed_commands_and_readme_are_safe(run, capsys):
    folder = run.path / "export" / "vllm"
    code = main([str(run.path), "--format", "vllm", "--name", "tiny", "--force", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    for command in out["formats"]["vllm"]["commands"].values():
        assert _host(shlex.split(command)) == ["127.0.0.1"]
    readme = (folder / "README.md").read_text()
    assert "--gpu-memory-utilization" in readme and "VLLM_API_KEY" in readme
    client = (folder / "client.py").read_text()
    assert "127.0.0.1:8000" in client and 'os.environ.get("VLLM_API_KEY"' in client
    for script in ("serve_merged.sh", "serve_adapter.sh"):
        assert os.access(folder / script, os.X_OK)
        subprocess.run(["/bin/sh", "-n", str(folder / script)], check=True)
        assert Path(folder / script).read_text().rstrip().endswith('"$@"')
