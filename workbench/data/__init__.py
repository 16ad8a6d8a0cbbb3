"""Data room: load -> normalize -> (inspect -> clean) -> render -> (split -> save).

Imports stay light (no torch, transformers or textual at module level) so the app opens fast.
"""

from workbench.data.errors import DataError, TemplateError
from workbench.data.load import LoadReport, dataset_hash, detect_format, iter_records, load_records
from workbench.data.readers import DATA_EXTENSIONS, looks_like_hub_id
from workbench.data.schemas import SUPPORTED_FORMATS, parse_tools
from workbench.data.chat_format import ChatFormat, chat_format
from workbench.data.render import (
    RenderedRow,
    RenderStats,
    check_template,
    format_rendered,
    render_conversation,
    render_dataset,
    render_rows,
)

__all__ = [
    "ChatFormat",
    "DATA_EXTENSIONS",
    "SUPPORTED_FORMATS",
    "DataError",
    "LoadReport",
    "RenderStats",
    "RenderedRow",
    "TemplateError",
    "chat_format",
    "check_template",
    "dataset_hash",
    "detect_format",
    "format_rendered",
    "iter_records",
    "load_records",
    "looks_like_hub_id",
    "parse_tools",
    "render_conversation",
    "render_dataset",
    "render_rows",
]
