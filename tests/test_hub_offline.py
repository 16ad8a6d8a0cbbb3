"""No network and no HF_HUB_OFFLINE: one short probe, then the cache or one clear message,
never a minute of huggingface_hub retries (issue 11, point 1).

The command-line tests run the real `workbench` in a subprocess without HF_HUB_OFFLINE, with
HF_HOME in a temporary folder and HF_ENDPOINT on a local port nothing listens on, so the hub is
unreachable on any machine (the libraries send their requests there too)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DEMO_DATA, TINY_MODEL
from workbench import hub

FAST_S = 15.0  # without the probe: ~35-50 s of "Retrying in 8s [Retry 5/5]"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def closed_endpoint() -> str:
    """http://127.0.0.1:PORT where nothing listens (a port just bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def online_env(hf_home: Path) -> dict:
    """The environment of someone who never set HF_HUB_OFFLINE, on a machine without a network."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
                        "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")
           and not k.lower().endswith("_proxy")}
    env.update(HF_HOME=str(hf_home), HF_ENDPOINT=closed_endpoint(), PYTHONUNBUFFERED="1")
    return env


def run_cli(*args: str, env: dict, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "workbench", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc, time.monotonic() - started


def cache_tiny_model(hf_home: Path, repo_id: str = "org/tiny") -> Path:
    """The bundled tiny model laid out as huggingface_hub caches a download."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(TINY_MODEL, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def write_profile(tmp_path: Path, model: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(f'name = "p"\n[model]\nname_or_path = "{model}"\n'
                    f'[data]\ntrain = "{DEMO_DATA}"\n[train]\nmax_seq_len = 128\n')
    return path


# ---- the real command line ------------------------------------------------------------------

