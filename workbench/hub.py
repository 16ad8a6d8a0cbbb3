"""Reaching the Hugging Face Hub: the local cache first, one short probe, one clear message.

Without HF_HUB_OFFLINE=1 and without a network, huggingface_hub retries every request five
times with back-off: about 50 s of "Name or service not known ... Retrying in 8s" before it
fails, even for a model whose files are all in the local cache. So before any hub access the
engine calls `resolve_offline`, which probes the hub once (a TCP connect, ~2 s at most) and,
when it does not answer, switches this process to offline mode: cached files then load at once,
and a model that is not cached fails at once with a message naming the cache and
HF_HUB_OFFLINE=1.

Light on purpose (standard library at import; huggingface_hub only inside functions), because
`workbench profile validate` uses it and must answer at once.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 2.0

# What "in the cache" means, per use: any one of a group's files will do.
CONFIG = ("config.json",)
TOKENIZER = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "vocab.json",
             "vocab.txt", "spiece.model")
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
           "pytorch_model.bin.index.json")
MODEL_PARTS = {"config.json": CONFIG, "tokenizer": TOKENIZER, "weights": WEIGHTS}

# One probe per address and process: None when it answered, else why not.
_probed: dict[tuple[str, int], str | None] = {}


class HubUnavailable(Exception):
    """The hub is needed and cannot be used; `hint` says what to do."""

    def __init__(self, message: str, hint: str):
        super().__init__(f"{message}\n  hint: {hint}")
        self.message = message
        self.hint = hint


# ---- environment ------------------------------------------------------------------------------

def _env_true(name: str) -> bool:
    # huggingface_hub's own rule (constants._is_true).
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def is_offline() -> bool:
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def cache_dir() -> Path:
    """The hub cache, by huggingface_hub's rule (HF_HUB_CACHE, else HF_HOME/hub, else
    ~/.cache/huggingface/hub). Read from the environment now rather than taken from
    huggingface_hub.constants, which freeze it when that module is first imported."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.path.expandvars(os.path.expanduser(os.environ[name])))
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def go_offline() -> None:
    """Offline mode for the rest of this process (and the processes it starts). The libraries
    read HF_HUB_OFFLINE once, at import: set the variable for those not imported yet, and
    their module flags for those already imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_config.HF_HUB_OFFLINE = datasets_config.HF_DATASETS_OFFLINE = True


# ---- the probe ----------------------------------------------------------------------------------

def probe_address() -> tuple[str, int, str]:
    """(host, port, what it is) that a hub request would connect to first: HF_ENDPOINT's host,
    or the proxy that requests to it go through (a direct connect fails behind a proxy)."""
    endpoint = os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    url = urllib.parse.urlsplit(endpoint)
    host = url.hostname or "huggingface.co"
    proxy = urllib.request.getproxies().get(url.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(host):
        parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parsed.hostname:
            port = parsed.port or 80
            return parsed.hostname, port, f"the proxy {parsed.hostname}:{port}"
    port = url.port or (80 if url.scheme == "http" else 443)
    return host, port, f"{host}:{port}"


def _connect(address: tuple[str, int], timeout: float, result: list[str | None]) -> None:
    try:
        with socket.create_connection(address, timeout=timeout):
            result.append(None)
    except socket.timeout:
        result.append(f"no answer within {timeout:g} s")
    except OSError as exc:  # "Name or service not known", "Connection refused", ...
        result.append(exc.strerror or str(exc) or type(exc).__name__)


def probe(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when the hub (or its proxy) accepts a TCP connection within `timeout`, else the
    reason it did not. Run in a thread so that a slow DNS lookup, which the socket timeout
    does not cover, is bounded too. A TCP connect rather than an HTTPS request: no certificate
    store to agree on with the libraries (corporate CAs), and it is what fails without a
    network: the name does not resolve, the connection is refused or dropped."""
    host, port, _ = probe_address()
    if (host, port) not in _probed:
        result: list[str | None] = []
        thread = threading.Thread(target=_connect, args=((host, port), timeout, result),
                                  daemon=True)
        thread.start()
        thread.join(timeout + 0.5)
        _probed[(host, port)] = result[0] if result else f"no answer within {timeout:g} s"
    return _probed[(host, port)]


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    return probe(timeout) is None


# ---- the cache ----------------------------------------------------------------------------------

def cached_file(repo_id: str, filename: str, revision: str = "main",
                repo_type: str = "model") -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir(),
                                       revision=revision, repo_type=repo_type)
    except ValueError:  # not a valid repo id or file name: certainly not cached
        return None
    return Path(found) if isinstance(found, str) else None


