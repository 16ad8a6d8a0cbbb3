"""Training on data read row by row (data.streaming): nothing holds all the rows.

What a streaming run does, and why:
- Rows come one at a time from the sources (`data.load.iter_source`, the same readers and
  record format as a loaded run) and are rendered and tokenized as training reaches them, by
  the same renderer (`data.render.render_dataset`, one record at a time). Memory holds the
  rows of the batch in hand, a few held-out rows and a bounded table of stream positions.
- A stream has no length, so training is counted in optimizer steps: train.max_steps. When the
  data ends first, the stream starts again at the first row (the next pass).
- Held out: a row is a validation row when the sha256 of its content (and train.seed) falls in
  the data.validation_split share. The rule needs no pass over the data and no memory: the same
  rows are held out on every pass and after a resume, exact duplicates fall on the same side,
  and a held-out row is never trained on. At most HELD_OUT_CAP of them are kept for evaluation,
  the first ones found in the first HELD_OUT_SCAN rows read at plan time; later held-out rows
  are skipped by training all the same. data.validation (a file) gives the held-out rows
  instead (its first HELD_OUT_CAP), and then no row of the stream is held out.
- Order: the sources' own order (no shuffle), pass after pass. Several [[data.sources]] are
  interleaved row by row: draw k of pass p picks a source at random in proportion to its
  weight, seeded by (train.seed, p, k), among the sources not yet exhausted (a source with
  `rows` stops after that many rows a pass).
- Batches: packed on the fly when the run packs (train.packing, proven on the model as for
  loaded data): rows in stream order fill a pack of up to max_seq_len tokens (next fit, no row
  cut); else one row per example, padded per batch.
- Resume: each checkpoint holds POSITION_FILE, where the stream stood after the last example
  the trainer consumed (passes done, rows read from each source in this pass, rows of a
  half-used record). Resume opens the sources there (the rows before it are read and skipped
  without rendering); the trainer's own skip of the batches already trained
  (`get_resumed_dataloader`) is then a no-op, so it restores the random state where it does
  after a skip, and a resumed step trains what the uninterrupted step trained.

Nothing heavy at import (the profile checks and the evaluation import `streams`).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

HELD_OUT_CAP = 1000  # held-out rows kept in memory for evaluation, at most
HELD_OUT_SCAN = 50_000  # rows read at plan time looking for them, at most
TRAIN_SAMPLE = 64  # training rows rendered at plan time: checks, the packing proof, few-shot examples
POSITION_FILE = "stream_position.json"
POSITIONS_KEPT = 4096  # positions of the latest examples handed out (the loader reads ahead)


def streams(profile) -> bool:
    """Whether this run reads its data row by row: data.streaming = true, or "auto" with more
    than profile.STREAMING_AUTO_BYTES of local data."""
    setting = getattr(getattr(profile, "data", None), "streaming", False)
    if setting is True:
        return True
    if setting != "auto":
        return False
    from workbench.data.sources import sources_of
    from workbench.profile import STREAMING_AUTO_BYTES

    return local_bytes(sources_of(profile)) > STREAMING_AUTO_BYTES


def local_bytes(specs) -> int:
    """Bytes of the sources' local files (a Hub dataset counts 0: its size is not known here)."""
    total = 0
    for spec in specs:
        path = Path(spec.path) if spec.path else None
        if path is None or not path.exists():
            continue
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        total += sum(p.stat().st_size for p in files)
    return total


