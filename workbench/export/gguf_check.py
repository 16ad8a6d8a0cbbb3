"""The proof that a GGUF answers like the trained model, run by llama.cpp itself
(llama-cpp-python): each file answers the prompt suite greedily, each prompt tokenized by
llama.cpp from the chat template's text (as a runtime does), and the answers are compared with
the trained model's (the merged model, proven equal to the adapter model by verify.py).

- full precision (f32 / bf16 / f16): every answer must be the trained model's, token for token;
  otherwise the export fails with the first difference as evidence.
- quantized (q8_0, q5_K_M, q4_K_M): the weights change, so answers may change; the share of
  identical answers and the exact-match score against the suite's references are reported
  next to the trained model's (the same metric the evaluation reports).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

MAX_PROMPTS = 40  # the demo suite's size: enough to see a quantization's effect, seconds to run
FULL_PRECISION = ("f32", "bf16", "f16")


def suite_rows(profile, limit: int = MAX_PROMPTS) -> tuple[list[dict], str]:
    """[{"messages", "reference"}] from the profile's prompt suite (or the proof's fallback)."""
    from workbench.export.verify import proof_conversations

    convs, source = proof_conversations(profile, limit)
    refs: list = [None] * len(convs)
    if profile.eval.prompts:
        from workbench.evaluate.suite import load_prompts

        refs = [p.get("reference") for p in load_prompts(profile.eval.prompts)][:len(convs)]
    return [{"messages": c, "reference": r} for c, r in zip(convs, refs)], source


def _llama_answers(path: Path, prompts: list[str], eos_ids: set[int], max_new_tokens: int):
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=0, n_threads=os.cpu_count() or 2,
                          n_batch=512, verbose=False, seed=0)
    answers, prompt_ids = [], []
    try:
        for text in prompts:
            ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            prompt_ids.append(list(ids))
            out: list[int] = []
            for tok in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0,
                                    repeat_penalty=1.0, reset=True):
                if tok in eos_ids or llm.token_eos() == tok:
                    break
                out.append(int(tok))
                if len(out) >= max_new_tokens:
                    break
            answers.append(out)
    finally:
        if hasattr(llm, "close"):  # frees the model now, not at garbage collection
            llm.close()
    return answers, prompt_ids


def _answers_in_child(path: Path, prompts: list[str], eos_ids: set[int], max_new_tokens: int):
    """`_llama_answers` in a child process: llama.cpp stops the process with abort() on a file it
    cannot use (GGML_ASSERT, e.g. a vocabulary that does not match the weights), which would
    end the export with a bare "Fatal Python error". In a child, that becomes a message; its
    own reason is on stderr just above it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from workbench.export.common import ExportError

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(_llama_answers, path, prompts, eos_ids, max_new_tokens).result()
        except BrokenProcessPool:
            raise ExportError(
                f"llama.cpp stopped (aborted) while loading or running {path.name}: the file was "
                "written but llama.cpp cannot use it (its reason is printed just above)",
                hint="this usually means the model's tokenizer files do not match its weights "
                     "or config (vocabulary size, special tokens); check the merged folder's "
                     "tokenizer, or report the converter's output") from None


