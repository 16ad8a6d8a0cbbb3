"""Library chatter off for runs and evaluations: their own events are the display."""

from __future__ import annotations


def quiet_libraries() -> None:
    """The run's own events are the progress display. Library progress bars and
    deprecation chatter would interleave with it (and fill stdout.log), so they go;
    real warnings and errors stay."""
    import logging
    import warnings

    # bitsandbytes warns at import on CPUs with AVX512-bf16 about an optional kernel
    # download that cannot matter for a LoRA run.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl|peft)\b")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
