"""Replay a LoRA training step's device allocations through a model of PyTorch's CUDA caching allocator.

Why: the analytic estimator (workbench/estimate/memory.py) gets *allocated* bytes within a few percent
of the H200 measurements, but the allocator's reserve (peak_reserved - peak_alloc) varies from 0.2 to
5 GiB between neighbouring configurations.  This script records the exact order and sizes of the
device allocations and frees of the probe's step (gpu-truth/probe_vram.py) without a GPU and replays
them through a Python model of c10/cuda/CUDACachingAllocator.cpp, to see when the extra blocks stay
reserved.

How the trace is made (no GPU, no real compute):
  * the real transformers + peft model is built from archs.json under FakeTensorMode on the *CPU*
    device (a CPU-only torch cannot fake "cuda" tensors: autograd asks the CUDA guard for a stream);
  * bf16 autocast is the CPU one (same casts for linear/matmul, which is all these models use);
  * SDPA is replaced by an autograd.Function that allocates what CUDA's flash-attention-2 path
    (aten._scaled_dot_product_flash_attention, the one chosen on an H200 for bf16, causal, no mask,
    head_dim <= 256, enable_gqa) allocates: out (B,S,H,D) bf16, logsumexp (B,H,S) fp32 in forward;
    dq/dk/dv, softmax_d (B,H,S128) fp32, dq_accum (B,S128,H,D) fp32, and for GQA dk/dv expanded to H
    heads then summed, in backward;
  * AdamW is forced to foreach=True (on CPU torch would pick the for-loop) and its `step` scalars,
    which live on the host on CUDA (capturable=False), are not counted as device allocations;
  * a TorchDispatchMode logs every op's output storages (a storage counted once, so views do not
    count twice) and a weakref finalizer on each storage logs its free when the storage really dies
    (autograd's saved tensors keep storages alive exactly as on the device);
  * the two cuBLAS workspaces (forward thread and autograd's backward thread, CUBLAS_WS each) are
    allocated before everything else: in the probe's process they were created by its first point and
    stay alive (allocating them inside the step instead moves some points' reserve by 0.1-1.5 GiB).

The allocator model (torch 2.x defaults, no PYTORCH_CUDA_ALLOC_CONF): sizes rounded up to 512 B;
<= 1 MiB from the small pool (2 MiB segments), 1-10 MiB requests get 20 MiB segments, larger ones
a segment of the size rounded up to 2 MiB; best fit (smallest free block >= size, then lowest
address) in the pool; a found block is split when the remainder is >= 512 B (small pool) or > 1 MiB
(large pool); freed blocks coalesce with free neighbours of the same segment; no empty_cache during
steps.  The probe's history is modelled as: build the model (all its allocations), empty_cache,
peft adapters, optimizer, ids, reset of the peak stats, then 4 steps.

Run:  HF_HUB_OFFLINE=1 .venv/bin/python bench/allocator_replay.py [--points all|big|NAME...]
      [--steps 4] [--out replay.jsonl]
      each point takes ~0.5-3 min of one CPU core.
"""
from __future__ import annotations

import argparse
import bisect
import gc
import json
import os
import time
import weakref

# The shared measurements beside the repository (../shared/data/gpu-truth), as the other benchmarks.
GPU_TRUTH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.pardir,
                         "shared", "data", "gpu-truth")
MiB = 1 << 20
GiB = 1 << 30
CUBLAS_WS = 32 * MiB  # default workspace on Hopper (CUBLAS_WORKSPACE_CONFIG=:4096:8)


# ----------------------------------------------------------------------------------------------
# allocator model
# ----------------------------------------------------------------------------------------------
kMinBlockSize = 512
kSmallSize = 1 * MiB
kSmallBuffer = 2 * MiB
kLargeBuffer = 20 * MiB
kMinLargeAlloc = 10 * MiB
kRoundLarge = 2 * MiB


