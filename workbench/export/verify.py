"""The proof that a merged model is the model that was evaluated: on the prompt suite, the
merged model (reloaded from the files just written) and the base model with the adapter give
the same greedy tokens, and their logits agree within a stated tolerance.

What is compared, per prompt: the greedy continuation (token ids, up to `max_new_tokens`), and
the next-token logits at every position that chose a token of the adapter model's answer (the
last prompt position and each generated one), the merged model being fed the adapter model's
tokens, so both are scored on the same sequence.

Tolerance (max |logit difference| <= atol + rtol * max |adapter logit|):
- float32: atol 1e-3. Merging only reassociates W x + s B (A x) into (W + s B A) x, which
  moves each logit by float32 rounding (about 1e-7 relative per operation); measured on the
  bundled tiny model: 1.3e-5. 1e-3 leaves room for deep models and is still far below a
  changed weight (a wrong merge moves logits by 1e-1 or more).
- bfloat16: atol 0.1 + 2% of the largest logit; float16: atol 0.05 + 1%. Half precision keeps
  8 (bf16) or 11 (fp16) significant bits, and the merged weight W + s B A is rounded once
  where the adapter path rounds W and the LoRA product separately, so each layer adds a few
  units in the last place; over 30+ layers that reaches tenths of a logit.
A greedy token that differs where the adapter model's top two logits are within the tolerance
is a near-tie, not a different model: it is reported, and the logits decide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TOLERANCES = {"float32": (1e-3, 0.0), "bfloat16": (0.1, 0.02), "float16": (0.05, 0.01)}
MAX_PROMPTS = 8        # enough prompts to cover the model; the proof should take seconds
MAX_NEW_TOKENS = 32    # per prompt; each generated token is one more compared decision


@dataclass
class Reference:
    """One prompt answered by the adapter model."""
    messages: list[dict]
    input_ids: list[int]
    tokens: list[int]
    logits: object  # float32 tensor [len(tokens) + 1, vocab]: the decisions, teacher-forced


@dataclass
class ProofResult:
    ok: bool
    dtype: str
    atol: float
    rtol: float
    max_logit_diff: float = 0.0
    prompts: int = 0
    tokens_compared: int = 0
    near_ties: list[dict] = field(default_factory=list)
    mismatch: dict | None = None

    def summary(self) -> str:
        head = (f"{self.prompts} prompts, {self.tokens_compared} greedy tokens identical, "
                f"max |logit diff| {self.max_logit_diff:.2e} (tolerance {self.atol:g}"
                + (f" + {self.rtol:g} x max|logit|" if self.rtol else "") + f", {self.dtype})")
        if self.ok:
            ties = f"; {len(self.near_ties)} near-tie(s) within tolerance" if self.near_ties else ""
            return f"proof passed: {head}{ties}"
        m = self.mismatch or {}
        return (f"proof FAILED on prompt {m.get('prompt_index')}: {m.get('reason')}\n"
                f"  prompt:          {m.get('prompt')!r}\n"
                f"  first differing token at position {m.get('position')}: adapter "
                f"{m.get('adapter_token')!r} vs merged {m.get('merged_token')!r}\n"
                f"  adapter answer:  {m.get('adapter_text')!r}\n"
                f"  merged answer:   {m.get('merged_text')!r}\n"
                f"  max |logit diff| {m.get('max_logit_diff', 0):.3e}, allowed "
                f"{m.get('allowed', 0):.3e}")

    def to_dict(self) -> dict:
        return {"ok": self.ok, "dtype": self.dtype, "atol": self.atol, "rtol": self.rtol,
                "max_logit_diff": self.max_logit_diff, "prompts": self.prompts,
                "tokens_compared": self.tokens_compared, "near_ties": self.near_ties,
                "mismatch": self.mismatch,
                "method": "greedy tokens equal; next-token logits teacher-forced on the adapter "
                          "model's answer within atol + rtol * max|logit|"}


def proof_conversations(profile, limit: int = MAX_PROMPTS) -> tuple[list[list[dict]], str]:
    """Prompts from the profile's prompt suite, or the first user turns of the training
    data when there is none; with the profile's system prompt, as in training."""
    prompts: list[str] = []
    source = ""
    if profile.eval.prompts:
        # The project's one reader of prompt suites (JSONL or TOML), so its errors name file:line.
        from workbench.evaluate.suite import load_prompts
        from workbench.export.common import ExportError

        try:
            suite = load_prompts(profile.eval.prompts)
        except Exception as exc:  # EvaluateError: a person's mistake in the prompts file
            raise ExportError(f"the prompt suite for the proof does not load: {exc}",
                              hint="fix eval.prompts in the run's profile.toml, or set it to "
                                   "\"\" to prove on the training data's prompts") from exc
        prompts = [p["prompt"] for p in suite][:limit]
        source = f"prompt suite {profile.eval.prompts}"
    if not prompts and profile.data.sources:
        return _mixture_conversations(profile, limit)
    if not prompts:
        from workbench.data import load_records

        records = load_records(profile.data.train)
        for rec in records:
            user = next((m["content"] for m in rec["messages"] if m["role"] == "user"), None)
            if user:
                prompts.append(user)
            if len(prompts) >= limit:
                break
        source = f"first user turns of {profile.data.train}"
    if not prompts:
        prompts, source = ["Hello! Who are you?"], "a fixed greeting (no prompts found)"
    system = profile.data.system_prompt
    convs = [([{"role": "system", "content": system}] if system else [])
             + [{"role": "user", "content": p}] for p in prompts]
    return convs, source


