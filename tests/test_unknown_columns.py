"""Input columns no reader maps (issue 29, item 5): `--keep-columns` may not name a shard column, and validate says
which columns convert and tokenize would drop, with their counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import prep
from conftest import run_prep
from prep.core.findings import PrepError


def _chat(i: int, **extra: object) -> dict:
    return {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}], **extra}


def test_keep_columns_naming_a_shard_column_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """`--keep-columns labels` was once silently not carried: the shard's own labels column won."""
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(_chat(i, labels=f"l{i}", topic="t")) + "\n" for i in range(3)))
    out = tmp_path / "shards"
    done = run_prep("tokenize", str(data), "--tokenizer", "no-such-tokenizer", "-o", str(out),
                    "--keep-columns", "topic,labels")
    assert done.returncode == 2, done.stderr
    assert done.stderr.decode().startswith("prep: --keep-columns labels: a shard column has that name"), done.stderr
    assert not out.exists()
    for name in ("input_ids", "media", "chosen_input_ids", "label"):
        with pytest.raises(PrepError, match=f"--keep-columns {name}: a shard column"):
            prep.Inputs([str(data)], keep_columns=[f"topic,{name}"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"output: {tmp_path / 'run'}\ninputs:\n  files: [{data}]\n  keep_columns: [ids]\nvalidate: {{}}\n")
    done = run_prep("run", str(recipe))
    assert done.returncode == 2 and b"--keep-columns ids: a shard column" in done.stderr, done.stderr
    assert not (tmp_path / "run").exists()


def test_validate_warns_about_unknown_top_level_columns_with_their_counts(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    rows = [_chat(i, source="web", **({"topic": i} if i % 2 else {}), **({"ref": "r"} if i < 3 else {}))
            for i in range(6)]
    rows[5]["stray"] = None  # a null column is absent, as Arrow fills absent fields
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = prep.validate(prep.Inputs([str(data)])).to_dict()
    assert report["files"][0]["unknown_columns"] == {"source": 6, "topic": 3, "ref": 3}
    assert report["summary"]["findings_by_code"]["unknown_column"] == {"severity": "warning", "count": 12}
    assert report["ok"] and report["summary"]["rows_accepted"] == 6
    first = next(f for f in report["findings"] if f["code"] == "unknown_column")
    assert first["path"] == "$.source" and first["line"] == 1 and "--keep-columns source" in first["hint"]
    kept = prep.validate(prep.Inputs([str(data)], keep_columns=["source,ref"])).to_dict()
    assert kept["files"][0]["unknown_columns"] == {"topic": 3}
    done = run_prep("validate", str(data), "--strict")
    shown = b" ".join(done.stdout.split())  # the terminal's width wraps lines
    assert done.returncode == 1 and b"columns no reader maps (dropped unless --keep-columns): source 6 rows, " \
                                    b"ref 3 rows, topic 3 rows" in shown, done.stdout
    alpaca = tmp_path / "alpaca.jsonl"
    alpaca.write_text(json.dumps({"instruction": "i", "input": "", "output": "o", "history": [], "score": 1}) + "\n")
    assert prep.validate(prep.Inputs([str(alpaca)])).to_dict()["files"][0]["unknown_columns"] == {"score": 1}


def test_keys_of_a_sharegpt_turn_no_reader_maps_are_counted_as_dropped(tmp_path: Path) -> None:
    """A ShareGPT turn is its tag and its text: a `loss_weight` or `weight` on one (an OpenAI/LLaMA-Factory v1
    message key, not a ShareGPT one) was dropped without a count, even under --strict-fields."""
    data = tmp_path / "sg.jsonl"
    rows = [{"conversations": [{"from": "human", "value": "q", "weight": 1},
                               {"from": "gpt", "value": "a", "loss_weight": 0.0}]},
            {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = prep.convert(prep.Inputs([str(data)]), "openai", str(tmp_path / "out.jsonl"))
    assert result.tally.written == 2 and result.tally.dropped == {"weight": 1, "loss_weight": 1}
    strict = prep.convert(prep.Inputs([str(data)], strict_fields=True), "openai", str(tmp_path / "strict.jsonl"))
    assert (strict.tally.written, strict.tally.rejected) == (1, {"dropped_field": 1})


def test_a_weight_that_is_not_an_integer_is_said_so() -> None:
    """validate's schema message for 0.5 read "expected a number, got a number"."""
    from prep.checks import schemas  # noqa: PLC0415

    row = {"messages": [{"role": "user", "content": "q", "weight": 0.5}, {"role": "assistant", "content": "a"}]}
    messages = [f.message for f in schemas.check("openai", row) if f.code == "bad_weight"]
    assert messages == ["expected an integer, got a number"], messages