def test_estimate_of_an_uncached_hub_model_fails_fast_with_one_message(tmp_path):
    proc, took = run_cli("estimate", "--model", "someorg/not-cached", env=online_env(tmp_path / "hf"),
                         cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert took < FAST_S, f"took {took:.1f} s:\n{proc.stderr}"
    err = proc.stderr
    assert "cannot reach the Hugging Face Hub" in err and "'someorg/not-cached'" in err
    assert "HF_HUB_OFFLINE=1" in err and str(tmp_path / "hf" / "hub") in err
    assert "Retrying" not in err and "Traceback" not in err


def test_run_of_an_uncached_hub_model_fails_fast_before_creating_a_run(tmp_path):
    profile = write_profile(tmp_path, "someorg/not-cached")
    proc, took = run_cli("run", str(profile), "--runs-dir", str(tmp_path / "runs"),
                         env=online_env(tmp_path / "hf"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert took < FAST_S, f"took {took:.1f} s:\n{proc.stderr}"
    assert "model.name_or_path = 'someorg/not-cached' is not in the Hugging Face cache" in proc.stderr
    assert "HF_HUB_OFFLINE=1" in proc.stderr and "Retrying" not in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_the_issue_run_against_the_real_hub_address(tmp_path, monkeypatch):
    """`workbench run qwen2.5-0.5b-lora` as reported: here huggingface.co itself is
    unreachable (skipped where it is reachable: that would start a real download)."""
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    if hub.hub_reachable():
        pytest.skip("the Hugging Face Hub is reachable from here")
    env = online_env(tmp_path / "hf")
    del env["HF_ENDPOINT"]
    proc, took = run_cli("run", "qwen2.5-0.5b-lora", "--runs-dir", str(tmp_path / "runs"),
                         env=env, cwd=tmp_path)
    assert proc.returncode == 2 and took < FAST_S, f"took {took:.1f} s:\n{proc.stderr}"
    assert "cannot reach the Hugging Face Hub (huggingface.co:443: " in proc.stderr
    assert "HF_HUB_OFFLINE=1" in proc.stderr and "Retrying" not in proc.stderr


def test_shipped_config_estimate_needs_no_network(tmp_path):
    proc, took = run_cli("estimate", "llama3.1-8b-qlora", "--no-count-data", "--gpu", "h100",
                         env=online_env(tmp_path / "hf"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "shipped copy: llama-3.1-8b" in proc.stdout
    assert took < FAST_S and proc.stderr == ""


def test_shipped_config_estimate_counting_data_falls_back_at_once(tmp_path):
    """The preset's tokenizer is not cached: the token count says why, and nothing retries."""
    proc, took = run_cli("estimate", "llama3.1-8b-qlora", "--gpu", "h100", "--json",
                         env=online_env(tmp_path / "hf"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["dataset_tokens"] is None
    assert "cannot reach the Hugging Face Hub" in report["dataset_tokens_source"]
    assert took < FAST_S and "Retrying" not in proc.stderr
    # the run is not priced from one step of batch x seq; the text output says why
    assert report["time"]["seconds"] is None and report["time"]["usd"] is None
    assert all(c["usd"] is None for c in report["cost"].values())
    text, _ = run_cli("estimate", "llama3.1-8b-qlora", "--gpu", "h100",
                      env=online_env(tmp_path / "hf"), cwd=tmp_path)
    assert "data: not counted" in text.stdout and "the run is not timed or priced" in text.stdout


def test_cached_hub_model_is_used_without_the_network(tmp_path, needs_tiny_model):
    """config.json and the tokenizer come from the cache: the data is counted with the cached
    tokenizer, at once, with no network error on stderr."""
    cache_tiny_model(tmp_path / "hf")
    profile = write_profile(tmp_path, "org/tiny")
    proc, took = run_cli("estimate", str(profile), "--gpu", "h100", "--json",
                         env=online_env(tmp_path / "hf"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["model_source"].endswith(f"{COMMIT}/config.json")
    assert isinstance(report["dataset_tokens"], int) and report["dataset_tokens"] > 0, report
    assert took < FAST_S, f"took {took:.1f} s:\n{proc.stderr}"
    assert "Retrying" not in proc.stderr and "thrown while requesting" not in proc.stderr


def test_hub_dataset_without_a_network_fails_fast(tmp_path):
    proc, took = run_cli("data", "inspect", "someone/some-dataset",
                         env=online_env(tmp_path / "hf"), cwd=tmp_path)
    assert proc.returncode == 2
    assert took < FAST_S and "Retrying" not in proc.stderr
    assert proc.stderr.startswith("error: someone/some-dataset: cannot reach the Hugging Face Hub")
    assert "this Hub dataset is not in the Hugging Face cache" in proc.stderr
    assert "HF_HUB_OFFLINE=1" in proc.stderr


# ---- workbench.hub in this process ----------------------------------------------------------

@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty cache, no probe remembered, the offline switch restored afterwards."""
    from huggingface_hub import constants

    monkeypatch.setattr(hub, "_probed", {})
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", closed_endpoint())
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "")  # registered, so monkeypatch restores what was there
    return tmp_path / "hub"


def test_unreachable_hub_switches_this_process_offline(fresh):
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = False
    started = time.monotonic()
    with pytest.raises(hub.HubUnavailable) as err:
        hub.resolve_offline("someorg/x", needs=hub.CONFIG)
    assert time.monotonic() - started < 3 * hub.PROBE_TIMEOUT_S
    assert str(fresh) in err.value.message and "HF_HUB_OFFLINE=1" in err.value.hint
    # Later loads in this process go straight to the cache.
    assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE is True


def test_cached_model_resolves_offline_and_local_folders_are_left_alone(fresh, needs_tiny_model):
    cache_tiny_model(fresh.parent, "org/tiny")
    assert hub.resolve_offline("org/tiny", needs=hub.TOKENIZER) is True
    assert hub.missing_parts("org/tiny") == []
    assert hub.missing_parts("org/other") == ["config.json", "tokenizer", "weights"]
    assert hub.resolve_offline(str(TINY_MODEL)) is False


def test_offline_env_and_an_uncached_id_name_the_cache(fresh, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.HubUnavailable) as err:
        hub.resolve_offline("someorg/x")
    assert "HF_HUB_OFFLINE=1 is set" in err.value.message and str(fresh) in err.value.message
    assert hub._probed == {}  # offline means no probe either


def test_probe_goes_through_a_configured_proxy(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.org")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.local:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert hub.probe_address() == ("proxy.local", 3128, "the proxy proxy.local:3128")
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.delenv("https_proxy", raising=False)
    assert hub.probe_address() == ("hub.example.org", 443, "hub.example.org:443")


def test_sharded_weights_count_only_when_every_shard_is_cached(fresh, needs_tiny_model):
    snapshot = cache_tiny_model(fresh.parent, "org/sharded")
    (snapshot / "model.safetensors").unlink()
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors",
                            "b": "model-00002-of-00002.safetensors"}}
    (snapshot / "model.safetensors.index.json").write_text(json.dumps(index))
    (snapshot / "model-00001-of-00002.safetensors").write_bytes(b"x")
    assert hub.missing_parts("org/sharded") == ["weights"]
    (snapshot / "model-00002-of-00002.safetensors").write_bytes(b"x")
    assert hub.missing_parts("org/sharded") == []
