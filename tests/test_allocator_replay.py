"""bench/allocator_replay.py: the model of torch's CUDA caching allocator and the tracer that
feeds it (issue 10's evidence for why the allocator's reserve is not a function of the shape).
The allocator rules are checked on hand-made sequences; the tracer on a 2-layer SmolLM2 step."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import REPO

spec = importlib.util.spec_from_file_location("allocator_replay", REPO / "bench" / "allocator_replay.py")
replay_mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(replay_mod)
MiB, GiB = replay_mod.MiB, replay_mod.GiB


def test_segment_sizes_follow_the_caching_allocator():
    A = replay_mod.CachingAllocator()
    A.malloc(100)                       # small pool: a 2 MiB segment
    A.malloc(3 * MiB)                   # 1-10 MiB: a 20 MiB segment
    assert A.reserved == 22 * MiB and A.allocated == 512 + 3 * MiB
    A.malloc(11 * MiB + 1)              # best fit: the 17 MiB rest of that segment
    assert A.reserved == 22 * MiB
    A.malloc(11 * MiB + 1)              # nothing fits: a segment rounded up to 2 MiB
    assert A.reserved == 34 * MiB and A.n_malloc == 3


def test_best_fit_split_makes_a_big_request_take_a_new_segment():
    """The mechanism found on the H200 points: a small request that finds no block of its size
    splits a big free block, and the next big request needs a new segment."""
    A = replay_mod.CachingAllocator()
    big = A.malloc(400 * MiB)
    A.free_block(big)                   # cached: reserved stays 400 MiB
    assert A.reserved == 400 * MiB and A.allocated == 0
    small = A.malloc(76 * MiB)          # best fit is the big block: split
    A.malloc(400 * MiB)                 # does not fit in the 324 MiB rest: a new segment
    assert A.reserved == 800 * MiB and A.max_allocated == 476 * MiB
    A.free_block(small)                 # freed neighbours coalesce back into one block
    again = A.malloc(400 * MiB)
    assert A.reserved == 800 * MiB and again.addr == big.addr


def test_replay_counts_the_peak_after_reset():
    events = [("a", 1, 50 * MiB, "x"), ("f", 1), ("mark", "reset_peak"),
              ("a", 2, 20 * MiB, "y"), ("a", 3, 40 * MiB, "z"), ("f", 2), ("f", 3)]
    A = replay_mod.replay(events, workspaces=0)
    # the cached 50 MiB block is split (20 + a 30 rest); the 40 MiB request needs a new segment
    assert A.max_allocated == 60 * MiB and A.max_reserved == 90 * MiB


@pytest.mark.skipif(not (REPO.parent / "shared" / "data" / "gpu-truth" / "archs.json").is_file(),
                    reason="../shared/data/gpu-truth is absent")
def test_trace_of_a_small_smollm2_step_is_balanced_and_leaves_torch_as_it_was():
    import peft.tuners.tuners_utils as tu
    import torch.nn.functional as F
    import transformers.masking_utils as mu

    before = (F.scaled_dot_product_attention, mu.is_tracing, mu.find_packed_sequence_indices,
              tu.BaseTunerLayer._move_adapter_to_device_of_base_layer)
    archs = json.loads((REPO.parent / "shared" / "data" / "gpu-truth" / "archs.json").read_text())
    events, trainable, n_ops = replay_mod.trace_point(archs["SmolLM2-135M"], 8, "qkvo", 1, 64,
                                                      False, steps=2, num_layers=2)
    assert trainable > 0 and n_ops > 100
    allocs = {e[1]: e[2] for e in events if e[0] == "a"}
    freed = {e[1] for e in events if e[0] == "f"}
    assert freed <= set(allocs)         # nothing freed that was not allocated
    A = replay_mod.replay(events)
    assert A.max_reserved >= A.max_allocated > 0
    # the tracer patches SDPA, transformers' masking and peft globally: all restored
    assert before == (F.scaled_dot_product_attention, mu.is_tracing, mu.find_packed_sequence_indices,
                      tu.BaseTunerLayer._move_adapter_to_device_of_base_layer)