def check_files(merged: Path, folder: Path, files: dict[str, dict], outtype: str, profile,
                log=print) -> dict:
    import llama_cpp
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.data.chat_format import chat_format
    from workbench.evaluate.metrics import exact_match
    from workbench.export.chat_template import end_of_turn_ids, end_of_turn_tokens
    from workbench.export.verify import TOLERANCES, _decision_logits, _greedy

    tokenizer = AutoTokenizer.from_pretrained(str(merged))
    eos_ids = set(end_of_turn_ids(tokenizer, end_of_turn_tokens(tokenizer)))
    rows, source = suite_rows(profile)
    fmt = chat_format(tokenizer, profile.data.system, profile.data.reasoning)
    texts = [fmt.prompt(r["messages"]) for r in rows]
    max_new = int(profile.eval.max_new_tokens)

    # The trained model's answers: the merged model in full precision, greedy, as verify.py.
    model = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32,
                                                 trust_remote_code=profile.model.trust_remote_code)
    model.eval()
    hf_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    start = time.monotonic()
    trained = [[t for t in _greedy(model, ids, sorted(eos_ids), tokenizer.pad_token_id, max_new)
                if t not in eos_ids] for ids in hf_ids]
    trained_s = time.monotonic() - start

    def text(tokens):
        return tokenizer.decode(tokens, skip_special_tokens=True).strip()

    refs = [r["reference"] for r in rows]
    scored = sum(1 for r in refs if r is not None)

    def em(answers):
        return sum(1 for a, r in zip(answers, refs) if r is not None and exact_match(text(a), r) == 100.0)

    out: dict = {"ok": True, "prompts": len(rows), "prompt_source": source, "scored": scored,
                 "max_new_tokens": max_new, "trained_exact_match": em(trained),
                 "trained_seconds": round(trained_s, 1),
                 "llama_cpp_python": getattr(llama_cpp, "__version__", "?"), "files": {},
                 "method": "greedy answers on the prompt suite: llama.cpp (prompt tokenized by "
                           "llama.cpp from the chat template's text) vs the merged model "
                           "(transformers, float32); full precision must match every answer"}
    atol, rtol = TOLERANCES["float16"]

    def near_tie(i: int, gguf: list[int]) -> float | None:
        """The trained model's logit margin where a full-precision answer first differs, when
        it is within half precision's tolerance (verify.py): a tie rounding may flip."""
        ref = trained[i]
        k = next((j for j, (a, b) in enumerate(zip(ref, gguf)) if a != b), min(len(ref), len(gguf)))
        if k >= max_new:
            return None
        row = _decision_logits(model, hf_ids[i], ref)[k]
        # One may have stopped where the other went on: that choice was between the end of
        # turn (the best-scored end-of-turn token) and the next token.
        end = max(float(row[e]) for e in eos_ids)
        chosen = float(row[ref[k]]) if k < len(ref) else end
        other = float(row[gguf[k]]) if k < len(gguf) else end
        margin = chosen - other
        return margin if margin <= atol + rtol * float(row.abs().max()) else None

    mismatch = None
    for kind, entry in files.items():
        start = time.monotonic()
        answers, ll_ids = _answers_in_child(folder / entry["file"], texts, eos_ids, max_new)
        seconds = time.monotonic() - start
        identical = sum(1 for a, b in zip(answers, trained) if a == b)
        # How far each answer follows the trained one before it first differs (1.0: the whole
        # answer): a quantized greedy answer that parts late is still the same model talking.
        prefix = [next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                  / max(1, len(b)) if a != b else 1.0 for a, b in zip(answers, trained)]
        record = {"file": entry["file"], "identical": identical, "exact_match": em(answers),
                  "prompt_tokens_identical": sum(1 for a, b in zip(ll_ids, hf_ids) if a == b),
                  "prefix_agreement": round(sum(prefix) / max(1, len(prefix)), 3),
                  "seconds": round(seconds, 1), "full_precision": kind in FULL_PRECISION}
        ties = []
        if kind in FULL_PRECISION:
            for i, (a, b) in enumerate(zip(answers, trained)):
                margin = near_tie(i, a) if a != b else None
                if margin is not None:
                    ties.append({"prompt": rows[i]["messages"][-1]["content"], "margin": margin})
        record["near_ties"] = ties
        tied = {t["prompt"] for t in ties}
        first = next((i for i, (a, b) in enumerate(zip(answers, trained))
                      if a != b and rows[i]["messages"][-1]["content"] not in tied), None)
        if first is not None:
            record["first_difference"] = {
                "prompt": rows[first]["messages"][-1]["content"], "trained": text(trained[first]),
                "gguf": text(answers[first]),
                "same_prompt_tokens": ll_ids[first] == hf_ids[first]}
            if kind in FULL_PRECISION and mismatch is None:
                mismatch = (kind, record)
        out["files"][kind] = record
        log(f"  {entry['file']}: {identical}/{len(rows)} answers identical to the trained "
            f"model" + (f", exact match {record['exact_match']}/{scored} (trained "
                        f"{out['trained_exact_match']}/{scored})" if scored else ""))
    del model
    if mismatch:
        kind, record = mismatch
        d = record["first_difference"]
        why = ("" if d["same_prompt_tokens"] else " (llama.cpp tokenizes the prompt differently "
               "from the model's tokenizer: the converter's vocabulary is the cause)")
        out["ok"] = False
        out["summary"] = (f"the {kind} GGUF does not answer like the trained model{why}: "
                          f"{record['identical']}/{len(rows)} identical; first difference on "
                          f"{d['prompt']!r}:\n  trained: {d['trained']!r}\n  gguf:    {d['gguf']!r}")
    else:
        out["summary"] = "; ".join(
            f"{k} {r['identical']}/{len(rows)} identical" for k, r in out["files"].items())
    return out
