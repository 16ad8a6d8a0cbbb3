"""Which GPU kernels a run uses: `train.kernels`, `model.attn_implementation` and
`train.optimizer = "auto"`, resolved for the device actually there and the packages installed.

What transformers 5.25 / trl 1.16 offer, read from their sources:

- Liger (`pip install liger-kernel`, Triton, CUDA only): `TrainingArguments(use_liger_kernel=True,
  liger_kernel_config={...})`; `Trainer.train` patches the model's RMSNorm, RoPE and SwiGLU MLP
  with Liger's Triton kernels. trl 1.16's SFT / DPO / KTO / GRPO trainers switch Liger's fused
  linear cross-entropy off (it would replace the model's forward, which they patch with trl's own
  fused LM head, `add_fused_lm_head`): that head already never builds the full logits, so in a
  workbench run Liger saves layer memory (RMSNorm keeps its bf16 input instead of an fp32
  upcast, SwiGLU two of its three intermediates), not the logits. trl marks `use_liger_kernel`
  deprecated (removed in trl 2.0) in favour of Hub kernels.
- Hub kernels (the `kernels` package): `from_pretrained(use_kernels=True)` kernelizes the model's
  layers for the device it is on (Liger's RMSNorm, a rotary kernel from kernels-community). They
  are downloaded from the Hugging Face Hub on first use; the GPU machines here have no network,
  so they must already be in the local HF cache (`KERNELS_CACHE` or the hub cache).
- Attention: "flash_attention_2" (`flash_attn`), "flash_attention_3" (`flash_attn_interface`,
  Hopper GPUs), or a Hub kernel id such as "kernels-community/flash-attn2". Without `flash_attn`
  transformers falls back to that Hub kernel, which again must be cached.
- Fused AdamW: `optim="adamw_torch_fused"`, one kernel for the whole update (no foreach
  temporaries); `train.optimizer = "auto"` picks it on CUDA.

`resolve_kernels` is pure: it takes the device and what is installed, so every case is testable
on a CPU. `resolve_for_profile` gathers those facts for a profile (train/plan.py
`kernels_for_run` for a run).
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

KERNELS = ("auto", "none", "liger", "hub")
ATTENTION_CHOICES = ("auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3")
FLASH = ("flash_attention_2", "flash_attention_3")
# transformers' own fallback when the flash package is missing (modeling_flash_attention_utils
# FLASH_ATTN_KERNEL_FALLBACK in 5.25)
FLASH_HUB_FALLBACK = {"flash_attention_2": "kernels-community/flash-attn2",
                      "flash_attention_3": "kernels-community/vllm-flash-attn3"}
FLASH_PACKAGES = {"flash_attention_2": ("flash_attn", "flash-attn"),
                  "flash_attention_3": ("flash_attn_interface",
                                        "flash-attn-3 (FlashAttention's hopper/ build)")}
# The Hub layer kernels transformers maps for CUDA training (integrations/hub_kernels.py).
HUB_LAYER_REPOS = ("kernels-community/liger-kernels", "kernels-community/rotary")
# liger-kernel 0.8.5's MODEL_TYPE_TO_APPLY_LIGER_FN; the installed package's own table wins.
LIGER_MODEL_TYPES = frozenset((
    "deepseek_v2", "deepseek_v3", "deepseek_v4", "exaone4", "falcon_h1", "gemma", "gemma2",
    "gemma3", "gemma3_text", "gemma4", "gemma4_text", "glm4", "glm4v", "glm4v_moe", "gpt_oss",
    "granite", "hunyuan_v1_dense", "hunyuan_v1_moe", "internvl", "llama", "llama4",
    "llama4_text", "llava", "ministral", "mistral", "mixtral", "mllama", "mllama_text_model",
    "muse_glimmer", "nemotron", "olmo2", "olmo3", "paligemma", "phi3", "pixtral", "qwen2",
    "qwen2_5_vl", "qwen2_5_vl_text", "qwen2_vl", "qwen2_vl_text", "qwen3", "qwen3_5",
    "qwen3_5_moe", "qwen3_5_moe_text", "qwen3_5_text", "qwen3_moe", "qwen3_next", "qwen3_vl",
    "qwen3_vl_moe", "qwen3_vl_moe_text", "qwen3_vl_text", "smollm3", "smolvlm"))
# Layer kernels only: trl's trainers refuse Liger's fused linear cross-entropy (their fused LM
# head takes its place), and plain cross_entropy would need the logits trl never builds.
LIGER_CONFIG = {"rope": True, "rms_norm": True, "swiglu": True, "cross_entropy": False,
                "fused_linear_cross_entropy": False}
LIGER_NOTE = ("kernels: liger (Triton RMSNorm, RoPE, SwiGLU; trl's fused LM head stands in for "
              "Liger's fused linear cross-entropy: no full logits either way)")
NO_NETWORK = ("the GPU machines have no network: Hub kernels must already be in the local HF "
              "cache (KERNELS_CACHE or HF_HUB_CACHE)")
_HUB_ID = re.compile(r"^[^/:@\s]+/[^/:@\s]+(?:@[^/:\s]+)?(?::[^/:\s]+)?$")


class KernelError(Exception):
    """A kernel asked for on a GPU that cannot run it here; `hint` says what to do."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message, self.hint = message, hint


