"""Build translate_en_fr_pairs.jsonl (the preference demo) from translate_en_fr.jsonl.

Each pair keeps the demo's prompt and its French answer as `chosen`; `rejected` is one of
the mistakes the untuned tiny model makes: it repeats the English, answers with the words
reversed, or gives the French of another sentence. Deterministic:

    python assets/demo/make_pairs.py
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    rows = [json.loads(line) for line in (HERE / "translate_en_fr.jsonl").open(encoding="utf-8")]
    rng = random.Random(7)
    out = []
    for i, row in enumerate(rows):
        prompt, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        english = prompt.split(":", 1)[1].strip()
        kind = i % 3
        if kind == 0:
            rejected = english
        elif kind == 1:
            rejected = " ".join(reversed(answer.split()))
        else:
            rejected = rng.choice([r["messages"][1]["content"] for r in rows
                                   if r["messages"][1]["content"] != answer])
        if rejected == answer:  # a one-word answer reversed is itself
            rejected = english
        out.append({"prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": answer}],
                    "rejected": [{"role": "assistant", "content": rejected}]})
    with (HERE / "translate_en_fr_pairs.jsonl").open("w", encoding="utf-8") as fh:
        for pair in out:
            fh.write(json.dumps(pair, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