def _mixture_conversations(profile, limit: int) -> tuple[list[list[dict]], str]:
    """A mixture of [[data.sources]]: the first user turns of each source in turn, each with
    its source's system prompt, as training rendered them."""
    from itertools import islice

    from workbench.data.load import iter_source
    from workbench.data.sources import sources_of

    specs = sources_of(profile)
    per_source = max(1, -(-limit // len(specs)))
    convs: list[list[dict]] = []
    for spec in specs:
        taken = 0
        for rec in islice(iter_source(spec, on_bad_line="skip"), per_source * 4):
            system = [m for m in rec["messages"] if m["role"] == "system"][:1]
            user = next((m["content"] for m in rec["messages"] if m["role"] == "user"), None)
            if user:
                convs.append(system + [{"role": "user", "content": user}])
                taken += 1
            if taken >= per_source:
                break
    if not convs:
        return [[{"role": "user", "content": "Hello! Who are you?"}]], \
            "a fixed greeting (no prompts found)"
    labels = ", ".join(s.label for s in specs)
    return convs[:limit], f"first user turns of the mixture's sources ({labels})"


def _encode(tokenizer, messages, chat: tuple[str, str]) -> list[int]:
    """The prompt as training rendered it (`chat` = the profile's data.system, data.reasoning)."""
    from workbench.data.chat_format import chat_format

    text = chat_format(tokenizer, *chat).prompt(messages)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _greedy(model, input_ids, eos_ids, pad_id, max_new_tokens) -> list[int]:
    import torch

    ids = torch.tensor([input_ids], device=model.device)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             do_sample=False, max_new_tokens=max_new_tokens,
                             eos_token_id=eos_ids, pad_token_id=pad_id)
    return out[0, len(input_ids):].tolist()


def _decision_logits(model, input_ids, tokens):
    """Logits at the last prompt position and at each answer token: every greedy choice."""
    import torch

    ids = torch.tensor([input_ids + tokens], device=model.device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    return logits[len(input_ids) - 1:].float().cpu()


def collect_reference(model, tokenizer, conversations, eos_ids,
                      max_new_tokens: int = MAX_NEW_TOKENS,
                      chat: tuple[str, str] = ("auto", "keep")) -> list[Reference]:
    model.eval()
    refs = []
    for messages in conversations:
        input_ids = _encode(tokenizer, messages, chat)
        tokens = _greedy(model, input_ids, eos_ids, tokenizer.pad_token_id, max_new_tokens)
        refs.append(Reference(messages, input_ids, tokens,
                              _decision_logits(model, input_ids, tokens)))
    return refs


def check_against(model, tokenizer, refs: list[Reference], eos_ids, dtype_name: str,
                  max_new_tokens: int = MAX_NEW_TOKENS,
                  chat: tuple[str, str] = ("auto", "keep")) -> ProofResult:
    """`tokenizer` is the one saved with the merged model: it must build the same prompt."""
    atol, rtol = TOLERANCES.get(dtype_name, TOLERANCES["bfloat16"])
    result = ProofResult(ok=True, dtype=dtype_name, atol=atol, rtol=rtol, prompts=len(refs))
    model.eval()
    for idx, ref in enumerate(refs):
        prompt = ref.messages[-1]["content"]
        input_ids = _encode(tokenizer, ref.messages, chat)
        evidence = {"prompt_index": idx, "prompt": prompt,
                    "adapter_text": tokenizer.decode(ref.tokens, skip_special_tokens=True)}
        if input_ids != ref.input_ids:
            result.ok = False
            result.mismatch = {**evidence, "reason": "the saved tokenizer renders this prompt "
                               "to different token ids than the training tokenizer",
                               "position": None, "adapter_token": None, "merged_token": None,
                               "merged_text": None}
            return result
        tokens = _greedy(model, input_ids, eos_ids, tokenizer.pad_token_id, max_new_tokens)
        logits = _decision_logits(model, input_ids, ref.tokens)
        diff = float((logits - ref.logits).abs().max())
        allowed = atol + rtol * float(ref.logits.abs().max())
        result.max_logit_diff = max(result.max_logit_diff, diff)
        first = next((i for i, (a, b) in enumerate(zip(ref.tokens, tokens)) if a != b),
                     None if len(tokens) == len(ref.tokens) else min(len(tokens), len(ref.tokens)))
        evidence.update(merged_text=tokenizer.decode(tokens, skip_special_tokens=True),
                        max_logit_diff=diff, allowed=allowed)
        if first is not None:
            row = ref.logits[first]
            a_tok = ref.tokens[first] if first < len(ref.tokens) else None
            m_tok = tokens[first] if first < len(tokens) else None
            evidence.update(position=first,
                            adapter_token=tokenizer.decode([a_tok]) if a_tok is not None else "<end>",
                            merged_token=tokenizer.decode([m_tok]) if m_tok is not None else "<end>")
            margin = (float(row[a_tok] - row[m_tok]) if a_tok is not None and m_tok is not None
                      else float("inf"))
            if margin <= allowed and diff <= allowed:
                result.near_ties.append({**evidence, "margin": margin})
            else:
                result.ok = False
                result.mismatch = {**evidence, "reason": "the greedy answers differ"}
                return result
        elif diff > allowed:
            result.ok = False
            result.mismatch = {**evidence, "reason": "same tokens, but the logits differ by more "
                               "than the tolerance", "position": None,
                               "adapter_token": None, "merged_token": None}
            return result
        result.tokens_compared += len(ref.tokens)
    return result
