"""Parameter counts and linear-layer shapes of a decoder-only model, from its config.json.

Pure Python (no torch): the estimator runs on every keystroke in the app. The shapes follow
the modeling code in transformers 5 for each `model_type`; anything unknown is read as a
Llama-style decoder (q/k/v/o + gated MLP), which is what most open models are.

Architecture notes that change the counts:
- Phi-3 fuses q, k and v into `qkv_proj` and gate and up into `gate_up_proj`.
- Qwen2 has biases on q, k and v (hard-coded in its modeling code, not in the config).
- Gemma-2 has head_dim 256 (so q_proj is 3584 -> 4096) and four norms per layer.
- Tied embeddings (Qwen2.5-0.5B, Gemma-2, SmolLM2) share one matrix for input and output.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A config.json that lacks what the estimator needs; the message says which key."""


@dataclass(frozen=True)
class Linear:
    """One linear layer inside every decoder layer: name as peft sees it (the attribute
    name), input and output features, whether it has a bias."""

    name: str
    d_in: int
    d_out: int
    bias: bool = False

    @property
    def params(self) -> int:
        return self.d_in * self.d_out + (self.d_out if self.bias else 0)


@dataclass(frozen=True)
class Architecture:
    model_type: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    linears: tuple[Linear, ...]  # per decoder layer
    norms_per_layer: int
    activation: str  # "silu", "gelu_pytorch_tanh", ...
    sliding_window: int | None = None  # layers with a local attention window, if any
    final_logit_softcapping: float | None = None
    attn_logit_softcapping: float | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def linear_names(self) -> tuple[str, ...]:
        return tuple(lin.name for lin in self.linears)

    def linear(self, name: str) -> Linear:
        for lin in self.linears:
            if lin.name == name:
                return lin
        raise KeyError(name)

    # Parameter counts ------------------------------------------------------------------
    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def lm_head_params(self) -> int:
        """0 when tied: the output layer reuses the embedding matrix."""
        return 0 if self.tied_embeddings else self.vocab * self.hidden

    @property
    def layer_linear_params(self) -> int:
        return sum(lin.params for lin in self.linears)

    @property
    def layer_norm_params(self) -> int:
        return self.norms_per_layer * self.hidden

    @property
    def quantizable_params(self) -> int:
        """Weights bitsandbytes turns into 4-bit: the decoder's linear layers (not their
        biases, not the embeddings, not the output layer, which transformers keeps)."""
        return self.layers * sum(lin.d_in * lin.d_out for lin in self.linears)

    @property
    def total_params(self) -> int:
        return (self.embedding_params + self.lm_head_params
                + self.layers * (self.layer_linear_params + self.layer_norm_params)
                + self.hidden)  # final norm


def _get(config: dict, *keys: str, default=None, required: bool = True):
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    if default is not None or not required:
        return default
    raise ConfigError(f"config.json has no {keys[0]!r}" +
                      (f" (nor {', '.join(repr(k) for k in keys[1:])})" if keys[1:] else "") +
                      "; is this a decoder-only language model's config?")


def _text_config(config: dict) -> dict:
    # Multimodal configs nest the language model's config; estimate the language model.
    for key in ("text_config", "language_config", "llm_config"):
        if isinstance(config.get(key), dict):
            nested = dict(config[key])
            nested.setdefault("tie_word_embeddings", config.get("tie_word_embeddings"))
            return nested
    return config


# What transformers' config classes fill in when a config.json leaves a key out (the model then
# runs with it): Gemma-2's softcapping and local window, Mistral's window.
CONFIG_DEFAULTS: dict[str, dict] = {
    "gemma2": {"final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0,
               "sliding_window": 4096, "head_dim": 256},
    "mistral": {"sliding_window": 4096},
}


