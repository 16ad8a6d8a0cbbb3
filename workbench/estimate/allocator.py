"""A model of PyTorch's CUDA caching allocator (c10/cuda/CUDACachingAllocator.cpp, default
settings, no PYTORCH_CUDA_ALLOC_CONF), in pure Python: replay a step's allocations and frees
and read off what `torch.cuda.max_memory_reserved()` and `max_memory_allocated()` would say.

Why a model and not a rule: the allocator's reserve (reserved minus allocated at the peak) of
a training step ranges from 0.01 to 4.9 GiB on the H200 measurements, and it is decided by
fragmentation events (a request that finds no free block of its size splits a larger one,
and a later large request then needs a new segment), not by the step's shape. Replaying the
step's exact allocation order through the allocator's own rules reproduces those events
(bench/allocator_replay.md).

The rules modelled:
- request sizes round up to 512 B; requests of at most 1 MiB come from the small pool
  (2 MiB segments), larger ones from the large pool;
- a large request below 10 MiB gets a 20 MiB segment, a larger one a segment of its size
  rounded up to 2 MiB;
- best fit: the smallest free block of the pool that is large enough (lowest address among
  equals); a found block is split when the remainder is at least 512 B (small pool) or more
  than 1 MiB (large pool);
- a freed block merges with free neighbours of its own segment; segments are never returned
  during a step (`empty_cache` is an explicit event).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

MIB = 1 << 20

MIN_BLOCK = 512
SMALL_REQUEST = 1 * MIB
SMALL_SEGMENT = 2 * MIB
MID_SEGMENT = 20 * MIB
MIN_LARGE_SEGMENT = 10 * MIB
LARGE_ROUNDING = 2 * MIB


def round_size(nbytes: int) -> int:
    return max(MIN_BLOCK, MIN_BLOCK * -(-nbytes // MIN_BLOCK))


def segment_size(size: int) -> int:
    """Bytes cudaMalloc'ed when a request of `size` (already rounded) finds no free block."""
    if size <= SMALL_REQUEST:
        return SMALL_SEGMENT
    if size < MIN_LARGE_SEGMENT:
        return MID_SEGMENT
    return LARGE_ROUNDING * -(-size // LARGE_ROUNDING)


class Block:
    __slots__ = ("addr", "size", "small", "allocated", "prev", "next", "label")

    def __init__(self, addr: int, size: int, small: bool):
        self.addr, self.size, self.small = addr, size, small
        self.allocated = False
        self.prev: Block | None = None
        self.next: Block | None = None
        self.label = ""


class CachingAllocator:
    def __init__(self) -> None:
        # per pool (small?): free blocks as a sorted list of (size, addr), and addr -> Block
        self._free: dict[bool, list[tuple[int, int]]] = {True: [], False: []}
        self._free_at: dict[int, Block] = {}
        self._next_addr = 0
        self.allocated = self.reserved = 0
        self.peak_allocated = self.peak_reserved = 0
        self.segments_created = 0
        self.last_segment = 0         # bytes of the segment created last
        self.peak_label = ""          # the request that set the allocated peak

    def _insert_free(self, b: Block) -> None:
        bisect.insort(self._free[b.small], (b.size, b.addr))
        self._free_at[b.addr] = b

    def _remove_free(self, b: Block) -> None:
        pool = self._free[b.small]
        del pool[bisect.bisect_left(pool, (b.size, b.addr))]
        del self._free_at[b.addr]

    def malloc(self, nbytes: int, label: str = "") -> Block:
        size = round_size(nbytes)
        small = size <= SMALL_REQUEST
        pool = self._free[small]
        i = bisect.bisect_left(pool, (size, -1))
        if i < len(pool):
            b = self._free_at[pool[i][1]]
            self._remove_free(b)
        else:
            self.last_segment = segment_size(size)
            b = Block(self._next_addr, self.last_segment, small)
            # segments are separate device allocations: leave a gap so none merge
            self._next_addr += b.size + (1 << 40)
            self.reserved += b.size
            self.peak_reserved = max(self.peak_reserved, self.reserved)
            self.segments_created += 1
        remaining = b.size - size
        if (remaining >= MIN_BLOCK) if small else (remaining > SMALL_REQUEST):
            rest = Block(b.addr + size, remaining, small)
            rest.prev, rest.next = b, b.next
            if b.next is not None:
                b.next.prev = rest
            b.next, b.size = rest, size
            self._insert_free(rest)
        b.allocated, b.label = True, label
        self.allocated += b.size
        if self.allocated > self.peak_allocated:
            self.peak_allocated, self.peak_label = self.allocated, label
        return b

    def free(self, b: Block) -> None:
        b.allocated = False
        self.allocated -= b.size
        prev, nxt = b.prev, b.next
        if prev is not None and not prev.allocated:
            self._remove_free(prev)
            prev.size += b.size
            prev.next = nxt
            if nxt is not None:
                nxt.prev = prev
            b = prev
        if nxt is not None and not nxt.allocated:
            self._remove_free(nxt)
            b.size += nxt.size
            b.next = nxt.next
            if nxt.next is not None:
                nxt.next.prev = b
        self._insert_free(b)

    def empty_cache(self) -> None:
        """Return every segment that is entirely free (torch.cuda.empty_cache)."""
        for pool in (True, False):
            for size, addr in list(self._free[pool]):
                b = self._free_at[addr]
                if b.prev is None and b.next is None:
                    self._remove_free(b)
                    self.reserved -= b.size

    def reset_peak(self) -> None:
        self.peak_allocated, self.peak_reserved = self.allocated, self.reserved
        self.peak_label = ""


@dataclass(frozen=True)
class Replay:
    peak_allocated: int
    peak_reserved: int
    segments_created: int   # cudaMalloc calls after the peak reset (steady state: few)
    peak_label: str         # the allocation that set the allocated peak

    @property
    def reserve(self) -> int:
        return self.peak_reserved - self.peak_allocated


def replay(events, preallocated: tuple[int, ...] = (), segment_log: list | None = None) -> Replay:
    """Replay `events`: ("a", key, nbytes, label) allocates, ("f", key) frees what `key`
    holds, ("mark", "empty_cache") and ("mark", "reset_peak") act on the allocator, other
    marks are ignored. `preallocated` sizes are allocated first and never freed (cuBLAS
    workspaces that outlive the step). The peaks are those since the last reset_peak.
    `segment_log`, if given, receives (request label, request bytes, segment bytes, allocated,
    reserved) for every segment created after the reset."""
    a = CachingAllocator()
    for n in preallocated:
        a.malloc(n, "preallocated")
    live: dict = {}
    segments_at_reset = a.segments_created
    after_reset = False
    for ev in events:
        kind = ev[0]
        if kind == "a":
            if ev[2] > 0:
                before = a.segments_created
                live[ev[1]] = a.malloc(ev[2], ev[3])
                if segment_log is not None and after_reset and a.segments_created > before:
                    segment_log.append((ev[3], ev[2], a.last_segment,
                                        a.allocated, a.reserved))
        elif kind == "f":
            b = live.pop(ev[1], None)
            if b is not None:
                a.free(b)
        elif ev[1] == "empty_cache":
            a.empty_cache()
        elif ev[1] == "reset_peak":
            a.reset_peak()
            segments_at_reset, after_reset = a.segments_created, True
    return Replay(a.peak_allocated, a.peak_reserved, a.segments_created - segments_at_reset,
                  a.peak_label)
