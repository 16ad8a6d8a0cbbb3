"""Memory, time and cost per GPU when one run spans several GPUs (torchrun; DDP, FSDP2,
DeepSpeed ZeRO-2 / ZeRO-3). Pure Python, no torch: it rewrites the one-GPU estimate of
memory.py term by term, so every number still says where it came from.

What each strategy keeps on every GPU (N = world size, the number of GPUs of the run):

- DDP: a full replica. Everything memory.py counts for one GPU, plus DDP's gradient buckets:
  torch's DistributedDataParallel copies the gradients of the trainable parameters into
  flat buckets for the all-reduce (`gradient_as_bucket_view` is off by default, so the
  buckets are a second copy): trainable params x their width.
- FSDP2 (`fully_shard` per decoder layer, the root holding embeddings and output layer):
  weights (frozen and trainable), gradients and optimizer states divided by N; during the
  forward and backward a layer's weights are all-gathered before it runs and freed after,
  with the next layer prefetched, so two layers' unsharded weights are alive; the root
  module (embeddings, output layer, final norm) is gathered for the whole step (FSDP2 does
  not reshard the root after its forward: the backward needs it at once).
- DeepSpeed ZeRO-2: gradients and optimizer states divided by N, weights replicated.
- DeepSpeed ZeRO-3: as FSDP (parameters partitioned, gathered a layer at a time with prefetch).
- cpu_offload: FSDP2's CPUOffloadPolicy keeps the sharded parameters, gradients and optimizer
  states in CPU memory; DeepSpeed's offload_optimizer moves optimizer states (and the
  optimizer step) to the CPU, and ZeRO-3's offload_param the partitioned weights too.

Activations are not sharded by any of them: each rank runs its own micro-batch of
`batch x seq`, so saved activations, logits and recomputation stay as for one GPU.
Collective-communication buffers (NCCL's own, ~0.1-0.5 GiB depending on the version and
topology) are not modeled; the output says so.

Time: each rank computes its own micro-batch, so N GPUs process N micro-batches in the time
of one, times a scaling factor for communication (SCALING below). These factors are stated
assumptions from published DDP / FSDP scaling on NVLink nodes (not measured by workbench on
GPUs): the output names the factor used.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from workbench.estimate.memory import (RESERVE_TRAINABLE_SHARE, Estimate, Term, _gib, _width)
from workbench.estimate.params import Architecture

STRATEGIES = ("ddp", "fsdp", "deepspeed")

# Share of N x (one GPU's throughput) that N GPUs reach within one node (NVLink / PCIe):
# DDP overlaps its gradient all-reduce with the backward; FSDP and ZeRO-3 add an all-gather
# per layer in the forward and the backward; ZeRO-2 a reduce-scatter of the gradients.
SCALING = {"ddp": 0.90, "fsdp": 0.80, "deepspeed-2": 0.85, "deepspeed-3": 0.75}
# Across machines the collectives cross the network (typically 100-400 Gb/s vs NVLink's
# 900 GB/s): a further factor once there is more than one node.
INTER_NODE_SCALING = 0.85
LAYERS_GATHERED = 2  # the layer that runs and the one prefetched (FSDP2 / ZeRO-3 default)

SHARDED_FSDP = ("frozen weights", "quantization constants", "trainable params",
                "optimizer states", "optimizer step temporaries")
SHARDED_ZERO2 = ("optimizer states", "optimizer step temporaries")


def strategy_key(strategy: str, zero_stage: int = 3) -> str:
    """"ddp", "fsdp", "deepspeed-2" or "deepspeed-3": the keys of SCALING and of the output."""
    if strategy == "deepspeed":
        return f"deepspeed-{zero_stage}"
    return strategy


def scaling_factor(strategy: str, zero_stage: int = 3, nnodes: int = 1) -> float:
    factor = SCALING[strategy_key(strategy, zero_stage)]
    return factor * (INTER_NODE_SCALING if nnodes > 1 else 1.0)


@dataclass
class PerGpuEstimate:
    strategy: str  # "ddp", "fsdp", "deepspeed-2", "deepspeed-3"
    world: int
    cpu_offload: bool
    peak_bytes: int
    reserved_bytes: int
    breakdown: "OrderedDict[str, int]"
    terms: list[Term]
    notes: list[str] = field(default_factory=list)

    def explain(self) -> str:
        width = max(len(t.name) for t in self.terms)
        offload = ", cpu_offload" if self.cpu_offload else ""
        lines = [f"Per GPU with {self.strategy} on {self.world} GPUs{offload}: "
                 f"{_gib(self.peak_bytes)}"]
        for t in self.terms:
            lines.append(f"  {t.name:<{width}}  {_gib(t.bytes):>10}  {t.why}")
        lines.extend(f"Note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "world": self.world, "cpu_offload": self.cpu_offload,
                "peak_bytes": self.peak_bytes, "reserved_bytes": self.reserved_bytes,
                "breakdown": dict(self.breakdown),
                "explain": {t.name: t.why for t in self.terms}, "notes": list(self.notes)}


def _param_bytes(est: Estimate) -> int:
    """Width of the trainable parameters: peft adapters are fp32; a full fine-tune keeps
    the precision dtype (memory.py's `param_bytes`)."""
    return _width(est.settings.precision) if est.settings.method == "full" else 4


def layer_weight_bytes(arch: Architecture, est: Estimate) -> int:
    """One decoder layer's weights as stored (what an all-gather materializes): nf4 packed
    plus constants and fp32 norms for QLoRA, the precision dtype otherwise, plus the layer's
    adapters in fp32."""
    s = est.settings
    linear = sum(lin.d_in * lin.d_out for lin in arch.linears)
    biases = arch.layer_linear_params - linear
    if s.method == "qlora":
        base = linear // 2 + linear // 64 + (biases + arch.layer_norm_params) * 4
    else:
        base = (arch.layer_linear_params + arch.layer_norm_params) * _width(s.precision)
    adapters = 0 if s.method == "full" else est.trainable_params // max(arch.layers, 1) * 4
    return base + adapters


def root_weight_bytes(arch: Architecture, est: Estimate) -> int:
    """Embeddings, output layer (untied) and final norm: the root module's weights.
    QLoRA keeps them in fp32 (prepare_model_for_kbit_training upcasts them)."""
    w = 4 if est.settings.method == "qlora" else _width(est.settings.precision)
    return (arch.embedding_params + arch.lm_head_params + arch.hidden) * w


def per_gpu_memory(est: Estimate, arch: Architecture, strategy: str, world: int,
                   zero_stage: int = 3, cpu_offload: bool = False) -> PerGpuEstimate:
    """The one-GPU estimate `est` rewritten for `world` GPUs under `strategy`."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if world < 1:
        raise ValueError(f"world size must be at least 1, got {world}")
    key = strategy_key(strategy, zero_stage)
    fully_sharded = key in ("fsdp", "deepspeed-3")
    if fully_sharded:
        sharded = SHARDED_FSDP
    elif key == "deepspeed-2":
        sharded = SHARDED_ZERO2
    else:
        sharded = ()
    # Gradients are sharded too where the optimizer step holds the peak (all of them exist
    # then); during the backward memory.py counts one layer's, which exist unsharded until
    # their reduce-scatter.
    if est.phase == "the optimizer steps" and key != "ddp":
        sharded = sharded + ("gradients",)
    offloaded: tuple[str, ...] = ()
    if cpu_offload and key == "fsdp":
        offloaded = SHARDED_FSDP + ("gradients",)
    elif cpu_offload and key == "deepspeed-2":
        offloaded = SHARDED_ZERO2
    elif cpu_offload and key == "deepspeed-3":
        offloaded = SHARDED_FSDP

    param_bytes = _param_bytes(est)
    trainable_b = est.trainable_params * param_bytes
    terms: list[Term] = []
    notes: list[str] = []
    reserve_dynamic = None
    for t in est.terms:
        if t.name == "allocator reserve":
            # memory.py: 10% of the step's transient bytes + 50% of the trainable params'
            # bytes; the second part follows the trainable params as sharded here.
            reserve_dynamic = t.bytes - int(RESERVE_TRAINABLE_SHARE * trainable_b)
            continue
        if t.name == "CUDA context":
            continue
        if t.name in offloaded:
            terms.append(Term(t.name, 0, f"in CPU memory (cpu_offload); was {_gib(t.bytes)}"))
        elif t.name in sharded and world > 1:
            terms.append(Term(t.name, -(-t.bytes // world),
                              f"{_gib(t.bytes)} / {world} GPUs ({t.why})"))
        else:
            terms.append(Term(t.name, t.bytes, t.why))
    if key == "ddp" and world > 1:
        terms.append(Term("DDP gradient buckets", trainable_b,
                          f"a flat copy of the {est.trainable_params:,} trainable params' "
                          f"gradients ({param_bytes} bytes each) for the all-reduce"))
    if fully_sharded and world > 1:
        layer = layer_weight_bytes(arch, est)
        terms.append(Term("all-gather buffers", LAYERS_GATHERED * layer,
                          f"{LAYERS_GATHERED} decoder layers unsharded at a time (the one "
                          f"running and the next, prefetched): {_gib(layer)} each"))
        root = root_weight_bytes(arch, est)
        terms.append(Term("root module gathered", root,
                          "embeddings, output layer and final norm, gathered for the whole step"))
    sharded_trainable = (0 if "trainable params" in offloaded else
                         -(-trainable_b // world) if "trainable params" in sharded else trainable_b)
    reserve = max(reserve_dynamic or 0, 0) + int(RESERVE_TRAINABLE_SHARE * sharded_trainable)
    terms.append(Term("allocator reserve", reserve,
                      "as for one GPU: 10% of the step's transient bytes + 50% of the "
                      "trainable parameters' bytes held on this GPU"))
    reserved = sum(t.bytes for t in terms)
    context = next(t for t in est.terms if t.name == "CUDA context")
    terms.append(Term(context.name, context.bytes, context.why))
    if world > 1:
        notes.append("collective-communication buffers (NCCL) are not counted: allow a few "
                     "hundred MiB per GPU")
    if key != "ddp" and world > 1:
        notes.append("activations are not sharded: each GPU runs its own batch x seq "
                     "micro-batch")
    breakdown = OrderedDict((t.name, t.bytes) for t in terms)
    return PerGpuEstimate(strategy=key, world=world, cpu_offload=cpu_offload,
                          peak_bytes=reserved + context.bytes, reserved_bytes=reserved,
                          breakdown=breakdown, terms=terms, notes=notes)


def choose_strategy(replica_peak_bytes: int, available_bytes: int | None) -> tuple[str, str]:
    """`strategy = "auto"`: DDP when a full replica fits each GPU (fastest, simplest),
    FSDP2 otherwise. Returns (strategy, why) -- the why goes to the console and events."""
    if available_bytes is None:
        return "ddp", "no GPU memory figure to compare with: DDP (a full replica per GPU)"
    if replica_peak_bytes <= available_bytes:
        return "ddp", (f"a full replica ({_gib(replica_peak_bytes)}) fits each GPU "
                       f"({_gib(available_bytes)}): DDP, the fastest")
    return "fsdp", (f"a full replica ({_gib(replica_peak_bytes)}) does not fit a GPU "
                    f"({_gib(available_bytes)}): FSDP2 shards weights, gradients and "
                    "optimizer states across the GPUs")


@dataclass(frozen=True)
class MultiGpuTime:
    gpu: str
    gpus: int
    strategy: str
    scaling: float
    tokens_per_step: int  # per optimizer step, over every GPU
    steps: int | None
    tokens_total: int | None
    tokens_per_second: float  # over every GPU
    seconds: float | None
    usd: float | None  # for all the GPUs
    usd_per_hour: float  # for all the GPUs
    plan: str

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def estimate_time_multi(one_gpu, s, world: int, strategy: str, zero_stage: int = 3,
                        nnodes: int = 1, data=None, epochs: float = 1.0,
                        max_steps: int = -1) -> MultiGpuTime:
    """`one_gpu`: speed.estimate_time's answer for one GPU with the same per-GPU settings `s`.
    Each optimizer step on `world` GPUs takes `world` micro-batches per accumulation step,
    so an epoch has 1/world of the steps, and a fixed `max_steps` trains on more data."""
    from workbench.estimate.speed import passes, plan_steps

    factor = scaling_factor(strategy, zero_stage, nnodes) if world > 1 else 1.0
    plan = plan_steps(s, data, epochs, max_steps, world)
    seconds_micro = one_gpu.step_seconds / s.grad_accum
    seconds = (plan.micro_batches * seconds_micro / factor
               if plan.micro_batches is not None else None)
    rate = one_gpu.usd_per_hour * world
    return MultiGpuTime(gpu=one_gpu.gpu, gpus=world, strategy=strategy_key(strategy, zero_stage),
                        scaling=factor, tokens_per_step=one_gpu.tokens_per_step * world,
                        steps=plan.steps,
                        tokens_total=(round(plan.micro_batches * passes(s).trained
                                            * plan.row_tokens * world)
                                      if plan.micro_batches is not None else None),
                        tokens_per_second=one_gpu.tokens_per_second * world * factor,
                        seconds=seconds, usd=seconds / 3600 * rate if seconds is not None else None,
                        usd_per_hour=rate, plan=plan.why)
