"""The oe model of lm-evaluation-harness: the same numbers as oe's scorer and as lm-eval's own hf
model on the exported directory, item for item; rolling log-likelihoods and generation; bad
model_args as one line each."""

from __future__ import annotations


import numpy as np
import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")

from oe.cli.export import main as export_main  # noqa: E402
from oe.evaluation.lm_eval_model import OELM, ModelArgsError, write_local_tasks  # noqa: E402
from oe.evaluation.scoring import build_requests, eot_id_of, item_correct, loglikelihoods  # noqa: E402
from oe.evaluation.tasks import load_items  # noqa: E402
from oe.huggingface.load import load_model  # noqa: E402
from tests.conftest import tiny_gpt2_dir, write_task_files  # noqa: E402
from tests.huggingface.conftest import OE3, save_checkpoint  # noqa: E402

TASKS = ("hellaswag", "piqa", "storycloze")  # storycloze: contexts cut to the block size


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_eval")
    tokenizer_dir = tiny_gpt2_dir(root / "tokenizer")
    write_task_files(root / "data", n=12)
    write_local_tasks(root / "tasks", root / "data", TASKS)
    ckpt = save_checkpoint(root / "oe123.ckpt", tokenizer_dir / "tokenizer.json", OE3)
    assert export_main(["--format", "hf", str(ckpt), str(root / "hf")]) == 0
    return root, ckpt


def harness_per_item(model: str, model_args: str, tasks) -> dict[str, dict[str, list[float]]]:
    results = lm_eval.simple_evaluate(
        model=model, model_args=model_args, tasks=[f"local_{t}" for t in TASKS], batch_size=4,
        device="cpu", log_samples=True, task_manager=tasks)
    out = {}
    for task in TASKS:
        samples = sorted(results["samples"][f"local_{task}"], key=lambda s: s["doc_id"])
        out[task] = {m: [float(s[m]) for s in samples] for m in ("acc", "acc_norm")}
    return out


def test_oe_evaluate_and_the_harness_agree_item_for_item(setup) -> None:
    root, ckpt = setup
    network, tokenizer = load_model(ckpt)
    eot = eot_id_of(tokenizer)
    ours = {}
    for task in TASKS:
        items = load_items(task, root / "data")
        requests = build_requests(items, tokenizer, eot)
        acc, acc_norm = item_correct(items, requests, loglikelihoods(network, requests, 5, eot))
        ours[task] = {"acc": acc.tolist(), "acc_norm": acc_norm.tolist()}
    from lm_eval.tasks import TaskManager

    # Only the local tasks are indexed (the harness's own index takes ~20 s to build).
    tasks = TaskManager(include_path=str(root / "tasks"), include_defaults=False)
    through_oe = harness_per_item("oe", f"checkpoint={ckpt}", tasks)
    through_hf = harness_per_item("hf", f"pretrained={root / 'hf'},trust_remote_code=True", tasks)
    through_directory = harness_per_item("oe", f"checkpoint={root / 'hf'}", tasks)
    for task in TASKS:
        assert ours[task] == through_oe[task] == through_hf[task] == through_directory[task], task
        # Not a degenerate agreement: the untrained model is right on some items, wrong on others.
        assert 0 < np.mean(ours[task]["acc"]) < 1 or 0 < np.mean(ours[task]["acc_norm"]) < 1


class _Request:
    def __init__(self, *args) -> None:
        self.args = args


def test_rolling_loglikelihood_and_greedy_generation(setup) -> None:
    root, ckpt = setup
    lm = OELM(checkpoint=str(ckpt), batch_size=3, device="cpu")
    text = " ".join(["The man takes the rope and the dog holds the cup."] * 12)
    ids = lm.tok_encode(text)
    assert len(ids) > 2 * lm.max_length  # several windows
    whole, = lm.loglikelihood_rolling([_Request(text)])
    # Window by window by hand: block-size windows of the text after end-of-text, each token read
    # after as many earlier ones as the block holds.
    stream, block, expected = [lm.eot_token_id] + ids, lm.max_length, 0.0
    with torch.no_grad():
        for start in range(0, len(ids), block):
            n = min(block, len(ids) - start)
            sequence = stream[max(0, start + n - block):start + n + 1]
            logp = lm.model(torch.tensor([sequence[:-1]])).log_softmax(-1)[0]
            expected += float(logp[-n:].gather(1, torch.tensor(sequence[-n:])[:, None]).sum())
    assert whole == pytest.approx(expected, abs=1e-3)
    # Greedy generation with the cache equals transformers' greedy search on the export.
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(root / "hf", trust_remote_code=True).eval()
    contexts = ["Question: How do I cut the rope?\nAnswer:", "The man holds", "The man takes the",
                "The cat holds"]  # the second and the last share a batch (one length)
    assert len(lm.tok_encode(contexts[1])) == len(lm.tok_encode(contexts[3]))
    generated = lm.generate_until([_Request(c, {"until": ["\n\n"], "max_gen_toks": 12}) for c in contexts])
    for context, text in zip(contexts, generated):
        prompt = torch.tensor([lm.tok_encode(context)])
        tokens = hf.generate(prompt, do_sample=False, max_new_tokens=12, eos_token_id=lm.eot_token_id,
                             pad_token_id=lm.eot_token_id)[0, prompt.shape[1]:].tolist()
        tokens = tokens[:tokens.index(lm.eot_token_id)] if lm.eot_token_id in tokens else tokens
        assert text == lm.tok_decode(tokens).split("\n\n")[0]


@pytest.mark.parametrize("args,message", [
    (dict(checkpoint="x", colour="red"), r"^model_args: unknown key\(s\) colour; the oe model takes"),
    (dict(), r"^model_args: checkpoint=PATH is required"),
    (dict(checkpoint="/nonexistent/model.ckpt"),
     r"^model_args checkpoint=/nonexistent/model.ckpt: checkpoint /nonexistent/model.ckpt not found"),
])
def test_bad_model_args_are_one_line_each(args, message) -> None:
    with pytest.raises(ModelArgsError, match=message) as error:
        OELM(**args)
    assert "\n" not in str(error.value)


def test_a_checkpoint_without_a_tokenizer_is_one_line(setup, tmp_path) -> None:
    root, ckpt = setup
    checkpoint = torch.load(ckpt, weights_only=False)
    del checkpoint["tokenizer"]
    torch.save(checkpoint, tmp_path / "bare.ckpt")
    with pytest.raises(ModelArgsError, match="has no tokenizer .*give one: tokenizer=PATH") as error:
        lm_eval.api.registry.get_model("oe").create_from_arg_string(f"checkpoint={tmp_path / 'bare.ckpt'}")
    assert "\n" not in str(error.value)


def test_the_command_line_says_bad_model_args_in_one_line(setup, capsys) -> None:
    from oe.cli.lm_eval import main

    root, ckpt = setup
    assert main(["--model", "oe", "--model_args", f"checkpoint={ckpt},colour=red",
                 "--tasks", "local_piqa", "--data_dir", str(root / "data")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("error: model_args: unknown key(s) colour;")
    assert not any("Traceback" in line for line in error)
