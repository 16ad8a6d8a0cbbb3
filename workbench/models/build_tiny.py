"""Build the bundled tiny demo model and the demo dataset from scratch.

    python -m workbench.models.build_tiny [--out assets/tiny-model] [--demo-out assets/demo] [--steps N]

What it does (deterministic, CPU only, a few minutes on 2 cores):

1. Writes the demo dataset (short English -> French translation as chat messages)
   to ``assets/demo/translate_en_fr.jsonl`` plus held-out ``assets/demo/prompts.jsonl``.
2. Generates a pre-training corpus from the toy grammar in ``tiny_corpus``:
   plain-text bilingual lines ("English: ... French: ...") that teach the
   translation skill, and ChatML conversations of *other* simple tasks (repeat,
   reverse the words, count the words, ...) that teach the chat format. No demo
   sentence and no "Translate to French" instruction appears in pre-training, so
   the base model answers the demo prompts wrongly and LoRA has something to unlock.
3. Trains a SentencePiece BPE tokenizer (``tokenizer.model``, byte fallback, no
   normalization; the default, and the bundled model's) that llama.cpp's converter reads as
   its ``llama`` vocabulary, so the model converts to GGUF; or, with ``--tokenizer bpe``, a
   byte-level BPE with the ``tokenizers`` library, which llama.cpp refuses (it identifies
   byte-level BPEs by a hash of their output, and this one is in no table). Either is saved
   as a fast tokenizer with a ChatML chat template.
4. Pre-trains a small ``LlamaForCausalLM`` with a plain AdamW loop and saves it with
   safetensors and a greedy ``generation_config.json`` that stops at ``<|im_end|>``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

from workbench.models import tiny_corpus as tc

SEED = 1234
IM_START, IM_END, EOT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
SPECIAL_TOKENS = [EOT, IM_START, IM_END]

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

DEFAULT_CONFIG = dict(
    hidden_size=192,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    vocab_size=768,
)

N_DEMO_TRAIN = 600
N_DEMO_PROMPTS = 40


# --------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------


def render_chat(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """Python twin of CHAT_TEMPLATE (used before the tokenizer exists)."""
    out = "".join(f"{IM_START}{m['role']}\n{m['content'].strip()}{IM_END}\n" for m in messages)
    if add_generation_prompt:
        out += f"{IM_START}assistant\n"
    return out


def build_demo_dataset(seed: int = SEED) -> tuple[list[tc.Pair], list[tc.Pair]]:
    """(train pairs, held-out prompt pairs); disjoint by English text."""
    rng = random.Random(seed + 1)
    pairs = tc.unique_pairs(rng, N_DEMO_TRAIN + N_DEMO_PROMPTS)
    # held-out prompts: full sentences only (no bare noun phrases), at most 7 English words
    prompts: list[tc.Pair] = []
    train: list[tc.Pair] = []
    for p in pairs:
        if len(prompts) < N_DEMO_PROMPTS and 3 < len(p.en.split()) <= 7:
            prompts.append(p)
        else:
            train.append(p)
    return train[:N_DEMO_TRAIN], prompts


def write_demo_dataset(out_dir: Path, train: list[tc.Pair], prompts: list[tc.Pair]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "translate_en_fr.jsonl", "w", encoding="utf-8") as f:
        for p in train:
            row = {"messages": [{"role": "user", "content": tc.TRANSLATE_PREFIX + p.en},
                                {"role": "assistant", "content": p.fr}]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(out_dir / "prompts.jsonl", "w", encoding="utf-8") as f:
        for p in prompts:
            f.write(json.dumps({"prompt": tc.TRANSLATE_PREFIX + p.en, "reference": p.fr}, ensure_ascii=False) + "\n")


class CorpusSampler:
    """Infinite, seeded stream of pre-training documents (strings)."""

    def __init__(self, seed: int, exclude_en: set[str], p_chat: float = 0.5):
        self.rng = random.Random(seed)
        self.exclude = exclude_en
        self.p_chat = p_chat
        self.vocab = tc.vocabulary_pairs()

    def pair(self) -> tc.Pair:
        while True:
            if self.rng.random() < 0.1:
                p = self.rng.choice(self.vocab)
            else:
                p = tc.random_pair(self.rng)
            if p.en not in self.exclude:
                return p

    def plain_doc(self) -> str:
        lines = []
        for _ in range(self.rng.randint(1, 3)):
            p = self.pair()
            lines.append(f"English: {p.en}. French: {p.fr}.")
        return "\n".join(lines) + EOT

    def chat_doc(self) -> str:
        msgs: list[dict] = []
        if self.rng.random() < 0.3:
            msgs.append({"role": "system", "content": self.rng.choice(tc.SYSTEM_PROMPTS)})
        for _ in range(self.rng.randint(1, 2)):
            p = self.pair()
            text = p.en if self.rng.random() < 0.6 else p.fr
            user, assistant = tc.other_task(self.rng, text)
            msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return render_chat(msgs) + EOT

    def doc(self) -> str:
        return self.chat_doc() if self.rng.random() < self.p_chat else self.plain_doc()


# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=EOT,
        unk_token=None,
        bos_token=None,
        model_max_length=DEFAULT_CONFIG["max_position_embeddings"],
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _patch_tokenizer_config(out: Path) -> None:
    """Portability: name the generic fast class and also embed the chat template in
    tokenizer_config.json (older transformers and converters read it from there; the
    separate chat_template.jinja written by transformers 5 stays too)."""
    path = out / "tokenizer_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["chat_template"] = CHAT_TEMPLATE
    path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def train_tokenizer_sentencepiece(texts: list[str], vocab_size: int, out: Path):
    """A SentencePiece BPE model that round-trips every text exactly (identity normalization,
    no dummy prefix, byte fallback) with the ChatML markers as single pieces; transformers
    converts it to the fast tokenizer the workbench uses, and llama.cpp's converter reads
    tokenizer.model itself. Writes out/tokenizer.model."""
    import io

    import sentencepiece as spm
    from transformers import AutoTokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, model_type="bpe",
        vocab_size=vocab_size, normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=False, byte_fallback=True, split_digits=True,
        allow_whitespace_only_pieces=True, user_defined_symbols=SPECIAL_TOKENS,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, max_sentence_length=100000,
        character_coverage=1.0, num_threads=2, minloglevel=2)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(model.getvalue())
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "legacy": False, "add_prefix_space": False,
        "add_bos_token": False, "add_eos_token": False,
        "clean_up_tokenization_spaces": False}), encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(str(out), eos_token=IM_END, pad_token=EOT, bos_token=None,
                                        model_max_length=DEFAULT_CONFIG["max_position_embeddings"],
                                        padding_side="right")
    # Special, not merely user-defined: the converter then types them CONTROL, which llama.cpp
    # parses as one token in a prompt (a user-defined <|im_start|> is spelled out in bytes).
    tok.add_special_tokens({"additional_special_tokens": [IM_START, IM_END, EOT]})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _list_added_tokens(out: Path) -> None:
    """llama.cpp's converter learns which pieces are special from tokenizer_config.json's
    added_tokens_decoder (transformers 5 keeps them only in tokenizer.json): without it the
    ChatML markers become plain pieces, which llama.cpp spells out byte by byte in a prompt."""
    added = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    path = out / "tokenizer_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["added_tokens_decoder"] = {str(t["id"]): {k: t[k] for k in (
        "content", "lstrip", "normalized", "rstrip", "single_word", "special")} for t in added}
    path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------


def make_model(tokenizer, cfg: dict):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["num_key_value_heads"],
        max_position_embeddings=cfg["max_position_embeddings"],
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.02,
        torch_dtype="float32",
    )
    torch.manual_seed(SEED)
    return LlamaForCausalLM(config)


def pretrain(model, tokenizer, sampler: CorpusSampler, steps: int, batch_size: int, lr: float,
             log_every: int = 50, max_len: int = 128) -> list[float]:
    import torch

    torch.manual_seed(SEED)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        prog = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog)))

    losses: list[float] = []
    t0 = time.time()
    for step in range(steps):
        docs = [sampler.doc() for _ in range(batch_size)]
        enc = tokenizer(docs, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        labels = ids.masked_fill(mask == 0, -100)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
        if (step + 1) % log_every == 0 or step == 0 or step + 1 == steps:
            recent = sum(losses[-log_every:]) / len(losses[-log_every:])
            print(f"step {step + 1:5d}/{steps}  loss {recent:.4f}  lr {lr_at(step):.2e}  "
                  f"{time.time() - t0:6.1f}s", flush=True)
    model.eval()
    return losses


def greedy_answer(model, tokenizer, prompt: str, max_new_tokens: int = 24) -> str:
    import torch

    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def plain_translate(model, tokenizer, en: str, max_new_tokens: int = 24) -> str:
    import torch

    ids = tokenizer(f"English: {en}. French:", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    return text.split("\n")[0].strip().rstrip(".").strip()


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


MODEL_README = """# tiny-model: bundled toy Llama for demos and tests

