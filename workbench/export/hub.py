"""Push an export folder to the Hugging Face Hub. The token comes from the environment
(HF_TOKEN) only: it is never an argument, never written to a file, and scrubbed from every
message that could carry it."""

from __future__ import annotations

import os
from pathlib import Path

from workbench.export.common import ExportError


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def push_folder(folder: Path, repo_id: str, log=print) -> str:
    token = os.environ.get("HF_TOKEN", "")
    if not token:
        raise ExportError("--push-to-hub needs a Hugging Face token in the HF_TOKEN environment "
                          "variable", hint="export HF_TOKEN=... (a write token from "
                                           "https://huggingface.co/settings/tokens), then retry")
    try:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        log(f"pushing {folder} to https://huggingface.co/{repo_id}")
        api.create_repo(repo_id, private=True, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id,
                                   commit_message="Upload from workbench export")
    except Exception as exc:  # offline, auth, network: all end the same way for the person
        first = _scrub(str(exc).splitlines()[0] if str(exc) else "", token)
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = ("HF_HUB_OFFLINE=1 is set: unset it on a machine with internet access"
                if offline else "check the repo name, the token's write permission and the network")
        raise ExportError(f"push to the Hub ({repo_id}) failed: {type(exc).__name__}: {first}; "
                          f"the export itself is complete in {folder}", hint=hint) from None
    return str(getattr(commit, "commit_url", commit))
