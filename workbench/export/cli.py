"""`workbench export RUN --format merged|bnb4|gguf|ollama|vllm [--format ...]`

    --name NAME          model name for Ollama and vLLM (default: the run's name)
    --quant Q            with gguf: also write a quantized GGUF (q4_K_M, q5_K_M, q8_0;
                         repeatable or comma-separated), through llama.cpp's quantizer
    --gguf-type T        with gguf: the full-precision file, f16 / bf16 / f32 (default: bf16
                         for a bf16 run, f16 otherwise)
    --adapter-only       no merge: Ollama gets FROM base + ADAPTER, vLLM only the LoRA command
    --force              replace existing export folders
    --push-to-hub REPO   upload the merged model (the adapter with --adapter-only); the token
                         is read from HF_TOKEN, never from the command line
    --json               one JSON object on stdout (progress goes to stderr)

Everything lands in RUN/export/<format>/, each written to a temporary folder and renamed when
complete. Formats that need the merged model (bnb4, gguf, ollama, vllm) reuse a verified
RUN/export/merged or make it first.

Exit codes: 0 done; 1 the proof failed (the merged model does not answer like the adapter
model; evidence printed, nothing written) or the push failed; 2 a problem with the input or
this machine (message and hint, no traceback, nothing written).

No torch / transformers import at module level: `workbench --help` must stay instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from workbench.export.common import (FACES, FORMATS, GGUF_TYPES, ExportError, ProofFailed,
                                     check_adapter_ready, check_base_model, check_targets_free,
                                     export_dir, model_name, run_profile)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
NEEDS_MERGED = ("bnb4", "gguf")


def add_export_command(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export", help="merge, quantize and package a run's adapter (Ollama, vLLM, GGUF)",
        description="Export a finished run: the merged model (proven to answer like the adapter "
                    "model), a 4-bit bitsandbytes copy, an Ollama package, vLLM commands, GGUF.")
    p.add_argument("run_ref", metavar="RUN", help="run folder or name")
    p.add_argument("--format", dest="formats", action="append", metavar="FORMAT",
                   help=f"one of {', '.join(FORMATS)} (repeatable, or comma-separated; "
                        "default: the profile's export.formats)")
    p.add_argument("--name", help="model name for Ollama / vLLM (default: the run's name)")
    p.add_argument("--quant", dest="quants", action="append", metavar="Q",
                   help="with --format gguf: also quantize (q4_K_M, q5_K_M, q8_0; repeatable)")
    p.add_argument("--gguf-type", choices=GGUF_TYPES,
                   help="with --format gguf: the full-precision file's type (default: bf16 for a "
                        "bf16 run, f16 otherwise)")
    p.add_argument("--adapter-only", action="store_true",
                   help="do not merge: Ollama uses FROM base + ADAPTER, vLLM serves the LoRA")
    p.add_argument("--force", action="store_true", help="replace existing export folders")
    p.add_argument("--push-to-hub", metavar="REPO", help="upload to this Hub repo (token from HF_TOKEN)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--runs-dir", type=Path)
    # The app runs this command: its hints name the app's tick boxes, not the flags.
    p.add_argument("--hints-for", choices=FACES, default="cli", help=argparse.SUPPRESS)
    p.set_defaults(handler=cmd_export)
    return p


def _formats(requested: list[str] | None, default: list[str]) -> list[str]:
    names = [f.strip() for item in (requested or default) for f in item.split(",") if f.strip()]
    unknown = [f for f in names if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown export format {', '.join(map(repr, unknown))}",
                          hint=f"choose from {', '.join(FORMATS)}")
    if not names:
        raise ExportError("no export format given and the profile's export.formats is empty",
                          hint="pass --format merged (or ollama, vllm, bnb4, gguf)")
    return [f for f in FORMATS if f in names]


def _verified_merged(folder: Path) -> bool:
    try:
        return json.loads((folder / "verify.json").read_text(encoding="utf-8")).get("ok") is True
    except (OSError, ValueError):
        return False


def _ollama_gguf(gguf: dict) -> tuple[str, bool]:
    """The GGUF Ollama imports (FROM): the first --quant asked for, else the full-precision
    file; and whether it is already quantized (then `ollama create` gets no --quantize)."""
    quantized = [k for k in gguf["files"] if k != gguf["outtype"]]
    kind = quantized[0] if quantized else gguf["outtype"]
    return gguf["files"][kind]["path"], bool(quantized)


def _quiet() -> None:
    import warnings

    from workbench.quiet import quiet_libraries

    quiet_libraries()
    # Merging and reloading repeat peft / transformers UserWarnings that say nothing new here.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|peft)\b")


def run_export(args, log) -> dict:
    """The whole export; raises ExportError / ProofFailed. Returns what the CLI prints."""
    from workbench.rundir import RunNotFound, find_run

    try:
        run = find_run(args.run_ref, args.runs_dir)
    except RunNotFound as exc:
        raise ExportError(str(exc)) from exc
    check_adapter_ready(run)
    profile = run_profile(run)
    adapter_config = check_base_model(run, profile)
    formats = _formats(args.formats, profile.export.formats)
    name = model_name(run, args.name)
    notes: list[str] = []

    if args.adapter_only:
        clash = [f for f in formats if f in ("merged", *NEEDS_MERGED)]
        if clash:
            raise ExportError(f"--adapter-only skips the merge, but {', '.join(clash)} "
                              "needs the merged model", hint="drop --adapter-only, or those formats")
    merged_dir = export_dir(run, "merged")
    make_merged = "merged" in formats
    if not args.adapter_only and not make_merged and (
            set(formats) & {"bnb4", "gguf", "ollama", "vllm"}):
        if _verified_merged(merged_dir):
            notes.append(f"using the verified merged model in {merged_dir}")
        else:
            make_merged = True
            notes.append("the merged model is needed first: merging")
    planned = ["merged"] * make_merged + [f for f in formats if f != "merged"]
    check_targets_free([export_dir(run, f) for f in planned], args.force)

    # Refusals that need no model come before any work.
    if "bnb4" in planned:
        from workbench.export.bnb4 import require_gpu

        require_gpu()
    quants = [q.strip() for item in (getattr(args, "quants", None) or []) for q in item.split(",")
              if q.strip()]
    if quants and "gguf" not in planned:
        raise ExportError("--quant quantizes the GGUF file, but gguf is not among the formats",
                          hint="add --format gguf")
    if "gguf" in planned:
        from workbench.export.gguf import check_quants, require_converter

        require_converter()
        quants = check_quants(quants)
    if args.push_to_hub:
        import os

        if not os.environ.get("HF_TOKEN"):
            from workbench.export.hub import push_folder

            push_folder(run.adapter_dir, args.push_to_hub)  # raises the "set HF_TOKEN" message

    for note in notes:
        log(note)
    _quiet()
    out: dict = {"run": run.name, "run_dir": str(run.path), "name": name, "formats": {},
                 "notes": notes, "commands": []}
    dtype_name = "float32"
    if make_merged:
        from workbench.export.merge import export_merged

        result = export_merged(run, profile, merged_dir, args.force, log=log)
        out["formats"]["merged"] = result
        out["proof"] = result["proof"]
        dtype_name = result["dtype"]
    elif _verified_merged(merged_dir):
        out["proof"] = json.loads((merged_dir / "verify.json").read_text(encoding="utf-8"))
        dtype_name = out["proof"].get("dtype", dtype_name)
    merged = None if args.adapter_only else merged_dir

    if "bnb4" in formats:
        from workbench.export.bnb4 import export_bnb4

        out["formats"]["bnb4"] = export_bnb4(merged_dir, export_dir(run, "bnb4"), force=args.force,
                                             trust_remote_code=profile.model.trust_remote_code,
                                             log=log)
    if "gguf" in formats:
        from workbench.export.gguf import export_gguf

        out["formats"]["gguf"] = export_gguf(merged_dir, export_dir(run, "gguf"), name=name,
                                             dtype_name=dtype_name, force=args.force,
                                             quants=quants, outtype=getattr(args, "gguf_type", None),
                                             profile=profile, log=log)
    if "ollama" in formats:
        from workbench.export.ollama import export_ollama

        if merged is not None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(merged))
        else:
            from workbench.train.plan import RunError, load_tokenizer

            try:
                tokenizer = load_tokenizer(profile)
            except RunError as exc:
                raise ExportError(exc.message, exc.hint) from exc
        gguf = out["formats"].get("gguf")
        result = export_ollama(run, profile, tokenizer, export_dir(run, "ollama"), name=name,
                               merged=merged, force=args.force,
                               gguf=_ollama_gguf(gguf) if gguf else None)
        out["formats"]["ollama"] = result
        out["commands"].append(result["command"])
    if "vllm" in formats:
        from workbench.export.vllm import export_vllm

        result = export_vllm(run, profile, adapter_config, export_dir(run, "vllm"), name=name,
                             merged=merged, force=args.force)
        out["formats"]["vllm"] = result
        out["commands"] += list(result["commands"].values())

    if args.push_to_hub:
        from workbench.export.hub import push_folder

        folder = run.adapter_dir if args.adapter_only else merged_dir
        out["hub"] = {"repo": args.push_to_hub, "url": push_folder(folder, args.push_to_hub, log)}
    return out


def _print_human(out: dict) -> None:
    print(f"\nexported {out['run']} ({out['run_dir']})")
    for fmt, result in out["formats"].items():
        print(f"  {fmt:<7} {result['path']}")
    proof = out.get("proof")
    if proof:
        print(f"proof: {'passed' if proof['ok'] else 'FAILED'}: {proof['prompts']} prompts, "
              f"{proof['tokens_compared']} greedy tokens identical, max |logit diff| "
              f"{proof['max_logit_diff']:.2e} (tolerance {proof['atol']:g}"
              + (f" + {proof['rtol']:g} x max|logit|" if proof["rtol"] else "")
              + f", {proof['dtype']})")
    gguf_proof = (out["formats"].get("gguf") or {}).get("proof")
    if gguf_proof:
        n, scored = gguf_proof["prompts"], gguf_proof["scored"]
        print(f"gguf proof (llama.cpp, {n} prompts of {gguf_proof['prompt_source']}):")
        for kind, r in gguf_proof["files"].items():
            em = (f", exact match {r['exact_match']}/{scored} (trained model "
                  f"{gguf_proof['trained_exact_match']}/{scored})" if scored else "")
            print(f"  {kind:<7} {r['identical']}/{n} answers identical to the trained model{em}")
    if out["commands"]:
        print("commands:")
        for command in out["commands"]:
            print(f"  {command}")
    if out.get("hub"):
        print(f"pushed: {out['hub']['url']}")


def cmd_export(args) -> int:
    as_json = getattr(args, "json", False)

    def log(message: str) -> None:
        print(message, file=sys.stderr if as_json else sys.stdout, flush=True)

    from workbench.evaluate.interrupt import EXIT_STOPPED, SignalStop

    # Ctrl-C / SIGTERM: the export ends at once (KeyboardInterrupt through the generation and
    # the llama.cpp tools); the format being written was in a temporary folder, removed then.
    stop = SignalStop(at_once=True)
    try:
        with stop:
            out = run_export(args, log)
    except KeyboardInterrupt:
        print(f"stopped ({stop.name}): the export ended; nothing half-written was kept (the "
              "format in progress was in a temporary folder, now removed); run the same "
              "command again to export", file=sys.stderr)
        if as_json:
            print(json.dumps({"ok": False, "error": "stopped"}, indent=2))
        return EXIT_STOPPED
    except ExportError as exc:
        hint = exc.hint_for(getattr(args, "hints_for", "cli"))
        print(f"error: {exc.message}" + (f"\n  hint: {hint}" if hint else ""), file=sys.stderr)
        if as_json:
            print(json.dumps({"ok": False, "error": exc.message, "hint": hint}, indent=2))
        return EXIT_FAILED if exc.message.startswith("push to the Hub") else EXIT_USAGE
    except ProofFailed as exc:
        what = ("the GGUF file does not answer like the trained model"
                if exc.evidence.get("files") else
                "the merged model does not answer like the adapter model")
        print(f"error: {what}; nothing was exported\n{exc}", file=sys.stderr)
        if as_json:
            print(json.dumps({"ok": False, "error": "proof failed", "evidence": exc.evidence},
                             indent=2))
        return EXIT_FAILED
    if as_json:
        print(json.dumps({"ok": True, **out}, indent=2, default=str))
    else:
        _print_human(out)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """`python -m workbench.export.cli RUN ...` until the main CLI dispatches `export`."""
    parser = argparse.ArgumentParser(prog="workbench")
    add_export_command(parser.add_subparsers(dest="command", required=True))
    return cmd_export(parser.parse_args(["export", *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    sys.exit(main())
