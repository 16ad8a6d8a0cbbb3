"""Loss and eval loss against step, drawn by plotext. Redrawn only when the screen hands it
new points, and the screen does that at most twice a second."""

from __future__ import annotations

from textual_plotext import PlotextPlot


def _thin(xs: list, ys: list, limit: int) -> tuple[list, list]:
    """Keep at most `limit` evenly spaced points (always the last): a terminal is a few
    hundred cells wide, and plotext's cost grows with the points it is given."""
    if len(xs) <= limit:
        return xs, ys
    stride = len(xs) / limit
    idx = sorted({int(i * stride) for i in range(limit)} | {len(xs) - 1})
    return [xs[i] for i in idx], [ys[i] for i in idx]


class LossPlot(PlotextPlot):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._series: tuple = ([], [], [], [])
        self.title_suffix = ""  # "(g: next chart, 1/4)" where the method's charts take turns

    def on_mount(self) -> None:
        self._draw()

    def refresh_title(self) -> None:
        self._draw()

    def show(self, steps: list, losses: list, eval_steps: list, eval_losses: list) -> None:
        self._series = (list(steps), list(losses), list(eval_steps), list(eval_losses))
        self._draw()

    def _draw(self) -> None:
        steps, losses, eval_steps, eval_losses = self._series
        plt = self.plt
        plt.clear_data()
        plt.title("loss" + self.title_suffix)
        plt.xlabel("step")
        limit = max(self.size.width * 2, 100)
        if steps:
            plt.plot(*_thin(steps, losses, limit), label="train", marker="braille")
        if eval_steps:
            plt.plot(*_thin(eval_steps, eval_losses, limit), label="eval", marker="dot")
        self.refresh()
