"""A run's stdout.log, wrapped to the pane's width: at 80 columns a training line ("step 40/300
epoch 0.27  loss ...  ETA 2m") is longer than the terminal, and cutting it off hid its end.

The text arrives in chunks that may end mid-line: the unfinished tail waits for its newline
(or for `flush`, once the run has ended). Lines are kept as written, so a resize wraps them
again to the new width."""

from __future__ import annotations

from collections import deque

from rich.text import Text

from screens.widgets.keys import KeyedRichLog


class LogPane(KeyedRichLog):
    DEFAULT_CSS = """
    /* A scrollbar that is always there keeps the width lines are wrapped to constant. */
    LogPane { overflow-y: scroll; overflow-x: hidden; scrollbar-size-vertical: 1; }
    """

    def __init__(self, max_lines: int = 500, **kwargs) -> None:
        super().__init__(max_lines=max_lines, min_width=1, wrap=True, markup=False,
                         highlight=False, auto_scroll=False, **kwargs)
        self._raw: deque[str] = deque(maxlen=max_lines)
        self._partial = ""
        self._wrapped_at = 0

    def add(self, text: str, follow: bool) -> None:
        """Append log text; `follow` scrolls to the end (the reader was there already)."""
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        self._write(lines, follow)

    def flush(self, follow: bool) -> None:
        """Show the unfinished last line too (the run has ended: no newline will come)."""
        if self._partial:
            lines, self._partial = [self._partial], ""
            self._write(lines, follow)

    def reset(self) -> None:
        self._raw.clear()
        self._partial = ""
        self.clear()

    def _write(self, lines: list[str], follow: bool) -> None:
        for line in lines:
            line = line.rstrip("\r")
            self._raw.append(line)
            self.write(Text(line), scroll_end=follow)

    def on_resize(self, event) -> None:
        super().on_resize(event)
        width = self.scrollable_content_region.width
        if width and width != self._wrapped_at:
            at_end = self.is_vertical_scroll_end
            if self._wrapped_at:  # wrapped before at another width: wrap again
                self.clear()
                for line in self._raw:
                    self.write(Text(line), scroll_end=at_end)
            self._wrapped_at = width