def is_hub_kernel(name: str) -> bool:
    """"kernels-community/flash-attn2", "org/repo@v1:function": a Hub kernel id."""
    return bool(_HUB_ID.match(name or ""))


@dataclass(frozen=True)
class Environment:
    """The facts a choice depends on. `installed(module)`: importable here; `cached(repo)`: a
    Hub kernel in the local cache; `capability`: the CUDA compute capability, (0, 0) on a CPU."""

    device: str  # "cuda" | "cpu"
    installed: Callable[[str], bool]
    cached: Callable[[str], bool] = lambda repo: False
    capability: tuple[int, int] = (0, 0)
    model_type: str = ""
    supports_flash: bool = True  # the model class's _supports_flash_attn
    liger_model_types: frozenset = LIGER_MODEL_TYPES


@dataclass(frozen=True)
class KernelChoice:
    kernels: str                     # resolved: "none" | "liger" | "hub"
    attn_implementation: str         # for from_pretrained
    optimizer: str                   # for TrainingArguments(optim=...)
    training_args: dict = field(default_factory=dict)  # use_liger_kernel, liger_kernel_config
    load_kwargs: dict = field(default_factory=dict)    # use_kernels (and a device map for it)
    notes: tuple[str, ...] = ()

    @property
    def counted(self) -> str:
        """The estimator's name for this choice (EstimateSettings.kernels)."""
        return "liger" if self.kernels == "liger" else "none"


