"""Finding a model's config.json without loading any weights: a local folder, a name from
assets/configs (`llama-3.1-8b`), the Hugging Face cache (offline, by hub id), or the hub
itself when a network is there (only config.json is fetched)."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from workbench.estimate.params import ConfigError

SHIPPED_CONFIGS = Path(__file__).resolve().parents[2] / "assets" / "configs"


# Hub ids whose architecture is shipped in assets/configs (base and instruct variants share
# one config), so presets estimate offline and without a hub round trip.
SHIPPED_HUB_IDS = {
    "meta-llama/llama-3.1-8b": "llama-3.1-8b", "meta-llama/llama-3.1-8b-instruct": "llama-3.1-8b",
    "mistralai/mistral-7b-v0.3": "mistral-7b-v0.3",
    "mistralai/mistral-7b-instruct-v0.3": "mistral-7b-v0.3",
    "qwen/qwen2.5-7b": "qwen2.5-7b", "qwen/qwen2.5-7b-instruct": "qwen2.5-7b",
    "qwen/qwen2.5-0.5b": "qwen2.5-0.5b", "qwen/qwen2.5-0.5b-instruct": "qwen2.5-0.5b",
    "microsoft/phi-3-mini-4k-instruct": "phi-3-mini-4k",
    "google/gemma-2-9b": "gemma-2-9b", "google/gemma-2-9b-it": "gemma-2-9b",
    "huggingfacetb/smollm2-360m": "smollm2-360m", "huggingfacetb/smollm2-360m-instruct": "smollm2-360m",
    "huggingfacetb/smollm2-1.7b": "smollm2-1.7b", "huggingfacetb/smollm2-1.7b-instruct": "smollm2-1.7b",
    "tinyllama/tinyllama-1.1b-chat-v1.0": "tinyllama-1.1b",
}


def shipped_config_names() -> list[str]:
    if not SHIPPED_CONFIGS.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_CONFIGS.iterdir() if (p / "config.json").is_file())


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def from_hf_cache(repo_id: str, revision: str = "main") -> Path | None:
    """config.json of a hub id already in the local cache (huggingface_hub's layout:
    models--org--name/refs/<revision> -> snapshots/<commit>/config.json)."""
    from workbench.hub import cache_dir

    repo = cache_dir() / ("models--" + repo_id.replace("/", "--"))
    if not repo.is_dir():
        return None
    ref = repo / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    candidate = repo / "snapshots" / commit / "config.json"
    if candidate.is_file():
        return candidate
    snapshots = sorted((repo / "snapshots").glob("*/config.json"),
                       key=lambda p: p.stat().st_mtime, reverse=True)
    return snapshots[0] if snapshots else None


def load_model_config(ref: str, revision: str = "main") -> tuple[dict, str]:
    """(config dict, where it came from). ConfigError with what to do next otherwise."""
    path = Path(ref).expanduser()
    if path.is_file() and path.name.endswith(".json"):
        return _read(path), str(path)
    if path.is_dir():
        if (path / "config.json").is_file():
            return _read(path / "config.json"), str(path / "config.json")
        raise ConfigError(f"{path} has no config.json; point --model at the model's folder "
                          f"(the one with config.json), or use a name: "
                          f"{', '.join(shipped_config_names())}")
    shipped = SHIPPED_CONFIGS / ref.lower() / "config.json"
    if "/" not in ref and shipped.is_file():
        return _read(shipped), str(shipped)
    if "/" in ref and not ref.startswith((".", "/", "~")):
        cached = from_hf_cache(ref, revision)
        if cached:
            return _read(cached), str(cached)
        known = SHIPPED_HUB_IDS.get(ref.lower())
        if known and (SHIPPED_CONFIGS / known / "config.json").is_file():
            return _read(SHIPPED_CONFIGS / known / "config.json"), f"{ref} (shipped copy: {known})"
        from workbench.hub import CONFIG, HubUnavailable, resolve_offline

        try:
            # Offline, or no network: fail now, not after huggingface_hub's five retries.
            resolve_offline(ref, revision, CONFIG)
        except HubUnavailable as exc:
            raise ConfigError(f"{exc.message}\n  hint: {exc.hint}; or pass --model with a "
                              f"folder holding its config.json, or a shipped name "
                              f"({', '.join(shipped_config_names())})") from None
        try:
            from huggingface_hub import hf_hub_download  # config.json only, never weights

            fetched = hf_hub_download(ref, "config.json", revision=revision)
            return _read(Path(fetched)), f"hub:{ref}"
        except Exception as exc:  # gated, missing, network gone: say so plainly
            raise ConfigError(f"could not fetch config.json of {ref!r} from the hub "
                              f"({type(exc).__name__}); download it, or pass a folder "
                              f"with its config.json") from exc
    close = difflib.get_close_matches(ref.lower(), shipped_config_names(), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"no model {ref!r}: not a folder, not a hub id (org/name), not a "
                      f"known name; {hint}known names: {', '.join(shipped_config_names())}")
