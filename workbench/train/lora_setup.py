"""A fresh LoRA adapter as the profile's [lora] section asks for it: rank-stabilized scaling
(lora.rslora), how the adapter starts (lora.init), fully trained embeddings
(lora.train_embeddings) with their own learning rate (train.embedding_learning_rate).

PiSSA, OLoRA and LoftQ start the adapter from the base weights and subtract that start from
the base (W = W_res + s B0 A0), so the trained adapter only makes sense on the changed base
W_res. Eval and export load the saved adapter onto the ORIGINAL base, so the final adapter
is saved converted to a plain LoRA of the original base (peft's
`path_initial_model_for_weight_conversion`): s (B A - B0 A0), written as one LoRA of rank 2r.
Checkpoints stay unconverted: a resumed run re-derives the same W_res (same seed, same SVD)
and loads the trained A, B onto it. After the final save, the model in memory is switched to
the original base plus the converted adapter, so the evaluation after training (which turns
the adapter off for "base") sees what eval and export will load.

Imported only once a run starts (torch, peft)."""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from workbench.profile import BASE_CHANGING_INITS
from workbench.train.plan import Plan, RunError

ATTRIBUTE = "workbench_lora"  # what add_adapters records on the peft model for save / optimizer


@dataclass
class LoraExtras:
    """What the rest of the run needs to know about this adapter beyond peft's own config."""

    init: str = "default"
    # Module names (as named in the base model) of the fully trained embedding / output layer.
    embedding_modules: tuple[str, ...] = ()
    embedding_learning_rate: float = 0.0  # 0 = the same as train.learning_rate
    # The adapter's start (lora_A / lora_B of adapter "default", on the CPU) for inits that
    # change the base weights; what the final save subtracts.
    initial_state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def changes_base(self) -> bool:
        return init_family(self.init) in BASE_CHANGING_INITS


def init_family(init: str) -> str:
    return "pissa" if init.startswith("pissa") else init


def extras_of(model) -> LoraExtras | None:
    """The LoraExtras add_adapters recorded, also through wrappers (DDP's .module)."""
    for candidate in (model, getattr(model, "module", None)):
        found = getattr(candidate, ATTRIBUTE, None) if candidate is not None else None
        if isinstance(found, LoraExtras):
            return found
    return None


# ---- the adapter ------------------------------------------------------------------------


def embedding_modules(model) -> tuple[tuple[str, ...], bool]:
    """(names of the input embedding and output layer in `model`, tied?), found from the
    model's get_input_embeddings() / get_output_embeddings(), so any architecture works.
    Tied (one matrix for both, as in small Llamas, Gemma, SmolLM): only the input embedding
    is named, and peft keeps the output layer tied to its trained copy (ensure_weight_tying):
    one matrix trained, counted once."""
    inputs, outputs = model.get_input_embeddings(), model.get_output_embeddings()
    names = {id(m): n for n, m in model.named_modules()}
    if inputs is None or id(inputs) not in names:
        raise RunError("lora.train_embeddings = true, but this model has no input embedding "
                       "transformers can name", hint="set lora.train_embeddings = false")
    tied = outputs is not None and getattr(outputs, "weight", None) is inputs.weight
    found = [names[id(inputs)]]
    if outputs is not None and not tied and id(outputs) in names:
        found.append(names[id(outputs)])
    return tuple(found), tied


def lora_config(model, plan: Plan):
    """peft's LoraConfig for the profile's [lora] section."""
    from peft import LoftQConfig, LoraConfig

    lo = plan.profile.lora
    extra = {}
    if lo.init == "loftq":
        _check_loftq(plan)
        extra["loftq_config"] = LoftQConfig(loftq_bits=4, loftq_iter=1)
    if lo.train_embeddings:
        names, tied = embedding_modules(model)
        extra["modules_to_save"] = list(names)
        extra["ensure_weight_tying"] = tied
    return LoraConfig(
        r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout, bias=lo.bias,
        target_modules=lo.target_modules, use_dora=lo.method == "dora",
        use_rslora=lo.rslora, init_lora_weights=True if lo.init == "default" else lo.init,
        task_type="CAUSAL_LM", **extra)