A deliberately tiny `LlamaForCausalLM` ({params:,} parameters, {size_mb:.1f} MB of safetensors,
float32) with a {tokenizer_kind} tokenizer ({vocab} tokens) and a ChatML chat template.
It is a **toy**: it only knows the small English/French grammar in
`workbench/models/tiny_corpus.py`. It exists so that the workbench can be demoed and tested
offline on a laptop CPU.

## How it was built

Everything here is produced by the project's own script, from text the project ships:

```
HF_HUB_OFFLINE=1 python -m workbench.models.build_tiny --out assets/tiny-model --steps {steps}{tokenizer_flag}
```

(seeded and deterministic on the same torch build; took about {minutes:.1f} minutes on 2 CPU cores).

* Config: hidden {hidden}, {layers} layers, {heads} attention heads ({kv} KV heads),
  intermediate {inter}, tied embeddings, max {maxpos} positions.
* Pre-training: {steps} AdamW steps, batch {batch}, peak lr {lr}, final loss {final_loss:.3f}.
  The corpus mixes plain bilingual lines (`English: the black cat sleeps. French: le chat noir dort.`)
  with ChatML conversations of *other* tasks (repeat, reverse the words, count the words,
  first/last word). It never contains a "Translate to French" instruction nor any sentence of
  the demo dataset (`assets/demo/`).
  (The BPE tokenizer, trained separately, did see the demo instruction text so that it
  tokenizes compactly.)
