"""Zero-shot multiple-choice tasks, as lm-evaluation-harness defines them.

Each task turns a row of its data set (with the hub data set's own field names) into an ``Item``:
a context, the choices, and the gold index read from the row. The scorer (``oe.evaluation.scoring``)
appends ``" " + choice`` to the context and scores the choice's tokens only.

    hellaswag       Rowan/hellaswag, validation (10,042): "{activity_label}: {ctx_a} {Ctx_b}"
                    and the endings, both through the harness's preprocessing.
    piqa            baber/piqa (PIQA without its loading script), validation (1,838):
                    "Question: {goal}\\nAnswer:" and sol1 / sol2.
    storycloze      StoryCloze 2016, validation (1,871): the four sentences joined by spaces, and
                    the two endings. Not openly hosted: request the data at
                    https://cs.rochester.edu/nlp/rocstories/ and give ``--data_dir D`` holding
                    ``storycloze.jsonl`` (LSDSem/story_cloze fields) or the original
                    "cloze_test_val__spring2016" CSV.
    xstorycloze_en  juletxara/xstory_cloze "en", eval split (1,511): the openly hosted English
                    StoryCloze, same fields and format.

Offline, ``--data_dir D`` reads ``D/<task>.jsonl`` through the same row parsers.

``default_tasks``: HellaSwag, PIQA and StoryCloze, all of them loadable from the hub as they are:
StoryCloze is ``xstorycloze_en`` unless a local copy of the 2016 set is given.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Item:
    context: str
    choices: list[str]
    gold: int
    where: str = field(default="", compare=False)  # file:line or hub split[index], for messages


class TaskDataError(ValueError):
    """A row or file of a task's data that cannot be used; the message names it."""


def _field(row: dict, name: str, where: str):
    if name not in row:
        raise TaskDataError(f"{where}: missing field {name!r} (has {sorted(row)})")
    return row[name]


def _label(value, n_choices: int, offset: int, where: str, name: str) -> int:
    try:
        label = int(str(value).strip()) - offset
    except ValueError:
        raise TaskDataError(f"{where}: {name} is {value!r}, not an integer (a test split "
                            "without labels cannot be scored)") from None
    if not 0 <= label < n_choices:
        raise TaskDataError(f"{where}: {name} {value!r} is out of range "
                            f"{offset}..{n_choices - 1 + offset}")
    return label


