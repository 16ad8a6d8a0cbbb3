"""Real chat templates, as their model repositories ship them, for the mask tests.

The templates in `tests/chat_templates/` are copies of llama.cpp's `models/templates/` (taken from
the `llama-cpp-python` 0.3.36 source distribution on PyPI, which vendors llama.cpp; llama.cpp
fetches them from each model's Hub repository with `scripts/get_chat_template.py`). Sources and
licences are listed in `tests/chat_templates/SOURCES.md`.

Each family is tested with a small byte-level BPE tokenizer (tests/_tokenizers.py) plus the family's
own special tokens (so `<|eot_id|>` is one token, as in the real tokenizer): the mask logic depends
on the template and on token boundaries at special tokens, not on the vocabulary. Byte-level, as
most of these families' own tokenizers are: text round-trips exactly, special tokens included (the
bundled tiny model's SentencePiece decoder would turn DeepSeek's `▁` in `<｜end▁of▁sentence｜>`
into a space).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

TEMPLATES = Path(__file__).parent / "chat_templates"


@dataclass(frozen=True)
class Family:
    file: str
    bos: str | None
    eos: str
    specials: tuple[str, ...] = ()
    system: str = "keep"  # what data.system = "auto" resolves to
    tools: bool = False  # renders tool calls and tool results
    # field / content: renders reasoning (from a field / a <think> block in the content) in the last
    # turn; stripped: never renders it; none: knows no reasoning (it goes inline as <think>...)
    reasoning: str = "none"
    end: tuple[str, ...] = ()  # the end-of-turn text(s) a trained answer ends with
    method: str = "prefix"  # how a multi-turn conversation is rendered
    system_moves: bool = False  # puts the system text in the last user turn: one row per answer


LLAMA3 = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>",
          "<|python_tag|>")
CHATML = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
R1 = ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
      "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>",
      "<｜tool▁sep｜>", "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>",
      "<｜tool▁output▁end｜>")

FAMILIES: dict[str, Family] = {
    "llama-3.1": Family("meta-llama-Llama-3.1-8B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>",
                        LLAMA3, tools=True, end=("<|eot_id|>", "<|eom_id|>")),
    "llama-3.2": Family("meta-llama-Llama-3.2-3B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>",
                        LLAMA3, tools=True, end=("<|eot_id|>", "<|eom_id|>")),
    "qwen2.5": Family("Qwen-Qwen2.5-7B-Instruct.jinja", None, "<|im_end|>", CHATML, tools=True,
                      end=("<|im_end|>",)),
    "qwen3": Family("Qwen-Qwen3-0.6B.jinja", None, "<|im_end|>", CHATML, tools=True,
                    reasoning="field", end=("<|im_end|>",), method="per-turn"),
    "qwq": Family("Qwen-QwQ-32B.jinja", None, "<|im_end|>", CHATML, tools=True,
                  reasoning="content", end=("<|im_end|>",), method="per-turn"),
    "gemma-2": Family("google-gemma-2-2b-it.jinja", "<bos>", "<eos>",
                      ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"), system="fold",
                      end=("<end_of_turn>",)),
    "phi-3.5": Family("microsoft-Phi-3.5-mini-instruct.jinja", "<s>", "<|endoftext|>",
                      ("<s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
                      end=("<|end|>", "<|end|>\n<|endoftext|>")),
    "mistral-nemo": Family("mistralai-Mistral-Nemo-Instruct-2407.jinja", "<s>", "</s>",
                           ("<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]",
                            "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"),
                           tools=True, end=("</s>",), system_moves=True),
    "deepseek-r1-qwen": Family("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", R1[0], R1[1], R1,
                               reasoning="stripped", end=("<｜end▁of▁sentence｜>",), method="per-turn"),
    "deepseek-r1-llama": Family("deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja", R1[0], R1[1], R1,
                                reasoning="stripped", end=("<｜end▁of▁sentence｜>",), method="per-turn"),
    "smollm3": Family("HuggingFaceTB-SmolLM3-3B.jinja", None, "<|im_end|>", CHATML,
                      end=("<|im_end|>",)),
    "granite-3.3": Family("ibm-granite-granite-3.3-2B-Instruct.jinja", None, "<|end_of_text|>",
                          ("<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>",
                           "<|tool_call|>"), tools=True, end=("<|end_of_text|>",)),
    "gpt-oss": Family("openai-gpt-oss-120b.jinja", "<|startoftext|>", "<|return|>",
                      ("<|startoftext|>", "<|start|>", "<|end|>", "<|message|>", "<|channel|>",
                       "<|return|>", "<|call|>", "<|constrain|>"), tools=True, reasoning="field",
                      end=("<|end|>", "<|return|>", "<|call|>"), method="per-turn"),
    "hermes-3": Family("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", "<|begin_of_text|>",
                       "<|im_end|>", CHATML + ("<|begin_of_text|>", "<tool_call>", "</tool_call>",
                                               "<tool_response>", "</tool_response>"),
                       tools=True, end=("<|im_end|>",)),
}


@lru_cache(maxsize=1)
def _byte_level_dir() -> Path:
    import atexit
    import shutil
    import tempfile

    from _tokenizers import build_chatml_tokenizer

    folder = Path(tempfile.mkdtemp(prefix="family-tokenizer-"))
    atexit.register(shutil.rmtree, folder, True)
    build_chatml_tokenizer(folder)
    return folder


def family_tokenizer(name: str):
    """A byte-level BPE tokenizer with `name`'s special tokens and chat template."""
    from transformers import AddedToken, AutoTokenizer

    family = FAMILIES[name]
    tok = AutoTokenizer.from_pretrained(_byte_level_dir())
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in family.specials], special_tokens=True)
    tok.bos_token = family.bos
    tok.eos_token = family.eos
    tok.chat_template = (TEMPLATES / family.file).read_text(encoding="utf-8")
    return tok
