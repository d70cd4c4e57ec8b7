"""Zero-shot scoring: batched = a slow one-forward-per-choice reference, padding-free scores,
gold labels from the data, the harness's formats, and clear errors on bad input."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from datamodules.wikitext import train_bpe
from tests.conftest import sentence, tiny_gpt2_dir, write_task_files
from oe.models.embedding import OverEncodingConfig
from oe.evaluation.scoring import (build_requests, evaluate_task, item_correct, loglikelihoods,
                                   share_stderr)
from oe.cli.evaluate import load_pretrained, main
from oe.models.build import build_model
from oe.models.gpt import BackboneConfig
from oe.evaluation.tasks import TaskDataError, hellaswag_preprocess, load_items


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    rows = write_task_files(root / "tasks")
    model_dir = tiny_gpt2_dir(root / "gpt2")
    model, tokenizer = load_pretrained(str(model_dir))
    return root, rows, model_dir, model, tokenizer


def reference_scores(model, tokenizer, items) -> list[list[float]]:
    """One forward pass per choice over context + " " + choice, an explicit loop over the choice tokens."""
    eot = tokenizer.token_to_id("<|endoftext|>")
    out = []
    for item in items:
        lls = []
        for choice in item.choices:
            whole = tokenizer.encode(item.context + " " + choice).ids
            context = tokenizer.encode(item.context).ids or [eot]
            continuation = whole[len(tokenizer.encode(item.context).ids):]
            sequence = (context + continuation)[-(model.config.block_size + 1):]
            with torch.no_grad():
                logp = model(torch.tensor([sequence[:-1]])).log_softmax(-1)[0]
            total = 0.0
            for j in range(len(continuation)):
                position = len(sequence) - len(continuation) + j  # the token's index
                total += float(logp[position - 1, sequence[position]])  # predicted one step before
            lls.append(total)
        out.append(lls)
    return out


def _check_against_reference(model, tokenizer, items):
    requests = build_requests(items, tokenizer, tokenizer.token_to_id("<|endoftext|>"))
    scores = loglikelihoods(model, requests, batch_size=5)
    ref = reference_scores(model, tokenizer, items)
    for request, score in zip(requests, scores):
        assert score == pytest.approx(ref[request.item][request.choice], abs=1e-4)
    acc, acc_norm = item_correct(items, requests, scores)
    ref_acc = [float(np.argmax(r) == it.gold) for r, it in zip(ref, items)]
    ref_norm = [float(np.argmax(np.array(r) / [len(c) for c in it.choices]) == it.gold)
                for r, it in zip(ref, items)]
    assert acc.tolist() == ref_acc and acc_norm.tolist() == ref_norm
    return requests


@pytest.mark.parametrize("task", ["hellaswag", "piqa", "storycloze"])
def test_batched_scoring_equals_slow_reference(setup, task):
    root, _, _, model, tokenizer = setup
    requests = _check_against_reference(model, tokenizer, load_items(task, root / "tasks"))
    if task == "storycloze":  # long enough that the left cut to the block size is exercised
        assert max(len(r.context) + len(r.continuation) for r in requests) > model.config.block_size + 1


def test_oe_model_scores_ngrams_over_context_and_choice(setup):
    root, _, _, _, tokenizer = setup
    torch.manual_seed(0)
    built = build_model(vocab_size=tokenizer.get_vocab_size(), pad_id=0,
                        backbone=BackboneConfig(n_layer=2, n_head=4, n_embd=32, block_size=64),
                        over_encoding=OverEncodingConfig(orders=[2, 3], modulus=1001, init_std=0.5))
    _check_against_reference(built.gpt, tokenizer, load_items("hellaswag", root / "tasks"))


def test_padding_never_changes_a_score(setup):
    root, _, _, model, tokenizer = setup
    items = load_items("hellaswag", root / "tasks")
    requests = build_requests(items, tokenizer, 0)
    lengths = [len(r.context) + len(r.continuation) for r in requests]
    assert len(set(lengths)) > 4  # the batch below really mixes lengths
    alone = np.array([loglikelihoods(model, [r], batch_size=1)[0] for r in requests[:8]])
    batched = loglikelihoods(model, requests[:8], batch_size=8)
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-5)


def test_ranks_with_fewer_requests_make_as_many_passes(setup):
    """``min_batches`` pads a rank's forward passes (sharded lookups are collective calls);
    the scores are those of the real batches alone."""
    root, _, _, model, tokenizer = setup
    requests = build_requests(load_items("piqa", root / "tasks")[:2], tokenizer, 0)
    passes = []
    hidden = model.hidden
    model.hidden = lambda *args, **kwargs: passes.append(1) or hidden(*args, **kwargs)
    try:
        padded = loglikelihoods(model, requests, batch_size=2, min_batches=5)
    finally:
        del model.hidden
    assert len(passes) == 5
    np.testing.assert_array_equal(padded, loglikelihoods(model, requests, batch_size=2))


def test_standard_error_is_the_sample_deviation_over_root_n():
    for outcomes in ([1, 0, 0, 1, 1], [1] * 3 + [0] * 9, [0, 0]):
        values = np.array(outcomes, dtype=float)
        expected = np.std(values, ddof=1) / np.sqrt(len(values))
        assert share_stderr(values.sum(), len(values)) == pytest.approx(expected, rel=1e-12)
    assert np.isnan(share_stderr(1.0, 1))  # one item: no spread to measure


def test_gold_labels_come_from_the_data(setup, tmp_path):
    root, rows, _, model, tokenizer = setup
    items = load_items("storycloze", root / "tasks")
    assert [i.gold for i in items] == [r["answer_right_ending"] - 1 for r in rows["storycloze"]]
    assert [i.gold for i in load_items("hellaswag", root / "tasks")] == \
        [int(r["label"]) for r in rows["hellaswag"]]
    # The other ending as gold: every 2-choice item flips (scores are never tied here).
    flipped = [{**r, "label": 1 - r["label"]} for r in rows["piqa"]]
    (tmp_path / "piqa.jsonl").write_text("\n".join(json.dumps(r) for r in flipped))
    a = evaluate_task(model, tokenizer, 0, load_items("piqa", root / "tasks"))
    b = evaluate_task(model, tokenizer, 0, load_items("piqa", tmp_path))
    assert a["acc"] + b["acc"] == pytest.approx(1.0) and a["acc_norm"] + b["acc_norm"] == pytest.approx(1.0)


def test_harness_formats():
    assert hellaswag_preprocess("How to x [title] Do y. [step] Z  ") == "How to x. Do y. Z"
    rows = {"activity_label": "Baking [title]", "ctx_a": "A man mixes flour.", "ctx_b": "he",
            "endings": ["adds eggs.", "b", "c", "d [header] e"], "label": "2"}
    from oe.evaluation.tasks import hellaswag_item, piqa_item, storycloze_item

    item = hellaswag_item(rows, "row")
    assert item.context == "Baking. : A man mixes flour. He" and item.gold == 2
    assert item.choices == ["adds eggs.", "b", "c", "d e"]
    piqa = piqa_item({"goal": "Open a jar", "sol1": "Twist.", "sol2": "Pull.", "label": 1}, "row")
    assert piqa.context == "Question: Open a jar\nAnswer:" and piqa.gold == 1
    story = storycloze_item({**{f"input_sentence_{k}": f"S{k}." for k in range(1, 5)},
                             "sentence_quiz1": "A.", "sentence_quiz2": "B.",
                             "answer_right_ending": 2}, "row")
    assert story.context == "S1. S2. S3. S4." and story.choices == ["A.", "B."] and story.gold == 1


def test_continuation_is_scored_alone_with_the_space(setup):
    _, _, _, _, tokenizer = setup
    from oe.evaluation.scoring import encode_pair

    context, continuation = encode_pair(tokenizer, "Question: x\nAnswer:", " Cut the rope.", 0)
    assert tokenizer.decode(continuation) == " Cut the rope."
    assert tokenizer.decode(context) == "Question: x\nAnswer:"
    # A context's trailing space moves to the continuation, as in the harness.
    assert encode_pair(tokenizer, "Answer: ", "yes", 0) == encode_pair(tokenizer, "Answer:", " yes", 0)


def test_bad_input_names_the_file_and_line(setup, tmp_path):
    root, rows, model_dir, _, _ = setup
    with pytest.raises(FileNotFoundError, match="rocstories"):
        load_items("storycloze", None)
    with pytest.raises(FileNotFoundError, match="storycloze.jsonl"):
        load_items("storycloze", tmp_path)
    (tmp_path / "piqa.jsonl").write_text(json.dumps(rows["piqa"][0]) + "\n{not json\n")
    with pytest.raises(TaskDataError, match=r"piqa.jsonl:2: not a JSON object"):
        load_items("piqa", tmp_path)
    (tmp_path / "piqa.jsonl").write_text(json.dumps({**rows["piqa"][0], "label": 2}) + "\n")
    with pytest.raises(TaskDataError, match=r"piqa.jsonl:1: label 2 is out of range 0..1"):
        load_items("piqa", tmp_path)
    (tmp_path / "hellaswag.jsonl").write_text(json.dumps({**rows["hellaswag"][0], "label": ""}))
    with pytest.raises(TaskDataError, match="not an integer"):
        load_items("hellaswag", tmp_path)
    bad = dict(rows["storycloze"][0])
    del bad["sentence_quiz2"]
    (tmp_path / "storycloze.jsonl").write_text(json.dumps(bad))
    with pytest.raises(TaskDataError, match="missing field 'sentence_quiz2'"):
        load_items("storycloze", tmp_path)
    other = train_bpe([sentence(random.Random(1), 10) for _ in range(50)], 280, tmp_path / "t.json")
    assert other.get_vocab_size() != json.loads((model_dir / "config.json").read_text())["vocab_size"]
    with pytest.raises(ValueError, match="not the tokenizer this model was trained with"):
        load_pretrained(str(model_dir), str(tmp_path / "t.json"))


def test_storycloze_reads_the_original_csv(setup, tmp_path):
    root, rows, _, _, _ = setup
    header = ("InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4,"
              "RandomFifthSentenceQuiz1,RandomFifthSentenceQuiz2,AnswerRightEnding")
    lines = [header] + [",".join([r["story_id"], *(r[f"input_sentence_{k}"] for k in range(1, 5)),
                                  r["sentence_quiz1"], r["sentence_quiz2"],
                                  str(r["answer_right_ending"])]) for r in rows["storycloze"]]
    (tmp_path / "cloze_test_val__spring2016 - cloze_test_ALL_val.csv").write_text("\n".join(lines))
    assert load_items("storycloze", tmp_path) == load_items("storycloze", root / "tasks")


def test_cli_writes_table_and_json(setup, tmp_path, capsys):
    root, _, model_dir, _, _ = setup
    out = tmp_path / "results.json"
    code = main(["--pretrained", str(model_dir), "--tasks", "hellaswag,piqa,storycloze",
                 "--data_dir", str(root / "tasks"), "--limit", "6", "--out", str(out),
                 "--no_wandb", "--batch_size", "7"])
    assert code == 0
    written = json.loads(out.read_text())
    assert written["source"] == str(model_dir) and written["step"] is None
    assert written["not_run"] == {}
    results = written["tasks"]
    assert set(results) == {"hellaswag", "piqa", "storycloze"}
    for r in results.values():
        assert r["n"] == 6 and 0 <= r["acc"] <= 1 and r["acc_stderr"] > 0
        assert set(r) == {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "n", "items_per_s"}
    captured = capsys.readouterr()
    assert "hellaswag" in captured.out and "±" in captured.out
    assert "6/6" in captured.err and "item/s" in captured.err  # a progress bar per task
    assert main(["--pretrained", str(model_dir), "--tasks", "storycloze", "--no_wandb"]) == 1


def test_missing_task_is_named_first_and_the_others_still_run(setup, tmp_path, capsys):
    root, _, model_dir, _, _ = setup
    data = tmp_path / "tasks"
    data.mkdir()
    for task in ("hellaswag", "piqa"):
        (data / f"{task}.jsonl").write_text((root / "tasks" / f"{task}.jsonl").read_text())
    out = tmp_path / "r.json"
    code = main(["--pretrained", str(model_dir), "--tasks", "hellaswag,storycloze,piqa",
                 "--data_dir", str(data), "--limit", "3", "--out", str(out), "--no_wandb"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.index("not run: storycloze") < err.index("hellaswag:")  # named before any work
    assert "not run (1 of 3 tasks):\n  storycloze:" in err
    written = json.loads(out.read_text())
    assert set(written["tasks"]) == {"hellaswag", "piqa"} and set(written["not_run"]) == {"storycloze"}


def test_a_failed_rerun_keeps_the_results_file(setup, tmp_path, capsys):
    root, _, model_dir, _, _ = setup
    out = tmp_path / "r.json"
    common = ["--pretrained", str(model_dir), "--limit", "3", "--out", str(out), "--no_wandb"]
    assert main([*common, "--tasks", "hellaswag,piqa", "--data_dir", str(root / "tasks")]) == 0
    first = out.read_text()
    # Wrong data: nothing is scored, and the file is left as it was.
    assert main([*common, "--tasks", "hellaswag,piqa", "--data_dir", str(tmp_path / "none")]) == 1
    assert out.read_text() == first
    # A rerun of one task keeps the other's result beside the new one.
    assert main([*common, "--tasks", "piqa", "--data_dir", str(root / "tasks")]) == 0
    written = json.loads(out.read_text())
    assert written["tasks"]["hellaswag"] == json.loads(first)["tasks"]["hellaswag"]
    assert set(written["tasks"]) == {"hellaswag", "piqa"} and written["not_run"] == {}
    capsys.readouterr()


def test_output_path_is_checked_before_any_work(setup, tmp_path, capsys):
    root, _, model_dir, _, _ = setup
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for out, expected in ((blocker / "r.json", "cannot be written"), (tmp_path, "is a folder")):
        code = main(["--pretrained", str(model_dir), "--tasks", "piqa", "--data_dir",
                     str(root / "tasks"), "--out", str(out), "--no_wandb"])
        err = capsys.readouterr().err
        assert code == 2 and expected in err and "piqa:" not in err  # nothing scored


def test_default_tasks_run_from_the_hub_unless_storycloze_is_local(tmp_path):
    from oe.evaluation.tasks import TASKS, default_tasks

    assert default_tasks() == ["hellaswag", "piqa", "xstorycloze_en"]
    assert all(TASKS[t].hub is not None for t in default_tasks())
    assert default_tasks(tmp_path) == ["hellaswag", "piqa", "xstorycloze_en"]
    (tmp_path / "storycloze.jsonl").write_text("{}\n")
    assert default_tasks(tmp_path) == ["hellaswag", "piqa", "storycloze"]


def test_progress_counts_every_item_once(setup):
    root, _, _, model, tokenizer = setup
    items = load_items("hellaswag", root / "tasks")
    done = []
    evaluate_task(model, tokenizer, 0, items, batch_size=3, progress=done.append)
    assert len(done) > 2 and sum(done) == pytest.approx(len(items))


def test_empty_choice_follows_the_harness_rule_and_is_named(setup):
    from oe.evaluation.scoring import empty_choices
    from oe.evaluation.tasks import Item

    items = [Item("Question: x\nAnswer:", ["", "Cut it."], 0, "piqa.jsonl:7"),
             Item("Question: y\nAnswer:", ["Cut it.", "Pull."], 1, "piqa.jsonl:8")]
    assert empty_choices(items) == ["piqa.jsonl:7: choice 0 is empty"]
    _, _, _, model, tokenizer = setup
    requests = build_requests(items, tokenizer, 0)
    scores = loglikelihoods(model, requests)
    _, acc_norm = item_correct(items, requests, scores)
    # lm-eval divides by len(choice) = 0: -inf for the empty one, which is never the prediction.
    assert acc_norm[0] == 0.0


def _when_written(read, seconds: float = 20.0):
    """W&B's writer process may still be flushing a run file for a moment after finish()."""
    import time

    from oe.analysis.report import ReportError

    deadline = time.monotonic() + seconds
    while True:
        try:
            return read()
        except (ReportError, KeyError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_results_go_to_the_training_runs_own_wandb_run(tmp_path, monkeypatch):
    import wandb

    from oe.analysis.report import read_wandb_run
    from oe.cli.evaluate import WandbTarget, log_task, start_wandb, training_wandb_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    training = wandb.init(project="oe-test", name="point", group="sweep", dir=str(run_dir))
    training.log({"train/loss": 2.0, "trainer/global_step": 10})
    training.finish()
    target = _when_written(lambda: training_wandb_run(run_dir))
    assert (target.run_id, target.project, target.name, target.group) == \
        (training.id, "oe-test", "point", "sweep")
    run = start_wandb(target, {})
    log_task(run, "piqa", {"acc": 0.5, "acc_stderr": 0.1, "acc_norm": 0.75,
                           "acc_norm_stderr": 0.1, "n": 4}, step=10)
    run.finish()
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2 and all(f.name == f"run-{training.id}.wandb" for f in files)
    history = _when_written(lambda: read_wandb_run(files[-1])[1]["downstream/piqa/acc_norm"])
    assert history == [(10, 0.75)]
    assert WandbTarget("p").run_id is None  # other sources: a new run
    # oe.report reads both files of the one run id: training and evaluation together.
    from oe.analysis.report import read_run

    merged = read_run(run_dir).history
    assert merged["train/loss"] == [(10, 2.0)] and merged["downstream/piqa/acc_norm"] == [(10, 0.75)]