def hellaswag_preprocess(text: str) -> str:
    """The harness's HellaSwag cleaning: WikiHow's " [title]" marks, other brackets, double spaces."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag_item(row: dict, where: str) -> Item:
    ctx = _field(row, "ctx_a", where) + " " + _field(row, "ctx_b", where).capitalize()
    context = hellaswag_preprocess(_field(row, "activity_label", where) + ": " + ctx)
    endings = _field(row, "endings", where)
    if not isinstance(endings, list) or len(endings) != 4:
        raise TaskDataError(f"{where}: endings must be a list of 4 strings, got {endings!r}")
    choices = [hellaswag_preprocess(e) for e in endings]
    return Item(context, choices, _label(_field(row, "label", where), 4, 0, where, "label"), where)


def piqa_item(row: dict, where: str) -> Item:
    context = f"Question: {_field(row, 'goal', where)}\nAnswer:"
    choices = [_field(row, "sol1", where), _field(row, "sol2", where)]
    return Item(context, choices, _label(_field(row, "label", where), 2, 0, where, "label"), where)


def storycloze_item(row: dict, where: str) -> Item:
    context = " ".join(_field(row, f"input_sentence_{i}", where) for i in range(1, 5))
    choices = [_field(row, "sentence_quiz1", where), _field(row, "sentence_quiz2", where)]
    gold = _label(_field(row, "answer_right_ending", where), 2, 1, where, "answer_right_ending")
    return Item(context, choices, gold, where)


@dataclass(frozen=True)
class Task:
    name: str
    parse: Callable[[dict, str], Item]
    hub: tuple[str, str | None] | None  # (path, configuration); None: local data only
    split: str


TASKS: dict[str, Task] = {
    "hellaswag": Task("hellaswag", hellaswag_item, ("Rowan/hellaswag", None), "validation"),
    "piqa": Task("piqa", piqa_item, ("baber/piqa", None), "validation"),
    "storycloze": Task("storycloze", storycloze_item, None, "validation"),
    "xstorycloze_en": Task("xstorycloze_en", storycloze_item, ("juletxara/xstory_cloze", "en"), "eval"),
}

# The original StoryCloze CSV's columns, in the hub data set's names.
_STORYCLOZE_CSV = {
    "InputSentence1": "input_sentence_1", "InputSentence2": "input_sentence_2",
    "InputSentence3": "input_sentence_3", "InputSentence4": "input_sentence_4",
    "RandomFifthSentenceQuiz1": "sentence_quiz1", "RandomFifthSentenceQuiz2": "sentence_quiz2",
    "AnswerRightEnding": "answer_right_ending",
}


DEFAULT_TASKS = ["hellaswag", "piqa", "xstorycloze_en"]


def has_local_storycloze(data_dir: str | Path | None) -> bool:
    """Whether ``data_dir`` holds the StoryCloze 2016 set (storycloze.jsonl or its CSV)."""
    if data_dir is None:
        return False
    data_dir = Path(data_dir)
    return (data_dir / "storycloze.jsonl").is_file() or any(data_dir.glob("*.csv"))


def default_tasks(data_dir: str | Path | None = None) -> list[str]:
    """HellaSwag, PIQA and StoryCloze: the 2016 set when ``data_dir`` holds it, else xstorycloze_en
    (the openly hosted English StoryCloze), so that the list runs from the hub as it is."""
    if has_local_storycloze(data_dir):
        return ["hellaswag", "piqa", "storycloze"]
    return list(DEFAULT_TASKS)


def _jsonl_rows(path: Path) -> Iterable[tuple[dict, str]]:
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise TaskDataError(f"{where}: not a JSON object ({err.msg})") from None
            if not isinstance(row, dict):
                raise TaskDataError(f"{where}: not a JSON object")
            yield row, where


def _storycloze_csv_rows(path: Path) -> Iterable[tuple[dict, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = set(_STORYCLOZE_CSV) - set(reader.fieldnames or [])
        if missing:
            raise TaskDataError(f"{path}: not a StoryCloze CSV, missing columns {sorted(missing)}")
        for line_no, row in enumerate(reader, start=2):
            yield {ours: row[theirs] for theirs, ours in _STORYCLOZE_CSV.items()}, f"{path}:{line_no}"


def _local_rows(task: Task, data_dir: Path) -> Iterable[tuple[dict, str]]:
    jsonl = data_dir / f"{task.name}.jsonl"
    if jsonl.is_file():
        return _jsonl_rows(jsonl)
    if task.name == "storycloze":
        csvs = sorted(data_dir.glob("*.csv"))
        if csvs:
            return _storycloze_csv_rows(csvs[0])
    raise FileNotFoundError(
        f"{jsonl} not found" + (" (nor a StoryCloze CSV)" if task.name == "storycloze" else "")
        + f": --data_dir must hold {task.name}.jsonl with the hub data set's fields"
    )


def _hub_rows(task: Task) -> Iterable[tuple[dict, str]]:
    from oe.hub import hub_host, offline_unless_reachable

    offline = offline_unless_reachable()  # before datasets is imported: no minutes of retries
    import datasets

    path, name = task.hub
    try:
        ds = datasets.load_dataset(path, name, split=task.split)
    except Exception as err:  # offline, unknown: one message naming the way out
        why = (f"the hub ({hub_host()}) cannot be reached and no copy is cached" if offline
               else type(err).__name__)
        raise FileNotFoundError(
            f"could not load {task.name} from the hub ({path}, {task.split}: {why}); pass "
            f"--data_dir D with D/{task.name}.jsonl (the format: oe evaluate --help)"
        ) from None
    for i, row in enumerate(ds):
        yield row, f"{path}[{task.split}][{i}]"


def load_items(name: str, data_dir: str | Path | None = None, limit: int | None = None) -> list[Item]:
    """The items of task ``name``: from ``data_dir/<name>.jsonl`` when given, else the hub."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    task = TASKS[name]
    if data_dir is None and task.hub is None:
        raise FileNotFoundError(
            "storycloze (2016) is not openly hosted: request it at "
            "https://cs.rochester.edu/nlp/rocstories/ and pass --data_dir D with D/storycloze.jsonl "
            "(LSDSem/story_cloze fields) or the validation CSV; or use xstorycloze_en instead"
        )
    rows = _hub_rows(task) if data_dir is None else _local_rows(task, Path(data_dir))
    items = []
    for row, where in rows:
        items.append(task.parse(row, where))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise TaskDataError(f"{name}: no items found")
    return items
