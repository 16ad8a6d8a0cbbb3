"""Data room: load -> normalize -> (inspect -> clean) -> render -> (split -> save).

Preference data (DPO / ORPO / SimPO / KTO) has its own loader, checks and renderer:
`preference`, `preference_checks`, `preference_render`.

Imports stay light (no torch, transformers or textual at module level) so the app opens fast.
"""

from workbench.data.errors import DataError, TemplateError
from workbench.data.load import LoadReport, dataset_hash, detect_format, iter_records, load_records
from workbench.data.readers import DATA_EXTENSIONS, looks_like_hub_id
from workbench.data.schemas import SUPPORTED_FORMATS, parse_tools
from workbench.data.chat_format import ChatFormat, chat_format
from workbench.data.preference import (
    PREFERENCE_FORMATS,
    detect_preference_format,
    is_preference_data,
    iter_preference_records,
    load_preference_records,
    records_kind,
)
from workbench.data.preference_checks import (
    PreferenceReport,
    check_pairs,
    format_preference_report,
    inspect_preferences,
    split_preference_records,
)
from workbench.data.preference_render import (
    PairDropped,
    PreferenceRenderStats,
    RenderedCompletion,
    RenderedPair,
    format_pair,
    render_pair,
    render_preference_dataset,
    render_unpaired,
)
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
    "PREFERENCE_FORMATS",
    "SUPPORTED_FORMATS",
    "DataError",
    "LoadReport",
    "PairDropped",
    "PreferenceRenderStats",
    "PreferenceReport",
    "RenderStats",
    "RenderedCompletion",
    "RenderedPair",
    "RenderedRow",
    "TemplateError",
    "chat_format",
    "check_pairs",
    "check_template",
    "dataset_hash",
    "detect_format",
    "detect_preference_format",
    "format_pair",
    "format_preference_report",
    "format_rendered",
    "inspect_preferences",
    "is_preference_data",
    "iter_preference_records",
    "iter_records",
    "load_preference_records",
    "load_records",
    "looks_like_hub_id",
    "parse_tools",
    "records_kind",
    "render_conversation",
    "render_dataset",
    "render_pair",
    "render_preference_dataset",
    "render_rows",
    "render_unpaired",
    "split_preference_records",
]