* Result: the base model knows the chat format and the translation skill, but does not
  translate when asked in chat form: it drifts into pre-training text or into one of the
  other chat tasks, in English, and gets 0 of the held-out prompts right. A ~1 minute LoRA run on
  `assets/demo/translate_en_fr.jsonl` unlocks it; see `bench/tiny_model_lora.md`.

Special tokens: `<|im_start|>`, `<|im_end|>` (eos, and generation stops there),
`<|endoftext|>` (pad). Generation defaults are greedy.

Sanity check at build time: base model exact-match on the {n_prompts} held-out demo prompts in
chat form: {chat_correct}/{n_prompts}; same sentences in the plain pre-training format
(`English: ... French:`): {plain_correct}/{n_prompts}.
"""

DEMO_README = """# Demo dataset: short English -> French translation

Written for this project (generated by `python -m workbench.models.build_tiny` from the toy
grammar in `workbench/models/tiny_corpus.py`, seed {seed}).

* `translate_en_fr.jsonl`: {n_train} training rows, chat messages, one JSON object per line:
  `{{"messages": [{{"role": "user", "content": "Translate to French: the black cat sleeps"}},
  {{"role": "assistant", "content": "le chat noir dort"}}]}}`. No duplicates.
* `prompts.jsonl`: {n_prompts} held-out prompts, none of which appears in the training file:
  `{{"prompt": "Translate to French: ...", "reference": "..."}}`. Score by exact match after
  `strip()`.

