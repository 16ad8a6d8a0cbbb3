"""The GRPO demo's own reward (profiles/grpo-demo.toml names it as "rewards.py:french_overlap").

A reward function has TRL's signature: the prompts, the sampled completions, and the data
row's columns as keyword arguments (here `answer`, the reference translation), each a list
with one entry per completion; it returns one number per completion. `workbench rewards test
PROFILE` calls it on sampled completions before you train.
"""


def _text(completion) -> str:
    # A chat model's completion arrives as [{"role": "assistant", "content": "..."}].
    if isinstance(completion, list):
        return " ".join(m["content"] for m in completion)
    return completion


def french_overlap(prompts, completions, answer, **kwargs):
    """Partial credit: the F1 of the completion's words against the reference translation's
    (0 for nothing right, 1 for the exact words). Partial credit matters for GRPO: it only learns
    from completions of one prompt that score differently."""
    scores = []
    for completion, reference in zip(completions, answer):
        got, want = _text(completion).lower().split(), reference.lower().split()
        common = sum(min(got.count(w), want.count(w)) for w in set(want))
        scores.append(0.0 if not common else 2 * common / (len(got) + len(want)))
    return scores
