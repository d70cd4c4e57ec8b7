"""oe corpus: the standard library's docstrings as a Wikitext-format corpus that the Wikitext
data module reads back article by article."""

from __future__ import annotations

from datamodules.wikitext import HEADING, split_articles
from oe.experiments.corpus import main


def test_the_corpus_reads_back_as_its_articles_split_for_validation(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--max_articles", "12", "--validation_every", "4"]) == 0
    assert "train: " in capsys.readouterr().out
    articles = {split: list(split_articles((tmp_path / f"{split}.txt").read_text().splitlines(True)))
                for split in ("train", "validation")}
    assert (len(articles["train"]), len(articles["validation"])) == (9, 3)  # every 4th article
    for article in articles["train"] + articles["validation"]:
        title, *body = [line for line in article.splitlines() if line.strip()]
        assert HEADING.match(title) and body  # " = module.name = ", then its docstrings
        assert all(len(line.strip()) >= 40 and not HEADING.match(line) for line in body)
