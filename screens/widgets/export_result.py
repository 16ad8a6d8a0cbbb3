"""The Export screen's pieces that turn the export's JSON into text (no I/O)."""

from __future__ import annotations

NOISE = ("Loading weights", "warnings.warn(", "FutureWarning", "Failed to load CPU gemm_4bit")


def progress_line(line: str) -> str | None:
    """A line of the export's stderr worth showing, or None (progress bars, warnings)."""
    line = line.rstrip()
    if not line.strip() or any(n in line for n in NOISE):
        return None
    return line


def proof_text(proof: dict | None) -> str:
    if not proof:
        return "proof: none (no merged model in this export)"
    if proof.get("ok"):
        tol = f"{proof.get('atol', 0):g}"
        if proof.get("rtol"):
            tol += f" + {proof['rtol']:g} x max|logit|"
        return (f"[$success]proof passed[/]: {proof.get('prompts')} prompts, "
                f"{proof.get('tokens_compared')} greedy tokens identical, max |logit diff| "
                f"{proof.get('max_logit_diff', 0):.2e} (tolerance {tol}, {proof.get('dtype')})")
    return f"[$error]proof FAILED[/]: {proof}"


def commands_of(out: dict) -> dict[str, list[str]]:
    """{"ollama": [...], "vllm": [...]} from the export's JSON."""
    formats = out.get("formats", {})
    cmds: dict[str, list[str]] = {}
    if "ollama" in formats and formats["ollama"].get("command"):
        cmds["ollama"] = [formats["ollama"]["command"]]
    if "vllm" in formats:
        cmds["vllm"] = list((formats["vllm"].get("commands") or {}).values())
    return cmds


def error_text(out: dict) -> str:
    if out.get("evidence") is not None:
        return f"the merged model does not answer like the adapter model; nothing was exported\n{out['evidence']}"
    text = str(out.get("error") or "export failed")
    if out.get("hint"):
        text += f"\nhint: {out['hint']}"
    return text
