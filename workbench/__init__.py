"""workbench: fine-tune open language models on your own GPU.

The engine. Nothing under this package imports Textual (a test enforces it), and nothing
imports torch, transformers, trl or datasets at module level of what the app loads at start.
"""

__version__ = "0.1.0"
