"""A training method's own signals against step (DPO's rewards, margin and preference accuracy,
KTO's KL...): one small plotext chart per `Chart` of the method (workbench.train.methods).

Which charts a run gets comes from its method; `charts_for` also reads charts off the signals
themselves when the run's profile cannot be read. Like the loss plot, a chart is redrawn only
when the screen hands it new points.
"""

from __future__ import annotations

from textual_plotext import PlotextPlot

from screens.widgets.loss_plot import _thin

# Short names for the legend and the stats column: (label, format of a value).
SIGNAL_LABELS: dict[str, tuple[str, str]] = {
    "rewards/chosen": ("chosen", "+.3f"),
    "rewards/rejected": ("rejected", "+.3f"),
    "rewards/margins": ("margin", "+.3f"),
    "rewards/accuracies": ("pref acc", ".0%"),
    "kl": ("kl", ".3f"),
    "log_odds_ratio": ("log-odds", "+.3f"),
}
# Shares of pairs: drawn on 0..1 so that "90%" looks like 90% from the first point on.
SHARE_SIGNALS = ("rewards/accuracies",)


def signal_label(name: str) -> str:
    return SIGNAL_LABELS.get(name, (name.rsplit("/", 1)[-1].replace("_", " "), ""))[0]


def signal_value(name: str, value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return format(value, SIGNAL_LABELS.get(name, ("", ".3g"))[1] or ".3g")


def charts_for(method_name: str | None, seen: set[str] | None = None) -> tuple:
    """The charts of a run: its method's; without a readable method, those of the first
    method whose signals include every signal seen in the events (else none)."""
    from workbench.train.methods import METHODS

    method = METHODS.get(method_name or "")
    if method is not None:
        return method.charts
    if seen:
        for candidate in METHODS.values():
            if candidate.charts and seen <= set(candidate.signals):
                return candidate.charts
    return ()


class SignalPlot(PlotextPlot):
    """One Chart: its signals from the log events as lines, and for a one-signal chart the
    evaluations' values as points."""

    DEFAULT_CSS = "SignalPlot { width: 1fr; height: 1fr; }"

    def __init__(self, chart, **kwargs) -> None:
        super().__init__(**kwargs)
        self.chart = chart
        self.title_suffix = ""
        self._train: dict = {}
        self._eval: dict = {}

    def on_mount(self) -> None:  # PlotextPlot's own on_mount runs as well (Textual calls both)
        self._draw()

    def show(self, train: dict, evals: dict) -> None:
        """train / evals: {signal: (steps, values)} as RunView keeps them."""
        self._train, self._eval = train, evals
        self._draw()

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.title(self.chart.title + self.title_suffix)
        plt.xlabel("step")
        limit = max(self.size.width * 2, 100)
        drawn = False
        single = len(self.chart.signals) == 1  # the title names it: train / eval, as for the loss
        for name in self.chart.signals:
            steps, values = self._train.get(name, ((), ()))
            if steps:
                plt.plot(*_thin(list(steps), list(values), limit),
                         label="train" if single else signal_label(name), marker="braille")
                drawn = True
        if single:
            name = self.chart.signals[0]
            steps, values = self._eval.get(name, ((), ()))
            if steps:
                plt.plot(list(steps), list(values), label="eval", marker="dot")
                drawn = True
        if any(name in SHARE_SIGNALS for name in self.chart.signals):
            plt.ylim(0, 1)
        elif drawn:
            plt.hline(0, "gray")  # rewards and margins mean most against zero
        self.refresh()
