"""Keep a Textual DataTable from showing columns at their header widths after rows change.

DataTable measures new or updated cells only when it goes idle, but its row and line caches
are keyed without the column widths. A frame drawn between `add_row` / `update_cell` and that
idle pass is cached at the old widths and reused until something else invalidates the caches,
so on a busy machine a table could stay truncated ("qwe" for "qwen-1795856400") indefinitely.
`call_next` runs right after the idle pass that measures, and `notify_style_update` (public
Widget API) drops those caches and repaints.
"""

from __future__ import annotations

from textual.widgets import DataTable


def repaint_after_sizing(table: DataTable) -> None:
    """Call after changing rows or cells (textual 8.2)."""
    table.call_next(table.notify_style_update)
