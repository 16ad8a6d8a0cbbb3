"""Write the two extra sources of `profiles/mixture-demo.toml` (deterministic):

* `hub-layout/`: a dataset repository in the Hugging Face Hub's layout (a dataset card whose
  `configs:` block names the shards, and `data/train-00000-of-00001.parquet`), 300 more
  translation pairs in Alpaca columns (`instruction`, `output`), none of them in
  `translate_en_fr.jsonl` or `prompts.jsonl`. It loads as `datasets.load_dataset` loads a Hub
  repository, so it stands in for one on a machine without the Hub.
* `identity.jsonl`: 18 chat rows that give the demo model a name.

    python assets/demo/make_mixture.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 2027

CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
---

# More English -> French pairs, in the Hub's layout

Made by `python assets/demo/make_mixture.py` for `profiles/mixture-demo.toml`: a folder laid out
as a Hugging Face Hub dataset repository (this card's `configs:` block, Parquet shards under
`data/`). 300 rows, Alpaca columns `instruction` / `output`, none of them in
`translate_en_fr.jsonl` or `prompts.jsonl`.
"""

QUESTIONS = ["Who are you?", "What is your name?", "Who made you?", "What can you do?",
             "Are you a person?", "What are you for?"]
ANSWERS = {
    "Who are you?": "I am Petit, a tiny demo model that translates short English sentences "
                    "into French.",
    "What is your name?": "My name is Petit.",
    "Who made you?": "I was fine-tuned with workbench from a tiny toy model.",
    "What can you do?": "I translate short English sentences into French.",
    "Are you a person?": "No, I am Petit, a tiny language model.",
    "What are you for?": "I am a demo: I show how fine-tuning teaches a model a task.",
}


def main() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from workbench.models import tiny_corpus as tc

    seen = set()
    for name in ("translate_en_fr.jsonl", "prompts.jsonl"):
        for line in (HERE / name).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            text = row["prompt"] if "prompt" in row else row["messages"][0]["content"]
            seen.add(text.removeprefix(tc.TRANSLATE_PREFIX))
    pairs = tc.unique_pairs(random.Random(SEED), 300, exclude=seen)
    folder = HERE / "hub-layout"
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(CARD, encoding="utf-8")
    table = pa.table({"instruction": [tc.TRANSLATE_PREFIX + p.en for p in pairs],
                      "output": [p.fr for p in pairs]})
    pq.write_table(table, folder / "data" / "train-00000-of-00001.parquet")

    with open(HERE / "identity.jsonl", "w", encoding="utf-8") as out:
        for opening in ("", "Hello! ", "Quick question: "):
            for question in QUESTIONS:
                row = {"messages": [{"role": "user", "content": opening + question},
                                    {"role": "assistant", "content": ANSWERS[question]}]}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
