"""A training method's own signals against step (DPO's rewards, margin and preference accuracy,
KTO's KL, GRPO's reward per function...): one small plotext chart per `Chart` of the method
(workbench.train.methods).

A chart's signal may be a pattern with a "*" ("rewards/*/mean"): it stands for every logged
name that matches, one line each, labelled by what the "*" stood for (the reward function).
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
    # GRPO (labels of 9 cells at most: the stats column pairs them)
    "reward": ("reward", ".3f"),
    "reward_std": ("rew std", ".3f"),
    "rewards/*/mean": ("", ".3f"),  # labelled by the reward function
    "frac_reward_zero_std": ("no signal", ".0%"),
    "completions/mean_length": ("length", ".1f"),
    "completions/clipped_ratio": ("clipped", ".0%"),
}
# Shares: drawn on 0..1 so that "90%" looks like 90% from the first point on.
SHARE_SIGNALS = ("rewards/accuracies", "frac_reward_zero_std", "completions/clipped_ratio")


def is_pattern(signal: str) -> bool:
    return "*" in signal


def matches(signal: str, name: str) -> bool:
    from workbench.train.methods import signal_match  # the recorder's rule (pure, no torch)

    return signal_match(signal, name) is not None


def short_reward(name: str) -> str:
    """A reward function's name, short: "rewards.py:french_overlap" -> "french_overlap";
    built-ins ("answer:exact") as they are."""
    file, sep, func = name.rpartition(":")
    return func if sep and file.endswith(".py") else name


def expand(signals, seen) -> list[tuple[str, str, str]]:
    """(logged name, label, chart signal) for each chart signal, a pattern giving one per
    matching name in `seen` (sorted), labelled by its reward function / "*" part."""
    out, done = [], set()
    for signal in signals:
        if is_pattern(signal):
            from workbench.train.methods import signal_match

            found = sorted((n, signal_match(signal, n)) for n in seen)
            pairs = [(n, short_reward(part)) for n, part in found if part is not None]
        else:
            pairs = [(signal, signal_label(signal))]
        for name, label in pairs:
            if name not in done:
                done.add(name)
                out.append((name, label, signal))
    return out


def signal_label(name: str) -> str:
    return SIGNAL_LABELS.get(name, (name.rsplit("/", 1)[-1].replace("_", " "), ""))[0]


def _format_of(name: str) -> str:
    if name in SIGNAL_LABELS:
        return SIGNAL_LABELS[name][1]
    for key, (_, spec) in SIGNAL_LABELS.items():
        if is_pattern(key) and matches(key, name):
            return spec
    return ""


def signal_value(name: str, value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return format(value, _format_of(name) or ".3g")


def charts_for(method_name: str | None, seen: set[str] | None = None) -> tuple:
    """The charts of a run: its method's; without a readable method, those of the first
    method whose signals (patterns included) match every signal seen in the events (else
    none)."""
    from workbench.train.methods import METHODS

    method = METHODS.get(method_name or "")
    if method is not None:
        return method.charts
    if seen:
        for candidate in METHODS.values():
            if candidate.charts and all(any(matches(s, name) for s in candidate.signals)
                                        for name in seen):
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

    def lines(self) -> list[tuple[str, str, str]]:
        """(logged name, label, chart signal) of each line the chart draws now."""
        return expand(self.chart.signals, self._train.keys())

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.title(self.chart.title + self.title_suffix)
        plt.xlabel("step")
        limit = max(self.size.width * 2, 100)
        drawn = False
        # One plain signal: the title names it, so the lines are train / eval, as for the loss.
        single = len(self.chart.signals) == 1 and not is_pattern(self.chart.signals[0])
        for name, label, _ in self.lines():
            steps, values = self._train.get(name, ((), ()))
            if steps:
                plt.plot(*_thin(list(steps), list(values), limit),
                         label="train" if single else label, marker="braille")
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
