"""Data room: load -> normalize -> (inspect -> clean) -> render -> (split -> save).

Imports stay light (no torch, transformers or textual at module level) so the app opens fast.
"""

from workbench.data.errors import DataError, TemplateError
from workbench.data.load import LoadReport, dataset_hash, detect_format, iter_records, load_records
from workbench.data.render import (
    RenderedRow,
    RenderStats,
    check_template,
    format_rendered,
    render_conversation,
    render_dataset,
)

__all__ = [
    "DataError",
    "LoadReport",
    "RenderStats",
    "RenderedRow",
    "TemplateError",
    "check_template",
    "dataset_hash",
    "detect_format",
    "format_rendered",
    "iter_records",
    "load_records",
    "render_conversation",
    "render_dataset",
]