def round_size(n):
    if n < kMinBlockSize:
        return kMinBlockSize
    return kMinBlockSize * ((n + kMinBlockSize - 1) // kMinBlockSize)


def allocation_size(n):
    if n <= kSmallSize:
        return kSmallBuffer
    if n < kMinLargeAlloc:
        return kLargeBuffer
    return kRoundLarge * ((n + kRoundLarge - 1) // kRoundLarge)


class Block:
    __slots__ = ("addr", "size", "small", "allocated", "prev", "next", "seg", "label")

    def __init__(self, addr, size, small, seg):
        self.addr, self.size, self.small, self.seg = addr, size, small, seg
        self.allocated = False
        self.prev = self.next = None
        self.label = None


class CachingAllocator:
    def __init__(self):
        self.free = {True: [], False: []}  # pool(small?) -> sorted list of (size, addr, id)
        self.blocks = {}  # id -> Block (free ones, for the sorted-list payload)
        self.next_addr = 0
        self.allocated = 0
        self.reserved = 0
        self.max_allocated = 0
        self.max_reserved = 0
        self.segments = []  # list of [addr, size, small, first_block]
        self.n_malloc = 0

    def _insert_free(self, b):
        bisect.insort(self.free[b.small], (b.size, b.addr, id(b)))
        self.blocks[id(b)] = b

    def _remove_free(self, b):
        lst = self.free[b.small]
        i = bisect.bisect_left(lst, (b.size, b.addr, id(b)))
        assert lst[i][2] == id(b)
        del lst[i]
        del self.blocks[id(b)]

    def malloc(self, nbytes, label=None):
        size = round_size(nbytes)
        small = size <= kSmallSize
        lst = self.free[small]
        i = bisect.bisect_left(lst, (size, -1, -1))
        if i < len(lst):
            b = self.blocks[lst[i][2]]
            self._remove_free(b)
        else:  # cudaMalloc a new segment
            seg_size = allocation_size(size)
            b = Block(self.next_addr, seg_size, small, None)
            b.seg = b
            self.next_addr += seg_size + (1 << 40)  # segments are not contiguous
            self.reserved += seg_size
            self.max_reserved = max(self.max_reserved, self.reserved)
            self.segments.append(b)
            self.n_malloc += 1
        remaining = b.size - size
        if (small and remaining >= kMinBlockSize) or (not small and remaining > kSmallSize):
            rest = Block(b.addr + size, remaining, small, b.seg)
            rest.prev, rest.next = b, b.next
            if b.next is not None:
                b.next.prev = rest
            b.next = rest
            b.size = size
            self._insert_free(rest)
        b.allocated = True
        b.label = label
        self.allocated += b.size
        self.max_allocated = max(self.max_allocated, self.allocated)
        return b

    def free_block(self, b):
        assert b.allocated
        b.allocated = False
        self.allocated -= b.size
        for nb in (b.prev, b.next):
            if nb is not None and not nb.allocated:
                self._remove_free(nb)
                if nb is b.prev:
                    b.addr, b.size = nb.addr, nb.size + b.size
                    b.prev = nb.prev
                    if nb.prev is not None:
                        nb.prev.next = b
                    if nb.seg is nb:  # b is now the head of the segment
                        idx = self.segments.index(nb)
                        self.segments[idx] = b
                        b.seg = b
                        self._reseg(b)
                else:
                    b.size += nb.size
                    b.next = nb.next
                    if nb.next is not None:
                        nb.next.prev = b
        self._insert_free(b)

    def _reseg(self, head):
        x = head.next
        while x is not None:
            x.seg = head
            x = x.next

    def empty_cache(self):
        keep = []
        for s in self.segments:
            if s.prev is None and s.next is None and not s.allocated:
                self._remove_free(s)
                self.reserved -= s.size
            else:
                keep.append(s)
        self.segments = keep

    def reset_peak(self):
        self.max_allocated = self.allocated
        self.max_reserved = self.reserved

    def segment_report(self, min_size=64 * MiB):
        out = []
        for s in self.segments:
            if s.size < min_size:
                continue
            parts, x = [], s
            while x is not None:
                parts.append(("A" if x.allocated else "F", x.size, x.label))
                x = x.next
            out.append((s.size, parts))
        return out


def replay(events, workspaces=2):
    """events: list of ('a', key, nbytes, label) / ('f', key) / ('mark', name).

    Returns the allocator; A.seg_log lists the segments cudaMalloc'ed after the peak reset
    (event index, request label, request bytes, segment bytes, allocated, reserved), A.peak_alloc_at
    the label of the allocation that set the allocated peak."""
    A = CachingAllocator()
    A.seg_log = []
    A.peak_alloc_at = None
    live = {}
    after_reset = False
    # cuBLAS workspaces, one per thread that runs matmuls (forward thread, autograd's backward
    # thread): allocated by the probe's first point and alive ever since, so they sit in their own
    # segments before the model is built.
    for w in range(workspaces):
        A.malloc(CUBLAS_WS, f"cublas workspace {w}")
    for i, ev in enumerate(events):
        k = ev[0]
        if k == "a":
            _, key, nb, label = ev
            if nb == 0:
                continue
            n0, m0 = A.n_malloc, A.max_allocated
            live[key] = A.malloc(nb, label)
            if after_reset and A.n_malloc > n0:
                A.seg_log.append((i, label, nb, A.segments[-1].size, A.allocated, A.reserved))
            if A.max_allocated > m0:
                A.peak_alloc_at = (i, label)
        elif k == "f":
            b = live.pop(ev[1], None)
            if b is not None:
                A.free_block(b)
        elif k == "mark":
            if ev[1] == "empty_cache":
                A.empty_cache()
            elif ev[1] == "reset_peak":
                A.reset_peak()
                after_reset = True
    return A


# ----------------------------------------------------------------------------------------------
# tracer
# ----------------------------------------------------------------------------------------------
def trace_point(spec, r, targets, batch, seq, ckpt, steps=4, num_layers=None):
    import torch
    import torch.nn.functional as F
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils import _pytree as pytree

    QKVO = {"llama": ["q_proj", "k_proj", "v_proj", "o_proj"], "phi3": ["qkv_proj", "o_proj"]}
    LIN = {"llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
           "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]}

    events = []
    state = {"phase": "build", "skip_scalars": False, "n_ops": 0}
    live = {}

    def on_free(key):
        if live.pop(key, None) is not None:
            events.append(("f", key))

    class Tracker(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            state["n_ops"] += 1
            name = func.overloadpacket.__name__
            for t in pytree.tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self.track(t, name)
            return out

        def track(self, t, name):
            st = t.untyped_storage()
            key = st._cdata
            if key in live:
                return
            if state["skip_scalars"] and t.dim() == 0:
                return
            nb = st.nbytes()
            live[key] = True
            lab = f"{state['phase']}:{name}:{tuple(t.shape)}:{str(t.dtype)[6:]}"
            events.append(("a", key, nb, lab))
            weakref.finalize(st, on_free, key)

    # --- flash-attention-2 emulation (CUDA path of SDPA) ---
    class FlashSDPA(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, scale):
            B, H, S, D = q.shape
            out = torch.empty((B, S, H, D), dtype=q.dtype, device=q.device).transpose(1, 2)
            lse = torch.empty((B, H, S), dtype=torch.float32, device=q.device)
            ctx.save_for_backward(q, k, v, out, lse)
            return out

        @staticmethod
        def backward(ctx, dout):
            q, k, v, out, lse = ctx.saved_tensors
            B, H, S, D = q.shape
            Hk = k.shape[1]
            dout_t = dout.transpose(1, 2)
            if dout_t.stride(-1) != 1:
                dout_t = dout_t.contiguous()
            S128 = (S + 127) // 128 * 128
            Dr = (D + 31) // 32 * 32 if D <= 192 else 256
            dq = torch.empty((B, S, H, D), dtype=q.dtype, device=q.device)
            dk = torch.empty((B, S, Hk, D), dtype=q.dtype, device=q.device)
            dv = torch.empty((B, S, Hk, D), dtype=q.dtype, device=q.device)
            softmax_d = torch.empty((B, H, S128), dtype=torch.float32, device=q.device)
            dq_accum = torch.empty((B, S128, H, Dr), dtype=torch.float32, device=q.device)
            if Hk != H:
                dk_exp = torch.empty((B, S, H, D), dtype=q.dtype, device=q.device)
                dv_exp = torch.empty((B, S, H, D), dtype=q.dtype, device=q.device)
                torch.sum(dk_exp.view(B, S, Hk, H // Hk, D), dim=3, out=dk)
                torch.sum(dv_exp.view(B, S, Hk, H // Hk, D), dim=3, out=dv)
                del dk_exp, dv_exp
            del softmax_d, dq_accum, dout_t
            return dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2), None

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        assert attn_mask is None and is_causal and dropout_p == 0.0, ("only the causal no-mask path is emulated", type(attn_mask), is_causal, dropout_p)
        # autocast: sdpa is a lower-precision op
        if q.dtype != torch.bfloat16:
            q, k, v = q.to(torch.bfloat16), k.to(torch.bfloat16), v.to(torch.bfloat16)
        return FlashSDPA.apply(q, k, v, scale)

    # peft creates the adapters on the host and moves them to the base layer's device; here everything
    # is on the (fake) CPU already, and Module._apply's swap_tensors refuses FakeTensors with weakrefs.
    import peft.tuners.tuners_utils as tu
    # transformers treats FakeTensors as "tracing" and then keeps an explicit causal mask (no flash);
    # on the device the tensors are real, the mask is skipped and SDPA runs with is_causal=True.
    import transformers.masking_utils as mu
    patches = [(F, "scaled_dot_product_attention", sdpa),
               (mu, "is_tracing", lambda *a, **k: False),
               # rows are plain arange positions: not packed
               (mu, "find_packed_sequence_indices", lambda *a, **k: None),
               (tu.BaseTunerLayer, "_move_adapter_to_device_of_base_layer", lambda self, *a, **k: None)]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, value in patches:
        setattr(obj, name, value)
    try:
        return _trace(spec, r, targets, batch, seq, ckpt, steps, num_layers, events, state, Tracker,
                      QKVO, LIN)
    finally:  # the patches are global: leave torch, transformers and peft as they were
        for obj, name, value in saved:
            setattr(obj, name, value)


def _trace(spec, r, targets, batch, seq, ckpt, steps, num_layers, events, state, Tracker, QKVO, LIN):
    import torch
    from peft import LoraConfig, get_peft_model
    from torch._subclasses.fake_tensor import FakeTensorMode
    from transformers import AutoConfig, AutoModelForCausalLM

    fam = "phi3" if spec["model_type"] == "phi3" else "llama"
    mods = QKVO[fam] if targets == "qkvo" else LIN[fam]
    cfg = AutoConfig.for_model(**spec)
    if num_layers:
        cfg.num_hidden_layers = num_layers
    cfg._attn_implementation = "sdpa"
    fake = FakeTensorMode(allow_non_fake_inputs=False)
    tracker = Tracker()
    with fake, tracker:
        with torch.device("cpu"):
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
        events.append(("mark", "empty_cache"))
        state["phase"] = "peft"
        model.train()
        if ckpt:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        else:
            model.gradient_checkpointing_disable()
        orig_to = torch.nn.Module.to

        def to_same_device(self, *a, **k):  # device moves are no-ops here (all fake CPU)
            if any(isinstance(x, torch.dtype) for x in list(a) + list(k.values())):
                return orig_to(self, *a, **k)
            return self
        torch.nn.Module.to = to_same_device
        try:
            model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=mods, lora_dropout=0.0,
                                                     task_type="CAUSAL_LM"))
        finally:
            torch.nn.Module.to = orig_to
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=1e-4, foreach=True)
        ids = torch.randint(0, spec["vocab_size"], (batch, seq))
        events.append(("mark", "reset_peak"))
        for step in range(steps):
            state["phase"] = f"step{step}.fwd"
            events.append(("mark", state["phase"]))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(input_ids=ids, labels=ids)
            state["phase"] = f"step{step}.bwd"
            events.append(("mark", state["phase"]))
            out.loss.backward()
            state["phase"] = f"step{step}.opt"
            events.append(("mark", state["phase"]))
            state["skip_scalars"] = True
            opt.step()
            opt.zero_grad(set_to_none=True)
            state["skip_scalars"] = False
            del out
            gc.collect()
            events.append(("mark", f"step{step}.end"))
        n_trainable = sum(p.numel() for p in trainable)
        del opt, trainable, model, ids
        gc.collect()
    return events, n_trainable, state["n_ops"]


def load_truth():
    archs = json.load(open(os.path.join(GPU_TRUTH, "archs.json")))
    pts = []
    for line in open(os.path.join(GPU_TRUTH, "vram_h200_calibration.jsonl")):
        d = json.loads(line)
        if "arch" in d:
            pts.append(d)
    return archs, pts


def point_name(p):
    return f"{p['arch']}/{p['method']}/r{p['r']}{p['targets']}/{p['batch']}x{p['seq']}/ck{int(p['grad_ckpt'])}"


def run_point(archs, p, steps=4):
    t0 = time.time()
    events, ntr, nops = trace_point(archs[p["arch"]], p["r"], p["targets"], p["batch"], p["seq"],
                                    p["grad_ckpt"], steps=steps)
    A = replay(events)
    rec = dict(point=point_name(p), trainable=ntr, trainable_meas=p["trainable_params"],
               sim_alloc=A.max_allocated, sim_reserved=A.max_reserved,
               meas_alloc=p["peak_alloc"], meas_reserved=p["peak_reserved"],
               sim_res=A.max_reserved - A.max_allocated, meas_res=p["peak_reserved"] - p["peak_alloc"],
               n_events=len(events), n_ops=nops, secs=round(time.time() - t0, 1))
    return rec, events, A


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", nargs="*", default=["key"])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--out", default=None, help="append one JSON line per point to this file")
    ap.add_argument("--dump-events", default=None)
    a = ap.parse_args()
    archs, pts = load_truth()
    lora = [p for p in pts if p["method"] == "lora"]
    if a.points == ["key"]:
        sel = [p for p in lora if p["arch"] in ("Qwen2.5-0.5B", "SmolLM2-135M") and p["batch"] == 4
               and not p["grad_ckpt"]]
    elif a.points == ["all"]:
        sel = sorted(lora, key=lambda p: (p["batch"] * p["seq"], p["arch"]))
    else:
        sel = [p for p in lora if any(s in point_name(p) for s in a.points)]
    for p in sel:
        rec, events, A = run_point(archs, p, a.steps)
        if a.dump_events:
            import pickle
            pickle.dump(events, open(os.path.join(a.dump_events, point_name(p).replace("/", "_") + ".pkl"), "wb"))
        for sl in A.seg_log:
            if sl[3] >= 64 * MiB:
                print(f"   new segment {sl[3]/GiB:6.2f} GiB for {sl[1]} ({sl[2]/GiB:.3f} GiB) at event {sl[0]}:"
                      f" alloc {sl[4]/GiB:.2f} reserved {sl[5]/GiB:.2f}")
        print(f"   peak allocated at {A.peak_alloc_at}")
        print(f"{rec['point']:45s} alloc sim {rec['sim_alloc']/GiB:7.2f} meas {rec['meas_alloc']/GiB:7.2f} | "
              f"reserve sim {rec['sim_res']/GiB:6.2f} meas {rec['meas_res']/GiB:6.2f} | {rec['secs']}s", flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(rec) + "\n")
        del events, A
        gc.collect()


if __name__ == "__main__":
    main()
