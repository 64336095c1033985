"""Template arguments (`template_kwargs`) and the day reach every verb that renders: mix --by tokens and
validate's token statistics count what prep tokenize writes with the same arguments."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import prep
from conftest import SAMPLES

# A chat template that reads an argument: `preamble` is written once before the conversation.
_JINJA = ("{% if preamble %}{{ preamble }}\n{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n"
          "{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
_PREAMBLE = "preamble=" + " ".join(["every row starts with these words"] * 4)


def _tokenizer(tmp_path: Path) -> str:
    """The project tokenizer with the template above as its own chat template (mix and validate take a
    template by name, and only the tokenizer's own takes arguments)."""
    folder = tmp_path / "tokenizer"
    shutil.copytree(SAMPLES / "tokenizer", folder)
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": _JINJA}), encoding="utf-8")
    return str(folder)


def _tokens(tmp_path: Path, name: str, tokenizer: str, kwargs: list[str]) -> int:
    shards = prep.tokenize(prep.Inputs([str(SAMPLES / "openai.jsonl")]), tokenizer, str(tmp_path / name),
                           template_kwargs=kwargs)
    return shards.manifest["tokens"]["total"]


def test_mix_by_tokens_counts_with_the_template_arguments(tmp_path: Path) -> None:
    tok = _tokenizer(tmp_path)
    plain, with_preamble = _tokens(tmp_path, "t0", tok, []), _tokens(tmp_path, "t1", tok, [_PREAMBLE])
    assert with_preamble > plain
    for kwargs, total in (([], plain), ([_PREAMBLE], with_preamble)):
        mixed = prep.mix([str(SAMPLES / "openai.jsonl")], str(tmp_path / f"m{len(kwargs)}.jsonl"), by="tokens",
                         tokenizer=tok, template_kwargs=kwargs)
        assert mixed.manifest["sources"][0]["tokens_written"] == total


def test_validate_token_statistics_count_with_the_template_arguments(tmp_path: Path) -> None:
    tok = _tokenizer(tmp_path)
    totals = []
    for kwargs in ([], [_PREAMBLE]):
        report = prep.validate(prep.Inputs([str(SAMPLES / "openai.jsonl")]), tokenizer=tok, template_kwargs=kwargs)
        stats = report.stats.to_dict()["tokens_per_row"]
        totals.append(round(stats["mean"] * stats["count"]))
        assert totals[-1] == _tokens(tmp_path, f"v{len(kwargs)}", tok, kwargs)
    assert totals[1] > totals[0]
