"""Where a run's rows come from: one `data.train`, or several `[[data.sources]]` tables.

`sources_of(profile)` turns either form into `SourceSpec`s, so the loaders, the mixture, the
inspection and the manifest see one shape. Pure Python (the app imports it at start).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SourceSpec:
    """One source of rows. Exactly one of `path` (a local file or folder) and `name` (a Hub
    dataset id); `weight` None and `rows` None = all of its rows, once."""

    label: str
    path: str = ""
    name: str = ""
    config: str = ""
    split: str = "train"
    revision: str = ""
    data_files: tuple[str, ...] = ()
    format: str = "auto"
    columns: dict[str, str] = field(default_factory=dict, hash=False)
    system_prompt: str = ""
    train_on: str = "assistant"
    encoding: str = ""
    weight: float | None = None
    rows: int | None = None
    held_out: bool = True

    @property
    def location(self) -> str:
        """What messages show: the path, or the dataset id with its config and split."""
        if self.path:
            return self.path
        extra = "/".join(x for x in (self.config, self.split if self.split != "train" else "") if x)
        return f"{self.name}" + (f" ({extra})" if extra else "")

    @property
    def is_hub(self) -> bool:
        return bool(self.name)

    def to_dict(self) -> dict[str, Any]:
        """The source as a manifest records it (keys with their default values left out)."""
        out: dict[str, Any] = {"label": self.label}
        for key, default in (("path", ""), ("name", ""), ("config", ""), ("split", "train"),
                             ("revision", ""), ("data_files", ()), ("format", "auto"),
                             ("columns", {}), ("system_prompt", ""), ("train_on", "assistant"),
                             ("encoding", ""), ("weight", None), ("rows", None),
                             ("held_out", True)):
            value = getattr(self, key)
            if value != default and not (key == "data_files" and not value):
                out[key] = list(value) if isinstance(value, tuple) else value
        return out


def spec_from_table(table: dict[str, Any], *, train_on: str = "assistant") -> SourceSpec:
    """A validated [[data.sources]] table (profile._sources) as a SourceSpec; `train_on` is
    the profile's data.train_on, which a source may override."""
    label = table.get("label") or table.get("name") or Path(table["path"]).name
    return SourceSpec(
        label=label, path=table.get("path", ""), name=table.get("name", ""),
        config=table.get("config", ""), split=table.get("split", "train"),
        revision=table.get("revision", ""), data_files=tuple(table.get("data_files", ())),
        format=table.get("format", "auto"), columns=dict(table.get("columns", {})),
        system_prompt=table.get("system_prompt", ""),
        train_on=table.get("train_on", train_on), encoding=table.get("encoding", ""),
        weight=table.get("weight"), rows=table.get("rows"),
        held_out=table.get("held_out", True))


def sources_of(profile) -> list[SourceSpec]:
    """The profile's sources: its [[data.sources]] tables, or `data.train` as one source that
    carries the [data] section's format, columns, system prompt and train_on."""
    d = profile.data
    if d.sources:
        return [spec_from_table(t, train_on=d.train_on) for t in d.sources]
    if not d.train:
        return []
    from workbench.data.readers import looks_like_hub_id
    from workbench.profile import SOURCE_FORMATS  # the formats a source of rows may name

    local = Path(d.train).exists() or not looks_like_hub_id(d.train)
    return [SourceSpec(label=Path(d.train).name if local else d.train,
                       path=d.train if local else "", name="" if local else d.train,
                       format=d.format if d.format in SOURCE_FORMATS else "auto",
                       columns=dict(d.columns), system_prompt=d.system_prompt,
                       train_on=d.train_on, encoding=d.encoding)]


def is_mixture(profile) -> bool:
    return bool(profile.data.sources)