def _weights_cached(repo_id: str, revision: str) -> bool:
    for name in WEIGHTS:
        found = cached_file(repo_id, name, revision)
        if found is None:
            continue
        if not name.endswith(".index.json"):
            return True
        # A sharded checkpoint is cached only when every shard its index names is.
        try:
            shards = set(json.loads(found.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            continue
        if all(cached_file(repo_id, shard, revision) for shard in shards):
            return True
    return False


def is_cached(repo_id: str, revision: str = "main", needs: tuple[str, ...] = CONFIG,
              repo_type: str = "model") -> bool:
    """Whether any one of `needs` is in the local cache for this revision."""
    if needs == WEIGHTS:
        return _weights_cached(repo_id, revision)
    return any(cached_file(repo_id, name, revision, repo_type) for name in needs)


def missing_parts(repo_id: str, revision: str = "main") -> list[str]:
    """What a run would still download: among "config.json", "tokenizer", "weights"."""
    return [part for part, needs in MODEL_PARTS.items() if not is_cached(repo_id, revision, needs)]


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def is_local(ref: str) -> bool:
    """A path on this machine, or something that cannot be a hub id (an absolute or relative
    path that does not exist): transformers' own error says what is missing there."""
    return Path(ref).expanduser().exists() or not _HUB_ID.match(ref)


def closest_entry(path: Path) -> Path | None:
    """The existing entry next to a missing `path` whose name is closest to its name (a typo:
    `tiny-modle` -> `tiny-model`), or None when its folder holds nothing alike."""
    import difflib

    try:
        names = [p.name for p in path.parent.iterdir() if not p.name.startswith(".")]
    except OSError:
        return None
    match = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    return path.parent / match[0] if match else None


def mistyped_local(ref: str, base: Path | None = None) -> Path | None:
    """`assets/tiny-modle`: written like a hub id (owner/name), but its first part is a folder
    here (relative to `base`, else the current folder) holding something with a name close to
    the last part. Then it is a mistyped local path, not a model to download: returns the
    closest existing entry. None otherwise (a real hub id, or nothing alike here)."""
    if not ref or "/" not in ref or Path(ref).is_absolute():
        return None
    path = Path(base or Path.cwd()) / Path(ref).expanduser()
    if path.exists() or not path.parent.is_dir():
        return None
    return closest_entry(path)


class LocalFolderMissing(HubUnavailable):
    """A name that reads as a local path (mistyped_local) and names nothing: no hub to reach."""


def missing_folder_error(ref: str, label: str = "", base: Path | None = None) -> LocalFolderMissing | None:
    closest = mistyped_local(ref, base)
    if closest is None:
        return None
    path = Path(base or Path.cwd()) / ref
    shown = closest if base else Path(os.path.relpath(closest))
    return LocalFolderMissing(
        f"{label or repr(ref)}: no such folder {path} ({path.parent.name}/ is a local folder, so "
        "this is read as a path, not a Hugging Face Hub id)",
        f"did you mean {shown}? (the closest name in {path.parent})")


# ---- the decision -------------------------------------------------------------------------------

def _download_hint(repo_id: str, repo_type: str) -> str:
    flag = "" if repo_type == "model" else f" --repo-type {repo_type}"
    return (f"`hf download {repo_id}{flag}` on a machine with a network fills its cache; copy "
            f"that to {cache_dir()} (or point HF_HOME at the copy)")


def unreachable(label: str, repo_id: str, repo_type: str = "model", why: str = "") -> HubUnavailable:
    address, reason = probe_address()[2], probe() or "no answer"
    message = (f"cannot reach the Hugging Face Hub ({address}: {reason}), and {label} "
               f"{why or f'is not in the Hugging Face cache ({cache_dir()})'}")
    return HubUnavailable(message, _download_hint(repo_id, repo_type) +
                          "; set HF_HUB_OFFLINE=1 to use only the cache and skip this check")


def resolve_offline(repo_id: str, revision: str = "main", needs: tuple[str, ...] = CONFIG,
                    label: str = "", repo_type: str = "model") -> bool:
    """Call before loading `needs` of `repo_id` through huggingface_hub / transformers.

    Local paths are left alone. With HF_HUB_OFFLINE set, an id that is not cached fails here.
    Without it, one short probe: a reachable hub is used as usual; an unreachable one switches
    this process offline (go_offline), so a cached id loads at once and an uncached one fails
    here. Returns True when the hub will not be contacted; raises HubUnavailable."""
    if is_local(repo_id):
        return False
    missing = missing_folder_error(repo_id, label)
    if missing is not None:  # `assets/tiny-modle`: a typo of a folder here, not a model to fetch
        raise missing
    label = label or repr(repo_id)
    cached = is_cached(repo_id, revision or "main", needs, repo_type)
    if is_offline():
        if cached:
            return True
        raise HubUnavailable(
            f"{label} is not in the Hugging Face cache ({cache_dir()}), and "
            "HF_HUB_OFFLINE=1 is set, so nothing is downloaded",
            "unset HF_HUB_OFFLINE where the hub is reachable to download it; or "
            + _download_hint(repo_id, repo_type))
    if hub_reachable():
        return False
    go_offline()
    if not cached:
        raise unreachable(label, repo_id, repo_type)
    return True


def require_hub(repo_id: str, label: str = "", repo_type: str = "dataset", why: str = "") -> None:
    """For what the cache cannot serve (a streamed dataset): the hub must answer now."""
    if not hub_reachable():
        go_offline()
        raise unreachable(label or repr(repo_id), repo_id, repo_type, why)


def quiet_offline_kernel_notice() -> None:
    """bitsandbytes (imported by peft) asks the `kernels` package for a hub kernel; offline,
    `kernels` warns on every import that it skips the publisher check. Nothing for the user to
    do: keep it out of every command's output (the kernel is not used either way)."""
    import logging

    logging.getLogger("kernels").setLevel(logging.ERROR)
