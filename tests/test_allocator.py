"""workbench/estimate/allocator.py: the model of torch's CUDA caching allocator, checked on
hand-made sequences whose answers follow from CUDACachingAllocator.cpp's rules."""

from __future__ import annotations

from workbench.estimate.allocator import CachingAllocator, replay, round_size, segment_size

MiB = 1 << 20


def test_request_and_segment_sizes():
    assert round_size(1) == 512 and round_size(513) == 1024
    assert segment_size(512) == 2 * MiB                 # small pool
    assert segment_size(3 * MiB) == 20 * MiB            # 1-10 MiB requests share 20 MiB segments
    assert segment_size(11 * MiB + 512) == 12 * MiB     # larger: rounded up to 2 MiB


def test_segments_follow_the_caching_allocator():
    a = CachingAllocator()
    a.malloc(100)                       # small pool: a 2 MiB segment
    a.malloc(3 * MiB)                   # a 20 MiB segment
    assert a.reserved == 22 * MiB and a.allocated == 512 + 3 * MiB
    a.malloc(11 * MiB + 1)              # best fit: the 17 MiB rest of that segment
    assert a.reserved == 22 * MiB
    a.malloc(11 * MiB + 1)              # nothing fits: a segment of its size, rounded
    assert a.reserved == 34 * MiB and a.segments_created == 3


def test_small_and_large_pools_do_not_share_blocks():
    a = CachingAllocator()
    a.free(a.malloc(30 * MiB))
    a.malloc(1000)                      # a free 30 MiB large block exists, yet: a small segment
    assert a.reserved == 32 * MiB


def test_a_rest_of_one_mib_or_less_stays_with_the_block():
    a = CachingAllocator()
    a.free(a.malloc(20 * MiB))
    b = a.malloc(19 * MiB)              # 1 MiB left: not split off (large pool needs > 1 MiB)
    assert b.size == 20 * MiB and a.allocated == 20 * MiB


def test_best_fit_split_makes_a_big_request_take_a_new_segment():
    """The mechanism found on the H200 points: a request that finds no block of its size splits
    a big free block, and the next big request needs a new segment."""
    a = CachingAllocator()
    big = a.malloc(400 * MiB)
    a.free(big)                         # cached: reserved stays
    assert a.reserved == 400 * MiB and a.allocated == 0
    small = a.malloc(76 * MiB)          # the only block that fits is the big one: split
    a.malloc(400 * MiB)                 # the 324 MiB rest is too small: a new segment
    assert a.reserved == 800 * MiB and a.peak_allocated == 476 * MiB
    a.free(small)                       # freed neighbours merge back into one block
    again = a.malloc(400 * MiB)
    assert a.reserved == 800 * MiB and again.addr == big.addr


def test_best_fit_prefers_the_smallest_block_that_fits():
    a = CachingAllocator()
    x, y = a.malloc(100 * MiB), a.malloc(40 * MiB)
    a.free(x)
    a.free(y)
    assert a.malloc(30 * MiB).addr == y.addr


def test_empty_cache_returns_only_whole_free_segments():
    a = CachingAllocator()
    keep = a.malloc(50 * MiB)
    a.free(a.malloc(60 * MiB))
    part = a.malloc(30 * MiB)           # splits the freed 60 MiB segment
    a.empty_cache()
    assert a.reserved == 110 * MiB      # both segments hold something
    a.free(part)
    a.empty_cache()
    assert a.reserved == 50 * MiB and keep.allocated


def test_replay_counts_the_peaks_after_the_reset():
    events = [("a", 1, 50 * MiB, "x"), ("f", 1), ("mark", "reset_peak"),
              ("a", 2, 20 * MiB, "y"), ("a", 3, 40 * MiB, "z"), ("f", 2), ("f", 3),
              ("mark", "step1.forward")]
    r = replay(events)
    # the cached 50 MiB block is split (20 + a 30 rest); the 40 MiB request needs a new segment
    assert (r.peak_allocated, r.peak_reserved, r.segments_created) == (60 * MiB, 90 * MiB, 1)
    assert r.reserve == 30 * MiB and r.peak_label == "z"
    log: list = []
    replay(events, segment_log=log)     # segments created after the reset, with their request
    assert log == [("z", 40 * MiB, 40 * MiB, 60 * MiB, 90 * MiB)]
    # workspaces allocated before everything else take their own segments
    assert replay(events, preallocated=(32 * MiB,) * 2).peak_reserved == 154 * MiB
