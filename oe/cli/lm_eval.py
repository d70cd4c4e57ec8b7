"""``oe lm-eval``: lm-evaluation-harness's own command line, with the ``oe`` model registered.

    oe lm-eval --model oe --model_args checkpoint=runs/x/checkpoints/last.ckpt --tasks piqa
    python -m oe.lm_eval --model hf --model_args pretrained=OUT,trust_remote_code=True --tasks piqa

Every argument is lm-eval's (``lm-eval run --help``); lm-eval 0.4.13 reads models from its own
registry only, so this command imports ``oe.evaluation.lm_eval_model`` first.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    import oe.evaluation.lm_eval_model  # noqa: F401  (registers the model "oe")
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm-eval", *(sys.argv[1:] if argv is None else argv)]
    cli_evaluate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
