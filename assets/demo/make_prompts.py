"""Make translate_en_fr_prompts.jsonl (the GRPO demo's prompts) from translate_en_fr.jsonl:
each row's question as `prompt`, its French as the reference column `answer`. Deterministic:
`python assets/demo/make_prompts.py`."""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

with open(HERE / "translate_en_fr.jsonl", encoding="utf-8") as src, \
        open(HERE / "translate_en_fr_prompts.jsonl", "w", encoding="utf-8") as out:
    for line in src:
        messages = json.loads(line)["messages"]
        out.write(json.dumps({"prompt": messages[0]["content"], "answer": messages[1]["content"]},
                             ensure_ascii=False) + "\n")
