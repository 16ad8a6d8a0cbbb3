"""Inside one rank of a distributed run: who am I, the process group, what the Hugging Face
trainer is handed (DDP / FSDP2 / DeepSpeed settings), saving a sharded adapter, and a rank's
own record. The launcher that starts the ranks is `workbench.pipeline.launch`; this module is
what the training code itself uses, so it never imports the launcher or the pipeline.

No torch import at module level: the command line imports this to plan a launch.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workbench.train.plan import RunError
from workbench.rundir import RunDir, iso, write_json_atomic

# Tokenization on rank 0 can take long on big datasets while the others wait in a barrier,
# and the first checkpoint of a 70B model takes minutes: the process group's timeout must
# outlast both (torch's default is 30 minutes for NCCL, HF's ddp_timeout 1800 s).
COLLECTIVE_TIMEOUT_S = 3 * 3600
RANKS_DIR = "ranks"


class DistributedError(RunError):
    """A launch that cannot be done as configured; the message says what to change."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message, hint=hint, kind="config")


# ---- where am I ---------------------------------------------------------------------------

def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    return rank() == 0


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def barrier() -> None:
    dist = _dist()
    if dist is not None and is_distributed():
        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on any: the ranks must take the same branch at
    the same step (stop and save, or go on), or the next collective waits forever."""
    dist = _dist()
    if dist is None or not is_distributed():
        return flag
    import torch

    device = (torch.device("cuda", torch.cuda.current_device())
              if dist.get_backend() == "nccl" else torch.device("cpu"))
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


@contextmanager
def main_process_first():
    """Rank 0 runs the block first (tokenizing, writing caches) while the others wait in a
    barrier; then the others run it. The wait is bounded by COLLECTIVE_TIMEOUT_S."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def init_process_group(device: str) -> None:
    """gloo for CPU ranks, NCCL for GPU ranks, each rank on its own GPU. Initialized here
    (before the trainer) so planning can run main-process-first; accelerate's PartialState
    then reuses this group."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))


# ---- what the trainer is handed -----------------------------------------------------------

def trainer_settings(plan, launch: dict | None = None) -> dict[str, Any]:
    """Extra SFTConfig fields for a distributed run, as data (tests read them; FSDP and
    DeepSpeed cannot run on a CPU). Empty for a one-process run.

    - DDP: no unused-parameter search (every LoRA parameter gets a gradient; the search
      costs a graph walk per step and breaks with gradient checkpointing); the runner
      already asks for non-reentrant checkpointing, which DDP needs.
    - FSDP2: `fully_shard` per decoder layer (transformers' auto wrap by the model's
      `_no_split_modules`), full state dict gathered when saving so the adapter is whole,
      parameters sharded after forward, CPU-efficient loading for big models.
    - DeepSpeed: a ZeRO-2 / ZeRO-3 config dict (HF fills the "auto" values from the args);
      ZeRO-3 gathers the 16-bit weights on save, or adapters come out empty.
    """
    launch = launch or current_launch()
    if not launch or launch.get("nproc_per_node", 1) * launch.get("nnodes", 1) <= 1:
        return {}
    out: dict[str, Any] = {
        "ddp_backend": "nccl" if launch["device"] == "cuda" else "gloo",
        "ddp_timeout": COLLECTIVE_TIMEOUT_S,
        "ddp_find_unused_parameters": False,
    }
    strategy = launch["strategy"]
    if strategy == "fsdp":
        # transformers 5: `fsdp=True`, everything else in fsdp_config (the string form is
        # deprecated).
        out["fsdp"] = True
        out["fsdp_config"] = fsdp_config(plan, bool(launch.get("cpu_offload")))
        # FSDP checkpoints activations itself (fsdp_config); the trainer's own checkpointing
        # on top would all-gather every layer once more (transformers warns). The new name
        # wins over the runner's `gradient_checkpointing`.
        out["activation_checkpointing"] = False
    elif strategy == "deepspeed":
        out["deepspeed"] = deepspeed_config(launch["zero_stage"], launch.get("cpu_offload", False),
                                            plan.precision)
    return out


def fsdp_config(plan, cpu_offload: bool = False) -> dict[str, Any]:
    return {
        "version": 2,  # FSDP2: per-parameter sharding (DTensor), what QLoRA + FSDP needs
        "reshard_after_forward": True,  # full shard (ZeRO-3-like), not shard_grad_op
        "cpu_offload": cpu_offload,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "state_dict_type": "FULL_STATE_DICT",  # a whole adapter on save, not shards
        "cpu_ram_efficient_loading": True,
        # Gradient checkpointing through FSDP's own activation checkpointing wrapper, not
        # the model's (both at once gather every layer twice). QLoRA's
        # prepare_model_for_kbit_training has already turned on the model's own.
        "activation_checkpointing": bool(plan.gradient_checkpointing) and not _is_qlora(plan),
    }


def _is_qlora(plan) -> bool:
    profile = getattr(plan, "profile", None)
    return bool(profile is not None and profile.lora.method == "qlora")


def deepspeed_config(stage: int, cpu_offload: bool, precision: str) -> dict[str, Any]:
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if stage == 3:
        zero.update({
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            # Without it, saving under ZeRO-3 writes empty (40-byte) adapter tensors.
            "stage3_gather_16bit_weights_on_model_save": True,
        })
    if cpu_offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
    }


def current_launch() -> dict | None:
    """The launch of the run this rank belongs to (set by the rank entry point)."""
    raw = os.environ.get("WORKBENCH_LAUNCH")
    return json.loads(raw) if raw else None


def adjust_load_kwargs(kwargs: dict, plan) -> dict:
    """`from_pretrained` arguments under a distributed launch: each rank loads onto its own
    device (never device_map="auto", which would spread one replica over every GPU of the box
    from every rank); FSDP / ZeRO-3 load on the CPU and shard from there. QLoRA with FSDP
    stores the 4-bit weights in the model's dtype, or FSDP cannot flatten them with the rest
    and silently saves nothing."""
    launch = current_launch()
    if not launch or not is_distributed():
        return kwargs
    if kwargs.get("device_map") == "auto":
        raise DistributedError('device_map="auto" under a distributed launch would put every '
                               "rank's replica across all GPUs; each rank loads to its own GPU")
    sharded = launch["strategy"] == "fsdp" or (launch["strategy"] == "deepspeed"
                                               and launch["zero_stage"] == 3)
    quant = kwargs.get("quantization_config")
    if quant is not None:
        storage = getattr(quant, "bnb_4bit_quant_storage", None)
        import torch

        if sharded and storage != kwargs.get("dtype", torch.bfloat16):
            raise DistributedError(
                f"QLoRA with {launch['strategy']} needs bnb_4bit_quant_storage = the model dtype "
                f"({kwargs.get('dtype')}), got {storage}: FSDP would silently save nothing",
            )
    if launch["device"] != "cuda":
        kwargs.pop("device_map", None)
    elif sharded:
        kwargs.pop("device_map", None)  # loaded on CPU, sharded onto the GPUs by FSDP / ZeRO-3
    elif "device_map" in kwargs:
        kwargs["device_map"] = {"": local_rank()}
    return kwargs


def check_adapter(adapter_dir: Path, model) -> None:
    """Before a run is called finished: the saved adapter holds every trainable tensor at
    its full size (ZeRO-3 and misconfigured FSDP have written 40-byte adapters of empty
    tensors)."""
    from peft import get_peft_model_state_dict
    from safetensors import safe_open

    path = Path(adapter_dir) / "adapter_model.safetensors"
    hint = ("for DeepSpeed ZeRO-3 stage3_gather_16bit_weights_on_model_save must be true; for "
            "FSDP state_dict_type FULL_STATE_DICT (workbench sets both); the last checkpoint "
            "can be resumed")
    if not path.is_file():
        raise RunError(f"the adapter was not saved: {path} is missing", hint=hint, kind="adapter")
    expected = {k: int(v.numel()) for k, v in get_peft_model_state_dict(model).items()}
    with safe_open(str(path), framework="pt") as fh:
        saved = {k: int(_numel(fh.get_slice(k).get_shape())) for k in fh.keys()}
    missing = sorted(set(expected) - set(saved))
    short = sorted(k for k in set(expected) & set(saved) if saved[k] != expected[k])
    if missing or short:
        what = (f"{len(missing)} tensor(s) missing (e.g. {missing[0]})" if missing else
                f"{len(short)} tensor(s) with the wrong size (e.g. {short[0]}: {saved[short[0]]} "
                f"values, expected {expected[short[0]]})")
        raise RunError(f"the saved adapter in {adapter_dir} is incomplete: {what}; "
                       f"{path.stat().st_size:,} bytes on disk", hint=hint, kind="adapter")


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def save_adapter_distributed(trainer, plan, run: RunDir) -> str:
    """Every rank calls the trainer's own save (it gathers FSDP / ZeRO-3 shards; for DDP only
    the main process writes); rank 0 adds the tokenizer and the manifest, checks the adapter
    and renames it into place."""
    import shutil

    staging = run.path / ".adapter.partial"
    if is_main():
        shutil.rmtree(staging, ignore_errors=True)
    barrier()
    trainer.save_model(str(staging))
    barrier()
    if is_main():
        plan.tokenizer.save_pretrained(str(staging))
        check_adapter(staging, trainer.model)
        try:
            from workbench.train.checkpoints import write_manifest
        except ImportError:  # pragma: no cover - older tree without manifests
            write_manifest = None
        if write_manifest is not None:
            write_manifest(staging)
        if run.adapter_dir.exists():
            shutil.rmtree(run.adapter_dir)
        os.replace(staging, run.adapter_dir)
    barrier()
    return str(run.adapter_dir)


def check_rank_loss(loss_value: float, step: int) -> None:
    """Loss exactly 0.0 on a rank means it trained on nothing (all labels masked, or the
    broken FSDP + QLoRA setups that report 0.0); with NaN, it fails the run naming the rank."""
    if is_distributed() and loss_value == 0.0:
        from workbench.train.plan import NonFiniteLoss

        raise NonFiniteLoss(step, 0.0)


# ---- what each rank saw -------------------------------------------------------------------

_SEEN: list[str] = []
SEEN_KEPT = 10_000  # the first rows only: enough to check, small in ranks/rank-N.json


def note_batch(inputs: dict) -> None:
    """Fingerprints of the rows this rank trained on, in order (checked: ranks see different
    data, and a resumed run goes on with the data rather than starting it over)."""
    if "input_ids" not in inputs or len(_SEEN) >= SEEN_KEPT:
        return
    for row in inputs["input_ids"].tolist():
        _SEEN.append(hashlib.sha1(json.dumps(row).encode()).hexdigest()[:16])


# ---- the run folder seen from a rank ------------------------------------------------------

class RankRunDir(RunDir):
    """The run folder as one rank of a distributed run sees it. Rank 0 writes status and
    events like a single-process run, except the pid (the launcher's stays: `stop` signals
    the launcher). Other ranks write nothing shared; their own record goes to
    ranks/rank-N.json."""

    def __init__(self, path: Path, rank_: int):
        super().__init__(path)
        self.rank = rank_

    @property
    def rank_path(self) -> Path:
        return self.path / RANKS_DIR / f"rank-{self.rank}.json"

    def write_rank(self, **fields) -> None:
        self.rank_path.parent.mkdir(exist_ok=True)
        try:
            record = json.loads(self.rank_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {}
        record.update(fields, updated_at=iso(time.time()))
        write_json_atomic(self.rank_path, record)

    def write_status(self, **fields: Any) -> dict:
        fields.pop("pid", None)
        if fields.get("state") in ("failed", "stopped", "finished"):
            self.write_rank(state=fields["state"], message=fields.get("message"),
                            hint=fields.get("hint"))
        if self.rank != 0:
            return self.read_status()
        if fields.get("state") == "failed":
            # A failing rank 0 often only lost a peer (gloo/NCCL "connection reset"): the
            # launcher, which sees every rank's exit, writes the failure and names the rank.
            for key in ("state", "message", "hint", "ended_at"):
                fields.pop(key, None)
        return super().write_status(**fields)

    def append_event(self, type_: str, **fields: Any) -> dict:
        if type_ == "error":
            self.write_rank(error_kind=fields.get("kind"), error=fields.get("message"))
            fields["message"] = f"rank {self.rank}: {fields.get('message')}"
        if self.rank != 0 or (type_ == "status" and fields.get("state") == "failed"):
            return {"type": type_, "time": round(time.time(), 3), **fields}
        return super().append_event(type_, **fields)