def resolve_kernels(kernels: str, attention: str, optimizer: str, env: Environment) -> KernelChoice:
    """Resolve the profile's three choices. A kernel asked for by name on a CPU falls back with a
    note (the profile stays runnable on a laptop); on CUDA a missing package is a KernelError,
    since the person asked for it on the machine that could run it. "auto" never complains."""
    notes: list[str] = []
    training_args: dict = {}
    load_kwargs: dict = {}
    cuda = env.device == "cuda"

    resolved = kernels
    if kernels == "auto":
        resolved = ("liger" if cuda and env.installed("liger_kernel")
                    and env.model_type in env.liger_model_types else "none")
    elif kernels == "liger" and not cuda:
        notes.append("kernels: liger asked for but this is a CPU: running without (liger needs "
                     "CUDA + triton)")
        resolved = "none"
    elif kernels == "liger":
        if not env.installed("liger_kernel"):
            raise KernelError("train.kernels = \"liger\" but the liger-kernel package is not "
                              "installed", hint="pip install liger-kernel, or set train.kernels "
                              "= \"auto\" (liger when installed) or \"none\"")
        if env.model_type and env.model_type not in env.liger_model_types:
            notes.append(f"kernels: liger has no kernels for model type {env.model_type!r}: "
                         "running without")
            resolved = "none"
    elif kernels == "hub" and not cuda:
        notes.append("kernels: hub asked for but this is a CPU: running without (the Hub's layer "
                     "kernels are built for CUDA)")
        resolved = "none"
    elif kernels == "hub":
        if not env.installed("kernels"):
            raise KernelError("train.kernels = \"hub\" but the kernels package is not installed",
                              hint="pip install kernels, or set train.kernels = \"liger\" or "
                                   "\"none\"")
        missing = [repo for repo in HUB_LAYER_REPOS if not env.cached(repo)]
        if missing:
            notes.append(f"kernels: hub: {', '.join(missing)} not in the local HF cache: "
                         f"transformers keeps the torch layers where a kernel is missing ({NO_NETWORK})")
    if resolved == "liger":
        training_args = {"use_liger_kernel": True, "liger_kernel_config": dict(LIGER_CONFIG)}
        notes.append(LIGER_NOTE)
    elif resolved == "hub":
        # kernelize() picks kernels for the device the model is on when it loads: load it on the
        # GPU, or the CPU mapping (none) is chosen and the move to CUDA changes nothing.
        load_kwargs = {"use_kernels": True, "device_map": {"": 0}}
        notes.append("kernels: hub (Hugging Face Hub layer kernels via `kernels`: RMSNorm, RoPE)")
    elif kernels == "none":
        load_kwargs = {"use_kernels": False}  # transformers 5.25 kernelizes by default otherwise

    attn = _resolve_attention(attention, env, notes)
    # "auto": the fused kernel on CUDA; the CPU keeps adamw_torch (torch has a fused CPU AdamW
    # too, so a profile naming adamw_torch_fused keeps it there)
    opt = optimizer
    if optimizer == "auto":
        opt = "adamw_torch_fused" if cuda else "adamw_torch"
    return KernelChoice(kernels=resolved, attn_implementation=attn, optimizer=opt,
                        training_args=training_args, load_kwargs=load_kwargs, notes=tuple(notes))


def _resolve_attention(attention: str, env: Environment, notes: list[str]) -> str:
    cuda = env.device == "cuda"
    if attention == "auto":
        if not (cuda and env.supports_flash):
            return "sdpa"
        if env.capability[0] == 9 and env.installed("flash_attn_interface"):
            return "flash_attention_3"
        if env.capability[0] >= 8 and env.installed("flash_attn"):
            return "flash_attention_2"
        return "sdpa"
    flash = attention in FLASH or is_hub_kernel(attention)
    if not flash:
        return attention
    if not cuda:
        notes.append(f"attention: {attention} asked for but this is a CPU: running sdpa "
                     "(FlashAttention kernels need CUDA)")
        return "sdpa"
    key = f"model.attn_implementation = \"{attention}\""
    if not env.supports_flash:
        raise KernelError(f"{key}, but {env.model_type or 'this model'} has no FlashAttention "
                          "path in transformers", hint="use \"sdpa\" or \"auto\"")
    if attention == "flash_attention_3" and env.capability[0] != 9:
        raise KernelError(f"{key} needs a Hopper GPU (compute capability 9.x); this one is "
                          f"{env.capability[0]}.{env.capability[1]}",
                          hint="use \"flash_attention_2\" or \"auto\"")
    if attention == "flash_attention_2" and env.capability[0] < 8:
        raise KernelError(f"{key} needs an Ampere or newer GPU (compute capability 8.0+); this "
                          f"one is {env.capability[0]}.{env.capability[1]}", hint="use \"sdpa\"")
    if attention in FLASH:
        module, package = FLASH_PACKAGES[attention]
        if env.installed(module):
            return attention
        repo = FLASH_HUB_FALLBACK[attention]
        if env.installed("kernels") and env.cached(repo):
            notes.append(f"attention: {package} is not installed: transformers uses the Hub kernel "
                         f"{repo} from the local HF cache")
            return attention
        raise KernelError(f"{key} but {package} is not installed, and the Hub kernel transformers "
                          f"would use instead ({repo}) is not in the local HF cache",
                          hint=f"pip install {package.split()[0]}, or download {repo} with network "
                               f"first ({NO_NETWORK}), or use \"sdpa\" / \"auto\"")
    repo = attention.split("@")[0].split(":")[0]
    if not env.installed("kernels"):
        raise KernelError(f"{key} is a Hub kernel but the kernels package is not installed",
                          hint="pip install kernels, or use \"sdpa\" / \"auto\"")
    if not env.cached(repo):
        raise KernelError(f"{key}: {repo} is not in the local HF cache", hint=NO_NETWORK)
    return attention