def architecture_from_config(config: dict) -> Architecture:
    """Read the shapes that matter for memory and FLOPs from a config.json dict."""
    c = _text_config(config)
    model_type = str(c.get("model_type") or "llama")
    c = {**CONFIG_DEFAULTS.get(model_type, {}), **c}
    hidden = int(_get(c, "hidden_size", "n_embd", "d_model"))
    layers = int(_get(c, "num_hidden_layers", "n_layer", "num_layers"))
    heads = int(_get(c, "num_attention_heads", "n_head"))
    kv_heads = int(_get(c, "num_key_value_heads", default=heads))
    head_dim = int(c.get("head_dim") or hidden // heads)
    intermediate = int(_get(c, "intermediate_size", "ffn_dim", default=4 * hidden))
    vocab = int(_get(c, "vocab_size"))
    # Each model class has its own default when the key is missing: Gemma ties, the
    # Llama-style classes do not.
    tied = bool(c.get("tie_word_embeddings", model_type in {"gemma", "gemma2", "gemma3_text"}))
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim

    if model_type == "phi3":
        linears = (Linear("qkv_proj", hidden, q_dim + 2 * kv_dim),
                   Linear("o_proj", q_dim, hidden),
                   Linear("gate_up_proj", hidden, 2 * intermediate),
                   Linear("down_proj", intermediate, hidden))
    else:
        qkv_bias = model_type == "qwen2" or bool(c.get("attention_bias", False))
        o_bias = model_type != "qwen2" and bool(c.get("attention_bias", False))
        mlp_bias = bool(c.get("mlp_bias", False))
        linears = (Linear("q_proj", hidden, q_dim, qkv_bias),
                   Linear("k_proj", hidden, kv_dim, qkv_bias),
                   Linear("v_proj", hidden, kv_dim, qkv_bias),
                   Linear("o_proj", q_dim, hidden, o_bias),
                   Linear("gate_proj", hidden, intermediate, mlp_bias),
                   Linear("up_proj", hidden, intermediate, mlp_bias),
                   Linear("down_proj", intermediate, hidden, mlp_bias))

    norms = 4 if model_type in {"gemma2", "gemma3_text"} else 2
    activation = str(c.get("hidden_activation") or c.get("hidden_act") or "silu")
    window = c.get("sliding_window")
    if model_type == "qwen2" and not c.get("use_sliding_window", False):
        window = None  # Qwen2 carries a window size it does not use
    return Architecture(
        model_type=model_type, hidden=hidden, intermediate=intermediate, layers=layers,
        heads=heads, kv_heads=kv_heads, head_dim=head_dim, vocab=vocab, tied_embeddings=tied,
        linears=linears, norms_per_layer=norms, activation=activation,
        sliding_window=int(window) if window else None,
        final_logit_softcapping=c.get("final_logit_softcapping"),
        attn_logit_softcapping=c.get("attn_logit_softcapping"),
    )


# ---- LoRA targets -----------------------------------------------------------------------

ATTENTION_NAMES = {"q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj"}


def resolve_targets(arch: Architecture, targets) -> tuple[Linear, ...]:
    """The decoder linear layers a LoRA config adapts. `"all-linear"` is every linear layer
    except the output layer (peft's rule). Names match like peft: the module's own name.
    Unknown names raise ConfigError with the names this architecture has."""
    if targets == "all-linear":
        return arch.linears
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    chosen: list[Linear] = []
    for name in targets:
        short = name.rsplit(".", 1)[-1]
        if short in arch.linear_names:
            lin = arch.linear(short)
            if lin not in chosen:
                chosen.append(lin)
            continue
        close = difflib.get_close_matches(short, arch.linear_names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        fused = (" (Phi-3 fuses q/k/v into qkv_proj and gate/up into gate_up_proj)"
                 if arch.model_type == "phi3" else "")
        raise ConfigError(f"target module {name!r} is not a linear layer of this "
                          f"{arch.model_type} model{fused}; {hint}its linear layers are "
                          f"{', '.join(arch.linear_names)}, or use \"all-linear\"")
    if not chosen:
        raise ConfigError("no target modules given; name some or use \"all-linear\"")
    return tuple(chosen)


def attention_only_targets(arch: Architecture) -> tuple[str, ...]:
    return tuple(n for n in arch.linear_names if n in ATTENTION_NAMES)


def lora_params(arch: Architecture, targets, r: int, dora: bool = False) -> int:
    """Trainable parameters peft adds: r * (d_in + d_out) per adapted layer (A and B);
    DoRA adds a magnitude vector of d_out."""
    per_layer = sum(r * (lin.d_in + lin.d_out) + (lin.d_out if dora else 0)
                    for lin in resolve_targets(arch, targets))
    return arch.layers * per_layer


def trained_embedding_params(arch: Architecture) -> int:
    """Parameters lora.train_embeddings trains: the input embedding and the output layer,
    one matrix when they are tied (peft keeps the trained copies tied)."""
    return arch.embedding_params + arch.lm_head_params