def is_held_out(record: dict, share: float, seed: int) -> bool:
    """The held-out rule: the row's content hash, as a number in [0, 1), below `share`."""
    if share <= 0:
        return False
    content = json.dumps([record.get("messages"), record.get("tools")], sort_keys=True,
                         ensure_ascii=False, default=str)
    digest = hashlib.sha256(f"{seed}\n{content}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


@dataclass
class Position:
    """Where the stream stands: restart there and the next row is the one that comes next."""

    passes: int = 0  # passes over the data completed
    read: list[int] = field(default_factory=list)  # rows taken from each source in this pass
    part: int = 0  # rows of the next record already trained (a conversation can render to several)
    examples: int = 0  # examples (rows or packs) handed to the trainer, all passes
    rows: int = 0  # training rows in those examples, all passes

    @property
    def row(self) -> int:
        """Rows read in this pass, held-out ones included: the next row's 0-based number."""
        return sum(self.read)

    def copy(self) -> Position:
        return Position(self.passes, list(self.read), self.part, self.examples, self.rows)

    def describe(self) -> str:
        where = f"row {self.row}" + (f" (its row {self.part + 1} of rendering)" if self.part else "")
        if self.passes:
            where += f" of pass {self.passes + 1}"
        return where


class _Source:
    """One source's records in one pass, with one record read ahead (so a source's end is
    known as its last row is taken, the same way on a first run and on a resume)."""

    def __init__(self, spec, records: Iterator[dict], skip: int):
        self.spec = spec
        self.records = records
        self.taken = 0
        for _ in range(skip):  # the rows before the resume point: read, not rendered
            if next(self.records, None) is None:
                break
            self.taken += 1
        self.ahead = next(self.records, None)

    @property
    def done(self) -> bool:
        limit = self.spec.rows
        return self.ahead is None or (limit is not None and self.taken >= limit)

    def take(self) -> dict:
        record, self.ahead = self.ahead, next(self.records, None)
        self.taken += 1
        return record


class StreamingData:
    """A run's training stream (see the module docstring). `examples()` is what the trainer's
    dataset iterates; `position_after(n)` where it stood after its n-th example."""

    def __init__(self, profile, tokenizer, fmt, specs):
        self.profile = profile
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.specs = list(specs)
        self.start = Position(read=[0] * len(self.specs))
        self.packed = False
        self.positions: OrderedDict[int, Position] = OrderedDict()
        # At least POSITIONS_KEPT; the trainer raises it to a few optimizer steps of examples.
        self.keep = POSITIONS_KEPT
        # Renderer rows -> training rows {input_ids, labels}: methods/sft.py `with_labels`, set
        # by train/streaming_trainer.py (this module stays below the trainer and the plan).
        self.label: Callable[[list[dict]], list[dict]] | None = None

    # ---- the rule and the readers ------------------------------------------------------------

    @property
    def share(self) -> float:
        d = self.profile.data
        return 0.0 if d.validation else d.validation_split

    def held(self, record: dict, spec) -> bool:
        return spec.held_out and is_held_out(record, self.share, self.profile.train.seed)

    def _open(self, read: list[int]) -> list[_Source]:
        from workbench.data import LoadReport
        from workbench.data.load import iter_source

        on_bad = self.profile.data.on_bad_rows
        return [_Source(spec, iter_source(spec, on_bad_line=on_bad, report=LoadReport(),
                                          streaming=True), skip)
                for spec, skip in zip(self.specs, read)]

    def _draw(self, sources: list[_Source], passes: int, k: int) -> int | None:
        """The source of draw k: the only one left, or one at random by weight."""
        live = [i for i, s in enumerate(sources) if not s.done]
        if len(live) <= 1:
            return live[0] if live else None
        weights = [self.specs[i].weight or 1.0 for i in live]
        rng = random.Random(f"{self.profile.train.seed}:{passes}:{k}")
        pick = rng.random() * sum(weights)
        for i, w in zip(live, weights):
            pick -= w
            if pick < 0:
                return i
        return live[-1]

    def records(self, start: Position) -> Iterator[tuple[int, dict, list[int]]]:
        """(source index, record, rows read before it in this pass) from `start` on, through
        this pass and the passes after it, forever."""
        passes, read = start.passes, list(start.read)
        while True:
            sources = self._open(read)
            read = [s.taken for s in sources]  # a source shorter than its skip ends early
            while (i := self._draw(sources, passes, sum(read))) is not None:
                before = list(read)
                record = sources[i].take()
                read[i] += 1
                yield i, record, before
            passes, read = passes + 1, [0] * len(self.specs)
            yield -1, {}, []  # a pass ended

    def render(self, record: dict) -> list[dict]:
        """One record as the renderer's rows {input_ids, assistant_masks}, exactly as a loaded
        run renders it."""
        from workbench.data.render import render_dataset

        p = self.profile
        rows, _ = render_dataset(self.tokenizer, [record], record.get("train_on", p.data.train_on),
                                 p.train.max_seq_len, fmt=self.fmt)
        return rows

    # ---- what the trainer iterates ---------------------------------------------------------

    def rows(self) -> Iterator[tuple[dict, Position]]:
        """Training rows from self.start on, each with the position right after it."""
        if self.label is None:
            raise RuntimeError("StreamingData.label is not set (train/streaming_trainer.py sets it)")
        start = self.start
        passes, skip_parts, rows_used = start.passes, start.part, start.rows
        trained_this_pass = start.row > 0 or start.part > 0  # a resume mid-pass
        for i, record, before in self.records(start):
            if i < 0:  # a pass ended
                if not trained_this_pass:
                    from workbench.data import DataError

                    raise DataError("a whole pass over the data gave no trainable row",
                                    hint="every row was held out or had nothing to train on; "
                                         "run `workbench data inspect` on the data")
                passes, trained_this_pass = passes + 1, False
                continue
            if self.held(record, self.specs[i]):
                continue
            rendered = self.label(self.render(record))
            after = list(before)
            after[i] += 1
            for j, row in enumerate(rendered):
                if skip_parts:  # the rows of a half-used record trained before the resume
                    skip_parts -= 1
                    continue
                trained_this_pass = True
                rows_used += 1
                last = j == len(rendered) - 1
                yield row, Position(passes, after if last else list(before), 0 if last else j + 1,
                                    rows=rows_used)
            skip_parts = 0

    def examples(self) -> Iterator[dict]:
        """What the trainer's dataset yields: rows, or packs of rows (next fit in stream order)."""
        n = self.start.examples
        capacity = self.profile.train.max_seq_len
        pack: list[dict] = []
        size = 0
        last: Position | None = None

        def hand_out(example: dict, position: Position) -> dict:
            nonlocal n
            n += 1
            position.examples = n
            self.positions[n] = position
            while len(self.positions) > self.keep:
                self.positions.popitem(last=False)
            return example

        for row, position in self.rows():
            if not self.packed:
                yield hand_out(row, position)
                continue
            if pack and size + len(row["input_ids"]) > capacity:
                yield hand_out(_joined(pack), last)
                pack, size = [], 0
            pack.append(row)
            size += len(row["input_ids"])
            last = position

    def dataset(self):
        """The examples as a `datasets.IterableDataset` (what trl's SFTTrainer takes)."""
        import datasets

        ints = datasets.Sequence(datasets.Value("int64"))
        columns = {"input_ids": ints, "labels": ints}
        if self.packed:
            columns["seq_lengths"] = ints
        return datasets.IterableDataset.from_generator(
            _examples, gen_kwargs={"stream": self}, features=datasets.Features(columns))

    # ---- positions in checkpoints ------------------------------------------------------------

    def position_after(self, examples: int) -> Position | None:
        if examples == self.start.examples:
            return self.start.copy()
        found = self.positions.get(examples)
        return found.copy() if found is not None else None

    def save_position(self, folder: str | Path, examples: int) -> None:
        """Write where the stream stood after `examples` examples into a checkpoint folder."""
        position = self.position_after(examples)
        if position is None:  # cannot happen while the loader reads ahead less than self.keep
            raise RuntimeError(f"the stream position after example {examples} was not kept")
        body = {"version": 1, **asdict(position), "next_row": position.row,
                "sources": [s.label for s in self.specs]}
        path = Path(folder) / POSITION_FILE
        path.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")

    def resume_from(self, checkpoint: str | Path) -> Position:
        """Continue from the position saved in `checkpoint`; returns it."""
        from workbench.train.checkpoints import CheckpointError

        path = Path(checkpoint) / POSITION_FILE
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"{Path(checkpoint).name} has no readable stream position ({POSITION_FILE}: "
                f"{type(exc).__name__}), so a streaming run cannot know which row comes next",
                hint="resume from a checkpoint this streaming run wrote (`workbench resume RUN "
                     "--from checkpoint-N`), or start the run again") from None
        labels = [s.label for s in self.specs]
        if body.get("sources") != labels:
            raise CheckpointError(
                f"the stream position in {Path(checkpoint).name} is for the sources "
                f"{body.get('sources')}, not {labels}",
                hint="resume with the profile the run started with")
        self.start = Position(body["passes"], list(body["read"]), body["part"], body["examples"],
                              body["rows"])
        self.positions.clear()
        return self.start.copy()

    # ---- plan time -------------------------------------------------------------------------

    def scan(self, keep_train: int = TRAIN_SAMPLE) -> tuple[list[dict], list[dict], int]:
        """(the first training records, the held-out records kept, rows read): the start of the
        stream, read once at plan time. Held-out records come from data.validation instead
        when it is given."""
        train: list[dict] = []
        held: list[dict] = []
        scanned = 0
        looking = self.share > 0
        for i, record, _ in self.records(Position(read=[0] * len(self.specs))):
            if i < 0:
                break
            scanned += 1
            if self.held(record, self.specs[i]):
                if len(held) < HELD_OUT_CAP:
                    held.append(record)
            elif len(train) < keep_train:
                train.append(record)
            if len(train) >= keep_train and (not looking or len(held) >= HELD_OUT_CAP
                                             or scanned >= HELD_OUT_SCAN):
                break
        if self.profile.data.validation:
            from itertools import islice

            from workbench.data.load import iter_records

            d = self.profile.data
            held = list(islice(iter_records(d.validation, format=d.format,
                                            system_prompt=d.system_prompt,
                                            on_bad_line=d.on_bad_rows, columns=d.columns or None,
                                            encoding=d.encoding or None), HELD_OUT_CAP))
        return train, held, scanned

    def describe(self, held: int, scanned: int) -> str:
        where = ", ".join(s.location for s in self.specs)
        d = self.profile.data
        if d.validation:
            held_out = (f"{held} validation rows from {d.validation} (at most {HELD_OUT_CAP} "
                        "kept); no row of the stream is held out")
        elif self.share > 0:
            held_out = (f"{held} held-out rows kept for evaluation (rows whose content hash falls "
                        f"in the {self.share:.0%} data.validation_split share; at most "
                        f"{HELD_OUT_CAP} kept, found in the first {scanned} rows read; held-out "
                        "rows met later are skipped, never trained on)")
        else:
            held_out = "no held-out rows (data.validation_split = 0)"
        batches = ("rows packed on the fly in stream order, up to max_seq_len tokens a pack"
                   if self.packed else "one row per example, padded per batch")
        return (f"data: streaming {where}: rows read one by one and rendered as training reaches "
                f"them, in the data's order, pass after pass, for train.max_steps = "
                f"{self.profile.train.max_steps} steps; {held_out}; {batches}")