# ---- the facts, for a real run ---------------------------------------------------------------


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def hub_cached(repo: str) -> bool:
    """Whether a Hub repo has a snapshot in the cache `kernels` reads (no network)."""
    base = os.environ.get("KERNELS_CACHE")
    if not base:
        from huggingface_hub import constants

        base = constants.HF_HUB_CACHE
    folder = Path(base) / ("models--" + repo.replace("/", "--")) / "snapshots"
    return folder.is_dir() and any(folder.iterdir())


@lru_cache(maxsize=1)
def _liger_model_types() -> frozenset:
    try:  # the installed liger's own table (imports triton: CUDA machines only)
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

        return frozenset(MODEL_TYPE_TO_APPLY_LIGER_FN)
    except Exception:  # noqa: BLE001 - any failure: the table of the version we read
        return LIGER_MODEL_TYPES


def _model_facts(profile) -> tuple[str, bool]:
    """(model_type, whether its class has a FlashAttention path), from config.json only."""
    from transformers import AutoConfig

    m = profile.model
    config = AutoConfig.from_pretrained(m.name_or_path, revision=m.revision,
                                        trust_remote_code=m.trust_remote_code)
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

        supports = bool(getattr(MODEL_FOR_CAUSAL_LM_MAPPING[type(config)],
                                "_supports_flash_attn", True))
    except Exception:  # noqa: BLE001 - remote code or an unknown class: transformers decides
        supports = True
    return config.model_type, supports


def resolve_for_profile(profile, device: str) -> KernelChoice:
    """The choice for a run of `profile` on `device` ("cuda" | "cpu"). Raises KernelError for a
    kernel asked for on a GPU that lacks it. train/plan.py `kernels_for_run` adds the sdpa ->
    eager fallback for models without an SDPA path."""
    model_type, supports = _model_facts(profile)
    capability = (0, 0)
    if device == "cuda":
        import torch

        capability = tuple(torch.cuda.get_device_capability())
    env = Environment(device=device, installed=installed, cached=hub_cached, capability=capability,
                      model_type=model_type, supports_flash=supports,
                      liger_model_types=_liger_model_types() if device == "cuda" else LIGER_MODEL_TYPES)
    t = profile.train
    return resolve_kernels(getattr(t, "kernels", "none"), profile.model.attn_implementation,
                           t.optimizer, env)


def estimate_kernels(kernels: str, installed_here: Callable[[str], bool] = installed) -> str:
    """What the estimator counts for `train.kernels`: the estimate is for a GPU, so "auto" counts
    liger when liger-kernel is installed here (as a run here would use it on a GPU)."""
    if kernels == "auto":
        return "liger" if installed_here("liger_kernel") else "none"
    return "liger" if kernels == "liger" else "none"


def estimate_attention(attention: str, installed_here: Callable[[str], bool] = installed) -> str:
    """What the estimator counts for `model.attn_implementation` on a GPU: FlashAttention (2 or
    3, or a Hub flash kernel) or what was asked; "auto" is flash when flash-attn is installed."""
    if attention == "auto":
        if installed_here("flash_attn_interface"):
            return "flash_attention_3"
        return "flash_attention_2" if installed_here("flash_attn") else "sdpa"
    if is_hub_kernel(attention):
        return "flash_attention_2"  # the Hub's flash kernels save what FlashAttention 2 saves
    return attention
