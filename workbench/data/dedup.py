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

At scale (`workbench data inspect` streams millions of rows) two structures keep memory
compact and stated: `ExactIndex` keeps one 8-byte xxh3-64 key and a 4-byte row number per
distinct text (12 bytes a row, in sorted numpy runs; a 64-bit collision among 10^7 texts has
odds of ~3e-6), and `MinHashLSH` keeps 16-bit signature values (a 16-bit value agrees by chance
once in 65,536 bins, which raises the Jaccard estimate by at most 1.5e-5) for at most `max_rows`
texts. Past that bound the index is frozen: later texts are still signed and checked against the
indexed ones, but not added, so a near-copy pair whose both rows lie past the bound is missed;
`MinHashLSH.queried` counts those rows and the inspection report says so.

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
# Texts signed together: ~180k shingles, so the temporary arrays stay in the CPU cache (on a
# 2-core EPYC this is 1.7x faster than signing 2048 texts at once).
_SIGN_ROWS = 256
_BLOCK = 1 << 16  # signatures are stored in blocks of this many rows (no whole-matrix copies)
_PER_BUCKET = 64  # a query row is compared with at most this many index rows per band bucket
# Bytes str.split() treats as whitespace in ASCII text (str.isspace), mapped to a space.
_SPACES = bytes.maketrans(b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f", b" " * 9)


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


def normalize_batch(texts: Sequence[str]) -> list[bytes]:
    """`normalize_text(t)` of every text, UTF-8 encoded (surrogatepass), computed for the batch at
    once: ASCII batches are lower-cased and whitespace-collapsed as one bytes object (several
    times faster than a Python call per row, and byte-for-byte equal); others go row by row."""
    if not texts:
        return []
    joined = "\x00".join(texts)
    if not joined.isascii() or joined.count("\x00") != len(texts) - 1:
        return [normalize_text(t).encode("utf-8", "surrogatepass") for t in texts]
    # Every ASCII whitespace byte becomes a space (bytes.translate), then numpy drops each space
    # that follows a space or a text's start and each one left before a text's end: whole-batch
    # passes instead of a Python call per row.
    out = joined.lower().encode("ascii").translate(_SPACES)
    a = np.frombuffer(out, dtype=np.uint8)
    if len(a) == 0:
        return [b""]
    sp = a == 32
    drop = np.empty(len(a), dtype=bool)
    drop[0] = sp[0]
    np.logical_and(sp[1:], sp[:-1] | (a[:-1] == 0), out=drop[1:])
    drop[:-1] |= sp[:-1] & (a[1:] == 0)
    drop[-1] |= sp[-1]
    if drop.any():
        kept = a[~drop]
        # A run of spaces before a text's end leaves one space after the collapse.
        tail = np.zeros(len(kept), dtype=bool)
        tail[:-1] = (kept[:-1] == 32) & (kept[1:] == 0)
        tail[-1:] = kept[-1:] == 32
        out = kept[~tail].tobytes()
    return out.split(b"\x00")


def exact_key64(normalized: bytes) -> int:
    """8-byte xxh3-64 key of a text already normalized and encoded (`normalize_batch`)."""
    return xxhash.xxh3_64_intdigest(normalized)


class ExactIndex:
    """Compact exact-duplicate index: one uint64 key and one uint32 row number per distinct text.

    Keys live in sorted numpy runs merged like a binary counter (log2(n) runs at most), so a
    batch is looked up with `searchsorted` and memory is 12 bytes per distinct text.
    """

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []
        self.distinct = 0

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + r.nbytes for k, r in self._runs)

    def add(self, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """For each (key, row), the row where that key was first seen (the row itself when new)."""
        if len(keys) == 0:
            return np.zeros(0, dtype=np.int64)
        keys = np.asarray(keys, dtype=np.uint64)
        rows = np.asarray(rows, dtype=np.int64)
        uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        kept = rows[first]
        found = np.full(len(uniq), -1, dtype=np.int64)
        for run_keys, run_rows in self._runs:
            pos = np.minimum(np.searchsorted(run_keys, uniq), len(run_keys) - 1)
            hit = run_keys[pos] == uniq
            found[hit] = run_rows[pos[hit]]
        new = found < 0
        found[new] = kept[new]
        if new.any():
            self._runs.append((uniq[new], kept[new].astype(np.uint32)))
            self.distinct += int(new.sum())
            # Merge while the newer run is as large as the older one: at most log2(n) runs.
            while len(self._runs) > 1 and len(self._runs[-2][0]) <= len(self._runs[-1][0]):
                (k1, r1), (k2, r2) = self._runs[-2], self._runs[-1]
                k, r = np.concatenate([k1, k2]), np.concatenate([r1, r2])
                order = np.argsort(k, kind="stable")
                self._runs[-2:] = [(k[order], r[order])]
        return found[inverse.reshape(-1)]


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

    Only signatures are kept, never the texts: num_perm 16-bit values per text (256 bytes at
    128), for at most `max_rows` texts (None: no bound). Past the bound the index is frozen and
    later texts are checked against it without being added (see the module docstring).
    """

    def __init__(self, threshold: float = 0.85, num_perm: int = 128, ngram: int = 5, seed: int = 0,
                 max_rows: int | None = None):
        if num_perm < 2:
            raise ValueError("num_perm must be >= 2")
        if ngram < 1 or ngram > 8:
            raise ValueError("ngram must be between 1 and 8 (a shingle is packed into 64 bits)")
        if max_rows is not None and max_rows < 1:
            raise ValueError(f"max_rows must be >= 1 or None, got {max_rows}")
        self.threshold = threshold
        self.num_perm = num_perm
        self.ngram = ngram
        self.seed = seed
        self.max_rows = max_rows
        self.bands, self.rows = lsh_params(threshold, num_perm)
        self._seed_mix = _fmix64(np.array([seed * 2 + 1], dtype=np.uint64) * _GOLDEN)[0]
        self._blocks: list[np.ndarray] = []  # (_BLOCK, num_perm) uint16, the last one partly filled
        self._ids: list[np.ndarray] = []  # the caller's id of each indexed text, per block
        self._count = 0  # texts indexed
        self._total = 0  # texts added (indexed or checked against the frozen index)
        self.queried = 0  # texts past the bound: checked against the index, not added
        self._tables: list[tuple[np.ndarray, np.ndarray]] | None = None  # per band, once frozen
        self._query_pairs: list[np.ndarray] = []  # verified (id past the bound, indexed id)

    def __len__(self) -> int:
        return self._total

    @property
    def indexed(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Bytes held by signatures, ids, frozen band tables and verified query pairs."""
        n = sum(b.nbytes for b in self._blocks) + sum(i.nbytes for i in self._ids)
        n += sum(k.nbytes + o.nbytes for k, o in self._tables or ())
        return n + sum(p.nbytes for p in self._query_pairs)

    # -- building signatures ------------------------------------------------------------------

    def add(self, texts: Sequence[str], ids: Sequence[int] | np.ndarray | None = None) -> None:
        """Sign `texts` (in order). `ids` name them in `groups()`; by default they continue from
        the texts added before (0, 1, 2, ...)."""
        self.add_normalized(normalize_batch(list(texts)), ids)

    def add_normalized(self, encoded: Sequence[bytes], ids: Sequence[int] | np.ndarray | None = None) -> None:
        """`add` for texts already through `normalize_batch` (the inspector shares them with
        exact dedup, so each text is normalized once)."""
        if ids is None:
            ids = np.arange(self._total, self._total + len(encoded), dtype=np.int64)
        ids = np.asarray(ids, dtype=np.int64)
        for start in range(0, len(encoded), _SIGN_ROWS):
            sig = self._sign(encoded[start : start + _SIGN_ROWS])
            self._total += len(sig)
            # Empty texts have no shingles and are never near duplicates: not stored.
            signed = sig[:, 0] != _EMPTY
            self._store(sig[signed].astype(np.uint16), ids[start : start + _SIGN_ROWS][signed])

    def _store(self, sig: np.ndarray, ids: np.ndarray) -> None:
        room = len(sig) if self.max_rows is None else max(0, self.max_rows - self._count)
        take = min(room, len(sig))
        done = 0
        while done < take:
            if not self._blocks or len(self._ids[-1]) == _BLOCK:
                self._blocks.append(np.empty((_BLOCK, self.num_perm), dtype=np.uint16))
                self._ids.append(np.zeros(0, dtype=np.int64))
            at = len(self._ids[-1])
            n = min(take - done, _BLOCK - at)
            self._blocks[-1][at : at + n] = sig[done : done + n]
            self._ids[-1] = np.concatenate([self._ids[-1], ids[done : done + n]])
            self._count += n
            done += n
        if take < len(sig):
            self._query(sig[take:], ids[take:])

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), num_perm) uint32 OPH signatures; rows of _EMPTY for empty texts."""
        encoded = normalize_batch(list(texts))
        parts = [self._sign(encoded[i : i + _SIGN_ROWS]) for i in range(0, len(encoded), _SIGN_ROWS)]
        return np.concatenate(parts) if parts else np.zeros((0, self.num_perm), np.uint32)

    def _sign(self, encoded: Sequence[bytes]) -> np.ndarray:
        k, n = self.num_perm, self.ngram
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        # Rows are joined with n-1 zero bytes, so a window never mixes two rows, and a row shorter
        # than n becomes one shingle padded with zeros. 8 more zero bytes let the last window read.
        sep = b"\0" * (n - 1)
        buf = np.frombuffer(sep.join(encoded) + sep + b"\0" * 9, dtype=np.uint8)
        starts = np.zeros(len(encoded), dtype=np.int64)
        np.cumsum(lengths[:-1] + (n - 1), out=starts[1:])
        counts = np.where(lengths > 0, np.maximum(lengths - n + 1, 1), 0)
        total = int(counts.sum())
        sig = np.full((len(encoded), k), _EMPTY, dtype=np.uint32)
        if total == 0:
            return sig
        first = np.cumsum(counts) - counts
        pos = np.repeat(starts - first, counts)
        pos += np.arange(total, dtype=np.int64)

        # Read 8 bytes at every offset (an overlapping strided view, no copy) and keep the low n:
        # the n bytes of each window packed exactly into one uint64, then mixed.
        windows = np.ndarray((len(buf) - 8,), dtype="<u8", buffer=buf.data, strides=(1,))
        x = windows[pos]
        del pos
        x &= np.uint64((1 << (8 * n)) - 1)
        x ^= self._seed_mix
        _fmix64(x)
        # High 32 bits pick the bin (multiply-shift range reduction, any num_perm), low 31 bits
        # are the value; the per-bin minimum is the OPH signature.
        if k & (k - 1) == 0:  # a power of two: the same bin as the multiply-shift, one shift
            bins = (x >> np.uint64(64 - (k.bit_length() - 1))).astype(np.intp)
        else:
            bins = (((x >> np.uint64(32)) * np.uint64(k)) >> np.uint64(32)).astype(np.intp)
        bins += np.repeat(np.arange(0, len(encoded) * k, k, dtype=np.intp), counts)
        x &= np.uint64(0x7FFFFFFF)
        np.minimum.at(sig.reshape(-1), bins, x.astype(np.uint32))
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

    # -- the index ----------------------------------------------------------------------------

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        """Stored signatures of index positions `idx` (int64), gathered block by block."""
        out = np.empty((len(idx), self.num_perm), dtype=np.uint16)
        block = idx >> 16
        for b in np.unique(block):
            sel = block == b
            out[sel] = self._blocks[int(b)][idx[sel] & (_BLOCK - 1)]
        return out

    def _band_keys(self, sig: np.ndarray, b: int) -> np.ndarray:
        """uint64 key of band b of each signature row (the band's values mixed together)."""
        band = sig[:, b * self.rows : (b + 1) * self.rows]
        key = np.full(len(sig), ((b + 1) * int(_GOLDEN)) & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
        for c in range(band.shape[1]):
            key = _fmix64(key ^ band[:, c].astype(np.uint64))
        return key

    def _indexed_band_keys(self, b: int) -> np.ndarray:
        return np.concatenate([self._band_keys(blk[: len(ids)], b)
                               for blk, ids in zip(self._blocks, self._ids)] or [np.zeros(0, np.uint64)])

    def _query(self, sig: np.ndarray, ids: np.ndarray) -> None:
        """Check texts past the bound against the frozen index; keep verified pairs only."""
        if self._tables is None:  # freeze: one sorted key table per band
            self._tables = []
            for b in range(self.bands):
                keys = self._indexed_band_keys(b)
                order = np.argsort(keys, kind="stable").astype(np.uint32)
                self._tables.append((keys[order], order))
        self.queried += len(sig)
        found = []
        for b, (keys, order) in enumerate(self._tables):
            qk = self._band_keys(sig, b)
            lo = np.searchsorted(keys, qk, side="left")
            hi = np.minimum(np.searchsorted(keys, qk, side="right"), lo + _PER_BUCKET)
            n = hi - lo
            if not n.any():
                continue
            q = np.repeat(np.arange(len(sig)), n)
            at = np.repeat(lo - (np.cumsum(n) - n), n) + np.arange(int(n.sum()))
            found.append(np.stack([q, order[at].astype(np.int64)], axis=1))
        if not found:
            return
        pairs = np.unique(np.concatenate(found), axis=0)
        ok = (sig[pairs[:, 0]] == self._rows(pairs[:, 1])).mean(axis=1) >= self.threshold - 1e-9
        pairs = pairs[ok]
        if len(pairs):
            all_ids = np.concatenate(self._ids)
            self._query_pairs.append(np.stack([ids[pairs[:, 0]], all_ids[pairs[:, 1]]], axis=1))

    # -- finding groups -----------------------------------------------------------------------

    def signature_matrix(self) -> np.ndarray:
        """All indexed signatures as one (n, num_perm) uint16 array (a copy: for small indexes)."""
        if not self._blocks:
            return np.zeros((0, self.num_perm), np.uint16)
        return np.concatenate([blk[: len(ids)] for blk, ids in zip(self._blocks, self._ids)])

    def candidate_pairs(self) -> np.ndarray:
        """(m, 2) int64 unique index positions i < j sharing at least one LSH band."""
        n = self._count
        if n == 0:
            return np.zeros((0, 2), np.int64)
        found = []
        for b in range(self.bands):
            keys = self._tables[b] if self._tables is not None else None
            if keys is not None:
                sorted_keys, order = keys
                key = np.empty(n, dtype=np.uint64)
                key[order] = sorted_keys
            else:
                key = self._indexed_band_keys(b)
            found.append(_pairs_from_keys(key, np.arange(n, dtype=np.int64)))
        pairs = np.concatenate(found) if found else np.zeros((0, 2), np.int64)
        if len(pairs) == 0:
            return pairs
        packed = np.unique(pairs[:, 0] * np.int64(n) + pairs[:, 1])
        return np.stack([packed // n, packed % n], axis=1)

    def similarity(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Estimated Jaccard for index positions i, j (fraction of equal signature bins)."""
        out = np.empty(len(i), dtype=np.float64)
        for s in range(0, len(i), 65536):  # chunks bound the temporary (m, num_perm) arrays
            out[s : s + 65536] = (self._rows(i[s : s + 65536]) == self._rows(j[s : s + 65536])).mean(axis=1)
        return out

    def groups(self) -> list[list[int]]:
        """Connected components of verified pairs (by the texts' ids), size >= 2, sorted, smallest
        id first."""
        pairs = self.candidate_pairs()
        if len(pairs):
            keep = self.similarity(pairs[:, 0], pairs[:, 1]) >= self.threshold - 1e-9
            ids = np.concatenate(self._ids)
            pairs = ids[pairs[keep]]
        found = [pairs.reshape(-1, 2)] + self._query_pairs
        return _components(np.concatenate(found).astype(np.int64))


class BatchDeduper:
    """The inspector's dedup step for a batch of row texts: exact keys into an `ExactIndex`
    ((kept row, copy row) pairs are kept), then the rows that are no exact copy go to `sign`
    (a `MinHashLSH.add_normalized`, or a queue to one), each text normalized once."""

    def __init__(self, sign: Callable[[list[bytes], np.ndarray], None] | None = None):
        self.exact = ExactIndex()
        self._pairs: list[np.ndarray] = []
        self._sign = sign

    @property
    def nbytes(self) -> int:
        return self.exact.nbytes + sum(p.nbytes for p in self._pairs)

    def add(self, texts: Sequence[str], near_texts: Sequence[str] | None, first: int) -> None:
        """texts: rows first..first+len-1 as `record_text` gives them; near_texts: the same
        without system messages (None when no row has one: then they are the same)."""
        normalized = normalize_batch(texts)
        keys = np.fromiter(map(exact_key64, normalized), dtype=np.uint64, count=len(normalized))
        rows = np.arange(first, first + len(texts), dtype=np.int64)
        kept = self.exact.add(keys, rows)
        dup = kept != rows
        if dup.any():
            self._pairs.append(np.stack([kept[dup], rows[dup]], axis=1).astype(np.uint32))
        if self._sign is not None:
            fresh = np.flatnonzero(~dup)  # exact copies are not signed
            if near_texts is not None:
                near = normalize_batch([near_texts[j] for j in fresh])
            else:
                near = [normalized[j] for j in fresh]
            self._sign(near, rows[fresh])

    def pairs(self) -> np.ndarray:
        """(m, 2) int64 (kept row, copy row) in row order."""
        return np.concatenate(self._pairs).astype(np.int64) if self._pairs else np.zeros((0, 2), np.int64)


class MinHashProcess:
    """A `BatchDeduper` with its `MinHashLSH` in a child process (`workbench.data.minhash_worker`):
    signing ~700 shingles a row is ~15 us of numpy per row, which on a worker thread fights the
    caller's Python loop for the GIL; a process runs it on a second core. Texts go over a pipe (a
    full pipe makes `add` wait, so memory stays bounded); only groups, copy pairs and figures
    come back.
    A subprocess rather than multiprocessing: spawn would re-run the caller's __main__."""

    def __init__(self, threshold: float = 0.85, max_rows: int | None = None):
        import os
        import subprocess
        import sys

        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "workbench.data.minhash_worker", str(threshold), str(max_rows or 0)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.threshold, self.max_rows = threshold, max_rows
        self.nbytes = self.indexed = self.queried = self.exact_nbytes = 0
        self.peak_rss_kb = 0
        self.dup_pairs = np.zeros((0, 2), np.int64)

    def _send(self, message: tuple) -> None:
        import pickle

        try:
            pickle.dump(message, self._proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise RuntimeError(f"the near-duplicate worker stopped (exit code {self._proc.poll()})") from None

    def add(self, texts: Sequence[str], near_texts: Sequence[str] | None, first: int) -> None:
        """`BatchDeduper.add`, done by the worker: exact keys and MinHash signing both."""
        self._send(("add", list(texts), None if near_texts is None else list(near_texts), first))

    def groups(self) -> list[list[int]]:
        import pickle

        self._send(("groups",))
        try:
            status, value = pickle.load(self._proc.stdout)
        except EOFError:
            status, value = "error", f"it exited with code {self._proc.wait()}"
        self.close()
        if status == "error":
            raise RuntimeError(f"the near-duplicate worker failed: {value}")
        (groups, self.nbytes, self.indexed, self.queried, self.peak_rss_kb, self.dup_pairs,
         self.exact_nbytes) = value
        return groups

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()  # the worker stops at the end of its input
            except OSError:
                pass
            try:
                self._proc.wait(timeout=10)
            except Exception:  # noqa: BLE001 - a stuck worker must not outlive the inspection
                self._proc.kill()
                self._proc.wait()
        for pipe in (self._proc.stdin, self._proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


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


def _components(pairs: np.ndarray) -> list[list[int]]:
    """Union-find over id pairs; groups of size >= 2, members sorted, groups by first id."""
    if len(pairs) == 0:
        return []
    ids, compact = np.unique(pairs, return_inverse=True)
    compact = compact.reshape(-1, 2)
    parent = list(range(len(ids)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in compact.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the smaller id stays the root (ids are sorted)
    members: dict[int, list[int]] = {}
    for i in range(len(ids)):
        members.setdefault(find(i), []).append(int(ids[i]))
    return sorted((g for g in members.values() if len(g) >= 2), key=lambda g: g[0])


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
