"""The MinHash signer as a child process (`dedup.MinHashProcess` starts it): `python -m
workbench.data.minhash_worker THRESHOLD MAX_ROWS`.

Signing ~700 shingles a row is ~15 us of numpy per row; on a thread of the inspecting process it
fights the per-row Python loop for the GIL, in its own process it runs on a second core. Messages
are pickles on stdin / stdout: ("add", texts, near_texts | None, first row) for
`BatchDeduper.add`, then ("groups",), answered with ("ok", (groups, nbytes, indexed, queried,
peak_rss_kb, copy pairs, exact index bytes)) or ("error", text). A reader thread
queues up to a few batches, so the parent's writes do not wait for the signing of the one
before.
"""

from __future__ import annotations

import pickle
import queue
import resource
import sys
import threading
import traceback

from workbench.data.dedup import BatchDeduper, MinHashLSH

_QUEUED = 3  # batches read ahead: bounds the child's memory when it falls behind


def main(argv: list[str]) -> int:
    threshold, max_rows = float(argv[0]), int(argv[1]) or None
    lsh = MinHashLSH(threshold=threshold, max_rows=max_rows)
    dedup = BatchDeduper(lsh.add_normalized)
    inbox: queue.Queue = queue.Queue(maxsize=_QUEUED)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer

    def read() -> None:
        while True:
            try:
                message = pickle.load(stdin)
            except (EOFError, pickle.UnpicklingError, OSError):
                message = ("stop",)
            inbox.put(message)
            if message[0] in ("stop", "groups"):
                return

    threading.Thread(target=read, daemon=True).start()
    failed = None
    while True:
        message = inbox.get()
        if message[0] == "add":
            if failed is None:
                try:
                    dedup.add(message[1], message[2], message[3])
                except Exception:  # noqa: BLE001 - reported when the groups are asked for
                    failed = traceback.format_exc(limit=4)
        elif message[0] == "groups":
            try:
                if failed is not None:
                    raise RuntimeError(failed)
                peak = _peak_rss_kb()
                groups = lsh.groups()
                answer = ("ok", (groups, lsh.nbytes, lsh.indexed, lsh.queried, peak, dedup.pairs(),
                                 dedup.exact.nbytes))
            except Exception:  # noqa: BLE001 - the parent gets the error, not a dead pipe
                answer = ("error", failed or traceback.format_exc(limit=4))
            pickle.dump(answer, stdout, protocol=pickle.HIGHEST_PROTOCOL)
            stdout.flush()
            return 0
        else:
            return 0


def _peak_rss_kb() -> int:
    """This process's peak RSS: VmHWM, which starts afresh at exec (ru_maxrss would keep the
    parent's size from the fork before it)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