def _check_loftq(plan: Plan) -> None:
    """LoftQ quantizes each weight with bitsandbytes on the GPU and needs scipy (peft's
    check): say so before peft does, in words a person can act on."""
    import importlib.util

    if plan.device != "cuda":
        raise RunError('lora.init = "loftq" quantizes with bitsandbytes on a CUDA GPU, and this '
                       f"run is on {plan.device}", hint='run on a GPU machine, or set '
                       'lora.init = "default" (or "pissa", which works on any device)')
    for module in ("scipy", "bitsandbytes"):
        if importlib.util.find_spec(module) is None:
            raise RunError(f'lora.init = "loftq" needs the {module} package, which is not '
                           "installed", hint=f"pip install {module}")


def add_fresh_adapter(model, plan: Plan):
    """The base model with a new "default" adapter as the profile says; the LoraExtras the
    final save and the optimizer need are recorded on it."""
    from peft import get_peft_model

    from workbench.train.ranks import is_distributed

    lo = plan.profile.lora
    extras = LoraExtras(init=lo.init,
                        embedding_learning_rate=plan.profile.train.embedding_learning_rate)
    if extras.changes_base and is_distributed():  # the profile check, for distributed.gpus = "auto"
        raise RunError(f"lora.init = \"{lo.init}\" adapters are converted to a plain LoRA when "
                       "saved, which a run split over several processes cannot do yet",
                       hint='train on one GPU (distributed.gpus = 1), or use lora.init = '
                            '"default" or "gaussian"')
    config = lora_config(model, plan)
    if lo.train_embeddings:
        extras.embedding_modules = tuple(config.modules_to_save)
    try:
        with warnings.catch_warnings():
            # "PiSSA/OLoRA changes the base weights... consider converting": the save does.
            warnings.filterwarnings("ignore", message=".*changes the base weights.*")
            model = get_peft_model(model, config)
    except ValueError as exc:
        raise RunError(f"lora.target_modules = {lo.target_modules!r} does not fit this model: "
                       f"{str(exc).splitlines()[0]}",
                       hint="use \"all-linear\", or names of the model's linear layers "
                            "(e.g. q_proj, k_proj, v_proj, o_proj for Llama-style models)") from exc
    if extras.changes_base:
        extras.initial_state = _adapter_factors(model)
    setattr(model, ATTRIBUTE, extras)
    return model


