"""oe export --format hf: GPT-2 for a baseline, an oe_gpt directory for n-gram models; equal logits,
equal generation with a key/value cache, the tokenizer along, and the way back into oe."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

from oe.cli.export import main as export_main
from oe.huggingface.load import load_exported, load_model
from oe.models.frequent_ngrams import FrequentNgramConfig
from oe.models.heads import OutputHeadsConfig
from oe.tokenizer import load_tokenizer
from tests.huggingface.conftest import OE3, save_checkpoint

transformers = pytest.importorskip("transformers")


def _exported(tmp_path: Path, tokenizer_dir: Path, over_encoding, **fields) -> tuple[Path, torch.nn.Module]:
    ckpt = save_checkpoint(tmp_path / "model.ckpt", tokenizer_dir / "tokenizer.json", over_encoding, **fields)
    out = tmp_path / "hf"
    assert export_main(["--format", "hf", str(ckpt), str(out)]) == 0
    network, _ = load_model(ckpt)
    return out, network


def _reference_samples(network, prompt: torch.Tensor, steps: int, seed: int) -> torch.Tensor:
    """Sampling as transformers samples (softmax, one multinomial draw a step), with oe's own
    network read whole at every step: no cache."""
    torch.manual_seed(seed)
    tokens = prompt
    with torch.no_grad():
        for _ in range(steps):
            probs = torch.softmax(network(tokens)[:, -1].float(), dim=-1)
            tokens = torch.cat([tokens, torch.multinomial(probs, 1)], dim=1)
    return tokens


@pytest.mark.parametrize("kind", ["baseline", "oe123"])
def test_export_round_trip_logits_and_generation(kind, tmp_path, tokenizer_dir) -> None:
    out, network = _exported(tmp_path, tokenizer_dir, OE3 if kind == "oe123" else None)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == ("gpt2" if kind == "baseline" else "oe_gpt")
    if kind == "oe123":  # plain tables too: the dense part, then one file per table
        weight_map = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
        assert sorted(set(weight_map.values()))[1:] == [
            f"model-table0{i}-ngram{n}_{s}.safetensors"
            for i, (n, s) in enumerate([(2, 0), (2, 1), (3, 0), (3, 1)], start=1)]
    remote = kind != "baseline"
    model = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=remote).eval()
    assert type(model).__name__ == ("GPT2LMHeadModel" if kind == "baseline" else "OEForCausalLM")
    vocab = network.vocab_size
    tokens = torch.randint(0, vocab, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens).logits, network(tokens), rtol=0, atol=1e-5)
    # A key/value cache changes nothing: equal tokens to sampling without it, and to oe's network.
    prompt = tokens[:1, :5]
    sample = dict(do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=20,
                  min_new_tokens=20)
    torch.manual_seed(7)
    cached = model.generate(prompt, use_cache=True, **sample)
    torch.manual_seed(7)
    uncached = model.generate(prompt, use_cache=False, **sample)
    assert cached.shape == (1, 25)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, _reference_samples(network, prompt, 20, seed=7))
    # The tokenizer reads text as the one trained with.
    tokenizer = transformers.AutoTokenizer.from_pretrained(out, trust_remote_code=remote)
    text = "Question: How do I cut the rope?\nAnswer: Take the knife."
    assert tokenizer(text)["input_ids"] == load_tokenizer(str(tokenizer_dir)).encode(text).ids
    assert tokenizer.eos_token == "<|endoftext|>"
    if remote:  # rows with padding are refused, never read as tokens
        mask = torch.ones_like(tokens)
        mask[0, :3] = 0
        with pytest.raises(ValueError, match="attention_mask holds padding"):
            model(tokens, attention_mask=mask)
    # Back into oe: the exported directory evaluates as the checkpoint did.
    back, source = load_exported(out)
    assert source == str(out / "tokenizer.json")
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(tokens), network(tokens), rtol=0, atol=1e-5)


RECIPES = {"signed_sqrt_d": dict(signed=True, ngram_scale="sqrt_d"),
           "rmsnorm_sum_signed": dict(signed=True, combine="rmsnorm_sum")}


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_switches_travel_with_the_export(recipe, tmp_path, tokenizer_dir) -> None:
    over_encoding = dataclasses.replace(OE3, **RECIPES[recipe])
    out, network = _exported(tmp_path, tokenizer_dir, over_encoding)
    saved = json.loads((out / "config.json").read_text())["oe_model"]["over_encoding"]
    assert {k: saved[k] for k in RECIPES[recipe]} == RECIPES[recipe]
    model = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    tokens = torch.randint(0, network.vocab_size, (2, 17), generator=torch.Generator().manual_seed(3))
    back, _ = load_exported(out)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens).logits, network(tokens), rtol=0, atol=1e-5)
        torch.testing.assert_close(back.eval()(tokens), network(tokens), rtol=0, atol=1e-5)


@pytest.mark.parametrize("over_encoding", [None, OE3], ids=["od", "ot"])
def test_heads_travel_with_an_over_decoding_model(over_encoding, tmp_path, tokenizer_dir) -> None:
    heads = OutputHeadsConfig(od_offsets=[2], lambdas=[0.5])
    out, network = _exported(tmp_path, tokenizer_dir, over_encoding, heads=heads)
    assert json.loads((out / "config.json").read_text())["model_type"] == "oe_gpt"
    model = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    assert model.heads is not None and "od" in dict(model.heads.named_children())
    saved = torch.load(tmp_path / "model.ckpt", weights_only=False)["state_dict"]
    for name, value in model.heads.state_dict().items():  # kept for training on from the export
        assert torch.equal(value, saved[f"heads.{name}"]), name
    tokens = torch.randint(0, network.vocab_size, (2, 17), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens).logits, network(tokens), rtol=0, atol=1e-5)


def test_a_kind_the_format_cannot_express_is_one_error(tmp_path, tokenizer_dir, capsys) -> None:
    ckpt = tmp_path / "frequent.ckpt"
    torch.save({"hyper_parameters": {"vocab_size": 320, "frequent_ngrams": FrequentNgramConfig(
        path=str(tmp_path / "mined.jsonl"), orders=[2], top_k=1)}, "state_dict": {}}, ckpt)
    assert export_main(["--format", "hf", str(ckpt), str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "cannot express model kind frequent12" in error
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_a_checkpoint_without_a_tokenizer(tmp_path, tokenizer_dir, capsys) -> None:
    ckpt = save_checkpoint(tmp_path / "model.ckpt", tokenizer_dir / "tokenizer.json", OE3)
    checkpoint = torch.load(ckpt, weights_only=False)
    del checkpoint["tokenizer"]
    torch.save(checkpoint, ckpt)
    assert export_main(["--format", "hf", str(ckpt), str(tmp_path / "a")]) == 2
    assert "records no tokenizer" in capsys.readouterr().err
    assert export_main(["--format", "hf", str(tmp_path / "none.ckpt"), str(tmp_path / "a")]) == 2
    assert "none.ckpt does not exist" in capsys.readouterr().err
    assert export_main(["--format", "hf", "--without_tokenizer", str(ckpt), str(tmp_path / "b")]) == 0
    assert not (tmp_path / "b" / "tokenizer.json").exists()
    with pytest.raises(ValueError, match="has no tokenizer .*tokenizer=PATH"):
        load_model(tmp_path / "b")
    assert export_main(["--format", "hf", "--tokenizer", str(tokenizer_dir), str(ckpt),
                        str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "tokenizer.json").is_file()


@pytest.mark.distributed
def test_a_two_rank_sharded_checkpoint_exports_one_table_at_a_time(tmp_path, monkeypatch) -> None:
    import torch.distributed.checkpoint as dcp

    from tests.distributed.sharding_worker import probe_tokens
    from tests.distributed.test_parallelize_two_ranks import launch

    launch(2, tmp_path, "step")
    loads = []
    real_load = dcp.load

    def recording_load(state, *args, **kwargs):
        loads.append(sorted(state))
        return real_load(state, *args, **kwargs)

    monkeypatch.setattr(dcp, "load", recording_load)
    out = tmp_path / "hf"
    assert export_main(["--format", "hf", "--without_tokenizer", str(tmp_path / "step_w2.ckpt"),
                        str(out)]) == 0
    # Four tables (orders 2 and 3, k=2), each read alone, whole, from both ranks' shards.
    assert [len(keys) for keys in loads] == [1, 1, 1, 1]
    weight_map = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert weight_map["model.embedding.ngram.embeddings.ngram3_1.weight"].endswith("-ngram3_1.safetensors")
    assert len(set(weight_map.values())) == 1 + 4  # the dense part, then one file per table
    model = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    torch.set_num_threads(1)
    expected = torch.load(tmp_path / "step_w2.pt")["after"]
    with torch.no_grad():
        assert torch.equal(model(probe_tokens()).logits, expected)


def test_oe_evaluate_reads_an_exported_directory_as_its_checkpoint(tmp_path, tokenizer_dir) -> None:
    from oe.cli.evaluate import main as evaluate_main
    from tests.conftest import write_task_files

    write_task_files(tmp_path / "data", n=6)
    out, _ = _exported(tmp_path, tokenizer_dir, OE3)
    results = {}
    for name, source in (("checkpoint", tmp_path / "model.ckpt"), ("export", out)):
        assert evaluate_main(["--ckpt", str(source), "--tasks", "piqa", "--data_dir",
                              str(tmp_path / "data"), "--no_wandb",
                              "--out", str(tmp_path / f"{name}.json")]) == 0
        piqa = json.loads((tmp_path / f"{name}.json").read_text())["tasks"]["piqa"]
        results[name] = {k: piqa[k] for k in ("acc", "acc_norm", "n")}
    assert results["export"] == results["checkpoint"]


@pytest.mark.parametrize("over_encoding", [None, OE3], ids=["baseline", "oe123"])
def test_a_model_of_token_ids_exports_its_special_ids_in_readable_files(over_encoding, tmp_path,
                                                                       monkeypatch) -> None:
    from datamodules.cfg import CFGDataModule
    from oe.distributed.checkpoint import record_special_tokens
    from tests.conftest import tiny_backbone, tiny_language_model

    data = CFGDataModule()  # cfg3f: ids 0 pad, 4 BOS, 5 EOS, no tokenizer
    lm = tiny_language_model(data.vocab_size, over_encoding, pad_id=data.pad_id,
                             backbone=tiny_backbone(n_layer=1, block_size=64))
    checkpoint = {"hyper_parameters": dict(lm.hparams), "state_dict": lm.state_dict()}
    record_special_tokens(checkpoint, data)  # as LanguageModel.on_save_checkpoint does
    torch.save(checkpoint, tmp_path / "model.ckpt")
    previous = os.umask(0o022)
    try:
        assert export_main(["--format", "hf", "--without_tokenizer", str(tmp_path / "model.ckpt"),
                            str(tmp_path / "hf")]) == 0
    finally:
        os.umask(previous)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (4, 5, 0)
    files = [p for p in (tmp_path / "hf").iterdir() if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: "0o644" for p in files}
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf",
                                                              trust_remote_code=True)
    assert model.generation_config.eos_token_id == 5  # generate stops at the data's EOS
