"""Can the data screen's table hold 100,000 rows? Textual's DataTable against our Line-API view.

For each table: the time to put 100,000 synthetic conversation rows in it, the time of the next
complete frame, and the mean time per frame while paging through the table (pagedown presses,
each followed by a refresh, headless at 160x48). Run: `python bench/app_data_table.py`; the
table in bench/app_data_table.md was produced by it on the machine it names.
"""

from __future__ import annotations

import asyncio
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from textual.app import App, ComposeResult  # noqa: E402
from textual.widgets import DataTable  # noqa: E402

from screens.widgets.data_table import RowsView  # noqa: E402

ROWS = 100_000
PAGES = 200


def synthetic(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"Translate sentence number {i} into French, please."},
                          {"role": "assistant", "content": f"Traduisez la phrase numéro {i} en français."}],
             "source": {"file": "synthetic.jsonl", "row": i + 1}} for i in range(n)]


class Bench(App):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def compose(self) -> ComposeResult:
        yield DataTable(id="t", cursor_type="row") if self.kind == "DataTable" else RowsView(id="t")


async def measure(kind: str, records: list[dict]) -> dict:
    app = Bench(kind)
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.query_one("#t")
        table.focus()
        started = time.perf_counter()
        if kind == "DataTable":
            table.add_columns("row", "chars", "question", "answer")
            for r in records:
                m = r["messages"]
                table.add_row(r["source"]["row"], len(m[0]["content"]) + len(m[1]["content"]),
                              m[0]["content"], m[1]["content"])
        else:
            table.set_records(records)
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        await pilot.pause()
        first_frame = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(PAGES):
            await pilot.press("pagedown")
        await pilot.pause()
        paging = (time.perf_counter() - started) / PAGES
        started = time.perf_counter()
        await pilot.press("end")
        await pilot.pause()
        to_end = time.perf_counter() - started
    return {"kind": kind, "load_s": loaded, "first_frame_s": first_frame,
            "page_ms": paging * 1000, "end_s": to_end}


def main() -> None:
    records = synthetic(ROWS)
    results = [asyncio.run(measure(kind, records)) for kind in ("RowsView", "DataTable")]
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print("| table | rows | load s | first frame s | ms per pagedown+frame | end key s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['kind']} | {ROWS:,} | {r['load_s']:.2f} | {r['first_frame_s']:.2f} | "
              f"{r['page_ms']:.1f} | {r['end_s']:.2f} |")


if __name__ == "__main__":
    main()