def _adapter_factors(model) -> dict[str, torch.Tensor]:
    """lora_A / lora_B of adapter "default" as peft saves them (its state-dict names), copied
    to the CPU: the adapter's start, kept small (no embeddings) for the final conversion."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name="default")
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()
            if ".lora_A." in k or ".lora_B." in k}


# ---- saving --------------------------------------------------------------------------------


def save_adapter_files(model, folder: str | Path) -> None:
    """Write adapter "default" to `folder` so that it applies to the original base model:
    as peft saves it, or, for PiSSA / OLoRA / LoftQ, converted to a plain LoRA (rank 2r)."""
    extras = extras_of(model)
    if extras is None or not extras.changes_base:
        model.save_pretrained(str(folder), selected_adapters=["default"])
        return
    from safetensors.torch import load_file, save_file

    # Copies: tied embeddings share one tensor, which safetensors refuses to write twice.
    unconverted = {k: v.detach().to("cpu", copy=True) for k, v in _state(model).items()}
    with tempfile.TemporaryDirectory(prefix="workbench-initial-") as tmp:
        initial = Path(tmp) / "initial"  # peft loads it as an adapter named after the folder
        initial.mkdir()
        # peft loads it as a whole adapter: the start's factors, the rest (embeddings, DoRA
        # magnitudes) as trained; only the factors take part in the subtraction.
        start = {**unconverted, **extras.initial_state}
        save_file({k: v.contiguous() for k, v in start.items()},
                  str(initial / "adapter_model.safetensors"), metadata={"format": "pt"})
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*changes the base weights.*")
            # The start is loaded beside the trained adapter, whose embeddings peft has already
            # wrapped: it finds no tied modules left to tie (they are tied, by the first).
            warnings.filterwarnings("ignore", message=".*ensure_weight_tying.*no tied modules.*")
            model.save_pretrained(str(folder), selected_adapters=["default"],
                                  path_initial_model_for_weight_conversion=str(initial))
    # peft's conversion keeps only lora_A / lora_B: the fully trained embeddings and DoRA's
    # magnitudes (which do not change under the conversion: the direction matrix W_res + sBA
    # is the same) are put back.
    weights = Path(folder) / "adapter_model.safetensors"
    converted = load_file(str(weights))
    missing = {k: v for k, v in unconverted.items() if k not in converted}
    if missing:
        save_file({**converted, **{k: v.contiguous() for k, v in missing.items()}},
                  str(weights), metadata={"format": "pt"})


def _state(model) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model, adapter_name="default")


def use_saved_adapter(model, folder: str | Path) -> None:
    """After the final save of a PiSSA / OLoRA / LoftQ adapter: the model in memory becomes
    the original base (W_res + s B0 A0, back in the base layers) with the converted adapter
    from `folder` as "default", the system eval and export load. Nothing to do otherwise."""
    extras = extras_of(model)
    if extras is None or not extras.changes_base or not extras.initial_state:
        return
    from peft import set_peft_model_state_dict
    from peft.tuners.lora import LoraLayer
    from safetensors.torch import load_file

    start = extras.initial_state
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, LoraLayer) or "default" not in module.lora_A:
                continue
            a, b = _factor(start, name, "lora_A"), _factor(start, name, "lora_B")
            base = module.get_base_layer().weight
            delta = module.scaling["default"] * (b.float() @ a.float())
            if getattr(module, "fan_in_fan_out", False):
                delta = delta.T
            base.data = (base.data.float() + delta.to(base.device)).to(base.dtype)
            # The converted adapter has rank 2r; the layer grows to hold it (same scaling:
            # peft saved alpha doubled, or times sqrt(2) with rsLoRA).
            rank = a.shape[0] * 2
            for factors, shape in ((module.lora_A, (rank, a.shape[1])),
                                   (module.lora_B, (b.shape[0], rank))):
                old = factors["default"]
                new = torch.nn.Linear(shape[1], shape[0], bias=False,
                                      device=old.weight.device, dtype=old.weight.dtype)
                factors["default"] = new
            module.r["default"] = rank
    converted = load_file(str(Path(folder) / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, converted, adapter_name="default")
    unexpected = [k for k in result.unexpected_keys if "default" in k]
    if unexpected:  # the saved adapter and the model must match exactly
        raise RuntimeError(f"converted adapter does not fit the model: {unexpected[:3]}")
    extras.initial_state = {}  # converted: a second save must not subtract the start again
    extras.init = "default"


def _factor(state: dict[str, torch.Tensor], module_name: str, kind: str) -> torch.Tensor:
    """A factor of the adapter's start by the LoRA layer's module name (peft's state-dict
    names drop the adapter name: `...q_proj.lora_A.weight`)."""
    suffix = f"{module_name}.{kind}.weight"
    for key, value in state.items():
        if key == suffix or suffix.endswith("." + key) or key.endswith("." + suffix):
            return value
    raise KeyError(f"no {kind} saved for {module_name}")


# ---- the optimizer ----------------------------------------------------------------------------


def create_optimizer(trainer, create_default):
    """The trainer's optimizer (`create_default()`: HF's, with its weight-decay groups), with
    the trained embeddings moved into groups of their own at train.embedding_learning_rate.
    Each group keeps its weight decay; the scheduler scales every group's rate alike."""
    had_one = trainer.optimizer is not None
    optimizer = create_default()
    extras = extras_of(trainer.model)
    if had_one or extras is None or not extras.embedding_modules:
        return optimizer
    rate = extras.embedding_learning_rate or trainer.args.learning_rate
    if rate == trainer.args.learning_rate:
        return optimizer
    embedding_ids = {id(p) for name, p in trainer.model.named_parameters()
                     if p.requires_grad and _is_embedding_copy(name, extras)}
    groups = []
    for group in optimizer.param_groups:
        rest = [p for p in group["params"] if id(p) not in embedding_ids]
        moved = [p for p in group["params"] if id(p) in embedding_ids]
        if rest:
            groups.append({**group, "params": rest})
        if moved:
            groups.append({**group, "params": moved, "lr": rate, "workbench": "embeddings"})
    optimizer.param_groups = groups
    return optimizer


def _is_embedding_copy(name: str, extras: LoraExtras) -> bool:
    """The trainable copy peft made of an embedding module: `<module>.modules_to_save.*`."""
    return any(f"{module}.modules_to_save." in name for module in extras.embedding_modules)
