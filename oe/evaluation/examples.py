"""Example task files: the local format ``oe evaluate --data_dir D`` reads, written small.

``D/<task>.jsonl`` holds one JSON object per line with the hub data set's own field names:

    hellaswag.jsonl   activity_label, ctx_a, ctx_b, endings (4 strings), label ("0".."3")
    piqa.jsonl        goal, sol1, sol2, label (0 or 1)
    storycloze.jsonl  input_sentence_1 .. input_sentence_4, sentence_quiz1, sentence_quiz2,
                      answer_right_ending (1 or 2); xstorycloze_en.jsonl has the same fields

``oe evaluate --write_examples D`` writes such files (random sentences from a small vocabulary)
to try the tools offline; ``oe lm-eval --data_dir D`` reads the same files. The tests build their
task data with the same writer.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

FORMAT = __doc__.split("\n\n")[2]  # the fields of each task, as --help shows them

NOUNS = "man woman dog cat car boat ball knife cup bread water rope stick paper glass".split()
VERBS = "takes opens cuts pours lifts throws holds cleans paints folds".split()


def sentence(rng: random.Random, words: int = 8) -> str:
    """A capitalised sentence of ``words`` words, nouns and verbs in turn."""
    parts = [rng.choice(NOUNS if i % 2 == 0 else VERBS) for i in range(words)]
    return " ".join(parts).capitalize() + "."


def write_example_tasks(directory: str | Path, n: int = 8, seed: int = 0) -> dict[str, list]:
    """``hellaswag.jsonl``, ``piqa.jsonl`` and ``storycloze.jsonl`` of ``n`` rows each in
    ``directory`` (created); returns the rows written, by task."""
    rng = random.Random(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list] = {"hellaswag": [], "piqa": [], "storycloze": []}
    for i in range(n):
        rows["hellaswag"].append({
            "ind": i, "activity_label": "Cleaning a " + rng.choice(NOUNS),
            "ctx_a": sentence(rng), "ctx_b": "then the " + rng.choice(NOUNS),
            "ctx": "", "endings": [sentence(rng, rng.randint(3, 9)) + " [step]" * (j == 1)
                                   for j in range(4)],
            "source_id": f"src{i}", "split": "val", "split_type": "indomain",
            "label": str(rng.randrange(4)),
        })
        rows["piqa"].append({"goal": "How do I " + sentence(rng, 4).lower(),
                             "sol1": sentence(rng, rng.randint(2, 8)),
                             "sol2": sentence(rng, rng.randint(2, 8)), "label": rng.randrange(2)})
        story = {f"input_sentence_{k}": sentence(rng) for k in range(1, 5)}
        rows["storycloze"].append({"story_id": f"s{i}", **story, "sentence_quiz1": sentence(rng, 5),
                                   "sentence_quiz2": sentence(rng, 6),
                                   "answer_right_ending": rng.randint(1, 2)})
    for task, task_rows in rows.items():
        (directory / f"{task}.jsonl").write_text("\n".join(json.dumps(r) for r in task_rows) + "\n")
    return rows