def _examples(stream: StreamingData) -> Iterator[dict]:
    yield from stream.examples()


def _joined(rows: list[dict]) -> dict:
    ids, labels = [], []
    for row in rows:
        ids += row["input_ids"]
        labels += row["labels"]
    return {"input_ids": ids, "labels": labels, "seq_lengths": [len(r["input_ids"]) for r in rows]}


# ---- the plan and the evaluation -----------------------------------------------------------------


class StreamingError(Exception):
    """A streaming run that cannot start; the plan turns it into a RunError."""

    def __init__(self, message: str, hint: str = "", kind: str = "config"):
        super().__init__(message)
        self.message, self.hint, self.kind = message, hint, kind


def prepare_stream(method, profile, tokenizer, fmt, log: Callable[[str], None]):
    """(PreparedData with a sample of the training rows and the held-out rows, the
    StreamingData, (held-out rows kept, rows read)): the streaming counterpart of
    `data_cache.prepare_data_cached` (nothing is cached: rows are rendered as training reads
    them). Raises StreamingError."""
    from workbench.data import DataError, dataset_hash
    from workbench.data.render import render_dataset
    from workbench.data.sources import sources_of
    from workbench.train.methods import PreparedData

    t = profile.train
    if method.name != "sft":
        raise StreamingError(f"data.streaming reads rows one by one for supervised fine-tuning; "
                             f"train.method = \"{method.name}\" needs its data loaded",
                             hint="set data.streaming = false")
    if t.max_steps <= 0:
        raise StreamingError("the data is streamed (data.streaming) and a stream has no length, "
                             "so train.max_steps must say how many optimizer steps to train",
                             hint="set train.max_steps (e.g. 1000), or data.streaming = false")
    specs = sources_of(profile)
    if profile.data.format == "text" or any(s.format == "text" for s in specs):
        raise StreamingError("data.streaming does not stream raw text (format = \"text\") yet: "
                             "its documents are joined and cut into blocks over the whole text",
                             hint="set data.streaming = false")
    stream = StreamingData(profile, tokenizer, fmt, specs)
    log(f"streaming {', '.join(s.location for s in specs)}: reading the first rows")
    try:
        train, held, scanned = stream.scan()
        # Renderer rows {input_ids, assistant_masks}, as a loaded plan holds them.
        sample, _ = render_dataset(tokenizer, train, profile.data.train_on, t.max_seq_len, fmt=fmt)
        eval_rows, _ = render_dataset(tokenizer, held, profile.data.train_on, t.max_seq_len,
                                      fmt=fmt)
        hashed = [s.path or s.name for s in specs]
        if profile.data.validation:
            hashed.append(profile.data.validation)
        digest = dataset_hash(hashed, revision=specs[0].revision or None
                              if len(specs) == 1 else None)
    except DataError as exc:
        raise StreamingError(str(exc), kind="data") from exc
    if not sample:
        raise StreamingError(f"no trainable rows in the first {scanned} rows of the stream",
                             hint="run `workbench data inspect` on the data", kind="data")
    data = PreparedData(sample, eval_rows, digest, None, [], held_out=len(held))
    if profile.data.sources:  # a mixture: the sources as the run records them
        data.sources = [s.to_dict() for s in specs]
    return data, stream, (len(held), scanned)


@dataclass
class HeldOut:
    """What the evaluation reads of a streamed run (the fields of plan.TrainingData it uses)."""

    train: list[dict]
    validation: list[dict]
    notes: list[str]


def held_out_records(profile) -> HeldOut:
    """The records the evaluation after training uses: the held-out rows
    kept and the first training rows (few-shot examples), read from the start of the stream
    as the plan read them; never the whole data."""
    from workbench.data.sources import sources_of

    stream = StreamingData(profile, None, None, sources_of(profile))
    train, held, scanned = stream.scan()
    note = (f"data: streamed; the evaluation uses the {len(held)} held-out rows kept (at most "
            f"{HELD_OUT_CAP}, from the first {scanned} rows) and the first {len(train)} training "
            "rows as few-shot examples")
    return HeldOut(train, held, [note])
