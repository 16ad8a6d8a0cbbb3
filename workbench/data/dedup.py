"""Exact and near-duplicate detection for conversation records.

Exact duplicates
    Two rows are exact duplicates when their *normalized* text is equal: lower-cased, with every run
    of whitespace collapsed to one space and the ends stripped (`normalize_text`). `exact_key` is the
    128-bit xxh3 hash of that text, so collisions are negligible even for billions of rows.

Near duplicates — threshold semantics
    Each text is turned into the set of its character 5-grams ("shingles") after the same
    normalization. Two rows are near duplicates when the estimated Jaccard similarity of their
    shingle sets, |A ∩ B| / |A ∪ B|, is >= `threshold`. Character shingles (rather than word
    3-grams) are used because they are robust to tokenisation, punctuation and non-space-separated
    scripts, and because a handful of edited words changes few of ~700 shingles: e.g. changing 5
    words of a 700-character answer keeps J ~ 0.88, while two unrelated English texts share
    J < 0.1. Texts shorter than 5 characters form a single shingle (the whole text).

    The Jaccard similarity is estimated with one-permutation MinHash (OPH, Li et al. 2012): every
    shingle is hashed once (vectorized 64-bit mixing in numpy); the hash picks one of `num_perm`
    bins and each bin keeps its minimum. Empty bins (texts with fewer shingles than bins) are
    filled by rotation densification (Shrivastava & Li 2014). The probability that two signatures
    agree in a bin is ~J, so the estimate is the fraction of agreeing bins (std ~ sqrt(J(1-J)/K),
    ~0.03 at J=0.85, K=128). OPH costs one hash per shingle instead of `num_perm` hashes per
    shingle, which is what makes 100k x 700-character rows take about a second on one core.

    Candidate pairs come from LSH banding: the signature is cut into `bands` bands of `rows`
    values; two texts that agree on a whole band become a candidate. bands x rows is chosen from
    the threshold to minimise false positives + false negatives (as datasketch does). Every
    candidate pair is then *verified* with the signature estimate (>= threshold).

    Groups are connected components (union-find) of verified pairs, so a group may chain
    A~B~C even when A and C alone are below the threshold; this is the usual behaviour of
    MinHash dedup tools. In every group the smallest index comes first: that is the row to keep.
    Empty texts have no shingles and are never near duplicates (exact dedup still groups them).

Everything is deterministic for a given `seed` and input order. Signatures are only comparable
within one `MinHashLSH` instance (same seed and num_perm).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np
import xxhash

# 64-bit constants from splitmix64 / murmur3 fmix64; they are only mixing constants.
_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_EMPTY = np.uint32(0xFFFFFFFF)  # bin without a shingle; real values are 31-bit, so never equal
_BATCH = 2048  # texts hashed together: big enough to amortize numpy calls, small in memory


class CancelFlag(Protocol):
    def is_set(self) -> bool: ...


Progress = Callable[[int, "int | None"], None]


# ---------------------------------------------------------------------------------------------
# Text of a record, exact duplicates


def record_text(record: dict, include_system: bool = True) -> str:
    """Canonical text of a conversation: one "role: content" line per message.

    include_system=False leaves system messages out; near-dup detection uses that so a long
    system prompt shared by every row does not make short, different conversations look alike.
    """
    parts = []
    for message in record.get("messages") or ():
        role = message.get("role", "")
        if role == "system" and not include_system:
            continue
        parts.append(f"{role}: {message.get('content') or ''}")
    return "\n".join(parts)


def normalize_text(text: str) -> str:
    """Lower-case, collapse whitespace runs to one space, strip: what 'the same text' means here."""
    return " ".join(text.lower().split())


def exact_key(text: str) -> bytes:
    """16-byte xxh3-128 hash of the normalized text (equal for texts differing in case/spacing)."""
    # surrogatepass: a lone surrogate (broken data) must hash, not crash the inspection.
    return xxhash.xxh3_128_digest(normalize_text(text).encode("utf-8", "surrogatepass"))


def exact_duplicate_groups(texts: Iterable[str]) -> list[list[int]]:
    """Indices of texts with equal normalized text, groups of size >= 2, first index is kept."""
    first: dict[bytes, int] = {}
    groups: dict[int, list[int]] = {}
    for i, text in enumerate(texts):
        kept = first.setdefault(exact_key(text), i)
        if kept != i:
            groups.setdefault(kept, [kept]).append(i)
    return [groups[k] for k in sorted(groups)]


# ---------------------------------------------------------------------------------------------
# Near duplicates


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm minimising false positive + negative mass.

    P(candidate | J=s) = 1 - (1 - s**rows)**bands; the false-positive mass is its integral over
    [0, threshold], the false-negative mass the integral of 1 - P over [threshold, 1].
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    lo = np.linspace(0.0, threshold, 200)
    hi = np.linspace(threshold, 1.0, 200)
    best, best_err = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(1 - (1 - lo**rows) ** bands, lo)
            fn = np.trapezoid((1 - hi**rows) ** bands, hi)
            if fp + fn < best_err:
                best, best_err = (bands, rows), fp + fn
    return best


def _fmix64(x: np.ndarray) -> np.ndarray:
    """murmur3 finalizer, in place on a uint64 array: every input bit affects every output bit."""
    x ^= x >> np.uint64(33)
    x *= _M1
    x ^= x >> np.uint64(33)
    x *= _M2
    x ^= x >> np.uint64(33)
    return x


class MinHashLSH:
    """Streaming near-duplicate finder: `add` texts in batches, then ask for `groups()`.

    Only the signatures are kept (num_perm x 4 bytes per text, 512 bytes at 128), never the texts.
    """

    def __init__(self, threshold: float = 0.85, num_perm: int = 128, ngram: int = 5, seed: int = 0):
        if num_perm < 2:
            raise ValueError("num_perm must be >= 2")
        if ngram < 1 or ngram > 8:
            raise ValueError("ngram must be between 1 and 8 (a shingle is packed into 64 bits)")
        self.threshold = threshold
        self.num_perm = num_perm
        self.ngram = ngram
        self.seed = seed
        self.bands, self.rows = lsh_params(threshold, num_perm)
        self._seed_mix = _fmix64(np.array([seed * 2 + 1], dtype=np.uint64) * _GOLDEN)[0]
        self._chunks: list[np.ndarray] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    # -- building signatures ------------------------------------------------------------------

    def add(self, texts: Sequence[str]) -> None:
        """Sign `texts` (in order; their indices continue from the texts added before)."""
        for start in range(0, len(texts), _BATCH):
            sig = self.signatures(texts[start : start + _BATCH])
            self._chunks.append(sig)
            self._count += len(sig)

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), num_perm) uint32 OPH signatures; rows of _EMPTY for empty texts."""
        k, n = self.num_perm, self.ngram
        encoded = [normalize_text(t).encode("utf-8", "surrogatepass") for t in texts]
        lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
        # Rows are joined with n-1 zero bytes, so a window never mixes two rows, and a row shorter
        # than n becomes one shingle padded with zeros.
        sep = b"\0" * (n - 1)
        buf = np.frombuffer(sep.join(encoded) + sep + b"\0", dtype=np.uint8)
        starts = np.zeros(len(encoded), dtype=np.int64)
        np.cumsum(lengths[:-1] + (n - 1), out=starts[1:])
        counts = np.where(lengths > 0, np.maximum(lengths - n + 1, 1), 0)
        total = int(counts.sum())
        sig = np.full((len(encoded), k), _EMPTY, dtype=np.uint32)
        if total == 0:
            return sig
        first = np.cumsum(counts) - counts
        pos = np.repeat(starts - first, counts) + np.arange(total, dtype=np.int64)

        # Read 8 bytes at every offset (an overlapping strided view, no copy) and keep the low n:
        # the n bytes of each window packed exactly into one uint64, then mixed.
        padded = np.concatenate([buf, np.zeros(8, dtype=np.uint8)])
        windows = np.ndarray((len(buf),), dtype="<u8", buffer=padded.data, strides=(1,))
        x = windows[pos] & np.uint64((1 << (8 * n)) - 1)
        x ^= self._seed_mix
        _fmix64(x)
        # High 32 bits pick the bin (multiply-shift range reduction, any num_perm), low 31 bits
        # are the value; the per-bin minimum is the OPH signature.
        bins = ((x >> np.uint64(32)) * np.uint64(k)) >> np.uint64(32)
        bins += np.repeat(np.arange(len(encoded), dtype=np.uint64) * np.uint64(k), counts)
        flat = bins.astype(np.intp)
        values = (x & np.uint64(0x7FFFFFFF)).astype(np.uint32)
        np.minimum.at(sig.reshape(-1), flat, values)
        self._densify(sig)
        return sig

    def _densify(self, sig: np.ndarray) -> None:
        """Rotation densification: an empty bin borrows the next non-empty bin to its right
        (circularly), re-hashed with the distance so borrowed values differ from originals."""
        empty = sig == _EMPTY
        need = empty.any(axis=1) & ~empty.all(axis=1)
        if not need.any():
            return
        sub, e = sig[need], empty[need]
        k = self.num_perm
        cols = np.arange(2 * k)
        idx = np.where(np.concatenate([~e, ~e], axis=1), cols, 2 * k)
        nxt = np.minimum.accumulate(idx[:, ::-1], axis=1)[:, ::-1][:, :k]
        src = nxt % k
        dist = (nxt - cols[:k]).astype(np.uint64)
        borrowed = np.take_along_axis(sub, src, axis=1).astype(np.uint64)
        mixed = _fmix64(borrowed + dist * _GOLDEN) & np.uint64(0x7FFFFFFF)
        sub[e] = mixed[e].astype(np.uint32)
        sig[need] = sub

    # -- finding groups -----------------------------------------------------------------------

    def signature_matrix(self) -> np.ndarray:
        if len(self._chunks) > 1:  # consolidate once, so memory is not doubled twice
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros((0, self.num_perm), np.uint32)

    def candidate_pairs(self) -> np.ndarray:
        """(m, 2) int64 unique pairs i < j sharing at least one LSH band."""
        sig = self.signature_matrix()
        valid = np.flatnonzero(sig[:, 0] != _EMPTY)
        found = []
        for b in range(self.bands):
            band = sig[valid, b * self.rows : (b + 1) * self.rows]
            key = np.full(len(valid), ((b + 1) * int(_GOLDEN)) & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
            for c in range(band.shape[1]):
                key = _fmix64(key ^ band[:, c].astype(np.uint64))
            found.append(_pairs_from_keys(key, valid))
        pairs = np.concatenate(found) if found else np.zeros((0, 2), np.int64)
        if len(pairs) == 0:
            return pairs
        packed = np.unique(pairs[:, 0] * np.int64(self._count) + pairs[:, 1])
        return np.stack([packed // self._count, packed % self._count], axis=1)

    def similarity(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Estimated Jaccard for index arrays i, j (fraction of equal signature bins)."""
        sig = self.signature_matrix()
        out = np.empty(len(i), dtype=np.float64)
        for s in range(0, len(i), 65536):  # chunks bound the temporary (m, num_perm) arrays
            out[s : s + 65536] = (sig[i[s : s + 65536]] == sig[j[s : s + 65536]]).mean(axis=1)
        return out

    def groups(self) -> list[list[int]]:
        """Connected components of verified pairs, size >= 2, sorted, smallest index first."""
        pairs = self.candidate_pairs()
        if len(pairs) == 0:
            return []
        keep = self.similarity(pairs[:, 0], pairs[:, 1]) >= self.threshold - 1e-9
        return _components(pairs[keep], self._count)


def _pairs_from_keys(key: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Pairs of ids whose keys are equal: each member with its bucket's first member and with its
    predecessor (connects a bucket in O(m)); small buckets of 3..64 get all pairs too, so a
    dissimilar member in the middle cannot hide a similar pair."""
    order = np.argsort(key, kind="stable")
    k, sorted_ids = key[order], ids[order]
    same = np.flatnonzero(k[1:] == k[:-1]) + 1  # positions equal to their predecessor
    if len(same) == 0:
        return np.zeros((0, 2), np.int64)
    is_start = np.ones(len(k), dtype=bool)
    is_start[same] = False
    run_start = np.maximum.accumulate(np.where(is_start, np.arange(len(k)), 0))
    parts = [
        np.stack([sorted_ids[run_start[same]], sorted_ids[same]], axis=1),
        np.stack([sorted_ids[same - 1], sorted_ids[same]], axis=1),
    ]
    starts = np.flatnonzero(is_start)
    sizes = np.diff(np.append(starts, len(k)))
    for s, m in zip(starts[(sizes >= 3) & (sizes <= 64)], sizes[(sizes >= 3) & (sizes <= 64)]):
        members = sorted_ids[s : s + m]
        a, b = np.triu_indices(m, 1)
        parts.append(np.stack([members[a], members[b]], axis=1))
    pairs = np.concatenate(parts).astype(np.int64)
    return np.sort(pairs, axis=1)


def _components(pairs: np.ndarray, n: int) -> list[list[int]]:
    """Union-find over index pairs; groups of size >= 2, members sorted, groups by first index."""
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the smaller index stays the root
    members: dict[int, list[int]] = {}
    for i in {i for pair in pairs.tolist() for i in pair}:
        members.setdefault(find(i), []).append(i)
    return sorted((sorted(g) for g in members.values() if len(g) >= 2), key=lambda g: g[0])


def near_duplicate_groups(
    texts: Iterable[str],
    threshold: float = 0.85,
    num_perm: int = 128,
    ngram: int = 5,
    seed: int = 0,
    progress: Progress | None = None,
    cancel: CancelFlag | None = None,
) -> list[list[int]]:
    """Groups of indices whose estimated Jaccard similarity (character `ngram` shingles of the
    normalized text) is >= threshold; first index of each group is the one to keep.

    progress(done, None) is called after each batch; if `cancel` is set, hashing stops and the
    groups among the texts seen so far are returned.
    """
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, ngram=ngram, seed=seed)
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == _BATCH:
            lsh.add(batch)
            batch = []
            if progress:
                progress(len(lsh), None)
            if cancel is not None and cancel.is_set():
                return lsh.groups()
    if batch:
        lsh.add(batch)
        if progress:
            progress(len(lsh), None)
    return lsh.groups()