The task is meant for the bundled toy model `assets/tiny-model`: the base model answers
these prompts wrongly, and a LoRA fine-tune of about a minute on 2 CPU cores makes most of
them correct (see `bench/tiny_model_lora.md`).
"""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="assets/tiny-model")
    ap.add_argument("--demo-out", default="assets/demo")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokenizer", choices=("bpe", "sentencepiece"), default="sentencepiece",
                    help="bpe: byte-level BPE (tokenizers); sentencepiece: tokenizer.model, "
                         "which llama.cpp converts to GGUF")
    ap.add_argument("--hidden-size", type=int, default=DEFAULT_CONFIG["hidden_size"])
    ap.add_argument("--intermediate-size", type=int, default=DEFAULT_CONFIG["intermediate_size"])
    ap.add_argument("--layers", type=int, default=DEFAULT_CONFIG["num_hidden_layers"])
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # rayon threads of the tokenizer fight the torch threads for the 2 cores otherwise
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    random.seed(SEED)
    t_start = time.time()
    out, demo_out = Path(args.out), Path(args.demo_out)

    # 1. demo dataset
    train, prompts = build_demo_dataset()
    write_demo_dataset(demo_out, train, prompts)
    exclude = {p.en for p in train} | {p.en for p in prompts}
    print(f"demo dataset: {len(train)} train rows, {len(prompts)} held-out prompts -> {demo_out}")

    # 2. tokenizer
    tok_sampler = CorpusSampler(SEED + 2, exclude)
    tok_texts = [tok_sampler.doc() for _ in range(20000)]
    # make sure the demo instruction and every vocabulary word are seen by the BPE trainer
    tok_texts += [f"{tc.TRANSLATE_PREFIX}{p.en}\n{p.fr}" for p in tok_sampler.vocab]
    cfg = dict(DEFAULT_CONFIG, hidden_size=args.hidden_size, intermediate_size=args.intermediate_size,
               num_hidden_layers=args.layers)
    if args.tokenizer == "sentencepiece":
        tokenizer = train_tokenizer_sentencepiece(tok_texts, cfg["vocab_size"], out)
    else:
        tokenizer = train_tokenizer(tok_texts, cfg["vocab_size"])
    print(f"tokenizer: {len(tokenizer)} tokens")

    # 3. model + pre-training
    model = make_model(tokenizer, cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters")
    sampler = CorpusSampler(SEED + 3, exclude)
    losses = pretrain(model, tokenizer, sampler, args.steps, args.batch_size, args.lr)
    final_loss = sum(losses[-50:]) / len(losses[-50:])

    # 4. save
    from transformers import GenerationConfig

    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        do_sample=False,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=64,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    _patch_tokenizer_config(out)
    if args.tokenizer == "sentencepiece":  # tokenizer.model (written above) is what llama.cpp reads
        assert (out / "tokenizer.model").is_file()
        _list_added_tokens(out)

    # 5. sanity check
    chat_ok = plain_ok = 0
    for p in prompts:
        a = greedy_answer(model, tokenizer, tc.TRANSLATE_PREFIX + p.en)
        b = plain_translate(model, tokenizer, p.en)
        chat_ok += a == p.fr
        plain_ok += b == p.fr
    for p in prompts[:3]:
        print(f"  {p.en!r}: chat -> {greedy_answer(model, tokenizer, tc.TRANSLATE_PREFIX + p.en)!r}, "
              f"plain -> {plain_translate(model, tokenizer, p.en)!r}, ref {p.fr!r}")
    print(f"base exact match on held-out prompts: chat {chat_ok}/{len(prompts)}, "
          f"plain format {plain_ok}/{len(prompts)}")

    minutes = (time.time() - t_start) / 60
    size_mb = sum(f.stat().st_size for f in out.glob("*.safetensors")) / 1e6
    (out / "README.md").write_text(MODEL_README.format(
        params=n_params, size_mb=size_mb, vocab=len(tokenizer), steps=args.steps, minutes=minutes,
        tokenizer_kind=("SentencePiece BPE (tokenizer.model; llama.cpp converts it to GGUF)"
                        if args.tokenizer == "sentencepiece" else "byte-level BPE"),
        tokenizer_flag=" --tokenizer sentencepiece" if args.tokenizer == "sentencepiece" else "",
        hidden=cfg["hidden_size"], layers=cfg["num_hidden_layers"], heads=cfg["num_attention_heads"],
        kv=cfg["num_key_value_heads"], inter=cfg["intermediate_size"], maxpos=cfg["max_position_embeddings"],
        batch=args.batch_size, lr=args.lr, final_loss=final_loss, n_prompts=len(prompts),
        chat_correct=chat_ok, plain_correct=plain_ok), encoding="utf-8")
    (demo_out / "README.md").write_text(DEMO_README.format(
        seed=SEED, n_train=len(train), n_prompts=len(prompts)), encoding="utf-8")
    total = sum(f.stat().st_size for f in out.iterdir() if f.is_file()) / 1e6
    print(f"saved to {out} ({total:.2f} MB total); final loss {final_loss:.4f}; took {minutes:.1f} min")


if __name__ == "__main__":
    main()
