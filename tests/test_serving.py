"""The serving hand-off (design §6): a model folder prep train saves carries the shards' chat template (template
arguments baked in as defaults) and stops on the trained end-of-turn token, and `prep verify --serving` proves it
by rendering shard rows from that folder alone with transformers.

Each fixture tokenizer gets a tiny model (hidden 16, one layer), trained one step on its shards' first row with
`--merge` (as `prep train SHARDS --model BASE --max-steps 1 --batch-size 1 --merge` does); the merged folder is what
is served. One row, not a batch of random ones: the step's cost is its tokens times a vocabulary of up to 151k."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import fixture, make_tiny_model
from prep.formats.inputs import Inputs
from prep.shards.layout import read_manifest
from prep.shards.verify import verify
from prep.stages.tokenize import tokenize

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

pytest.importorskip("peft")
from prep.trainer.train import TrainOptions, train  # noqa: E402 - needs the train extra

# each fixture tokenizer with its own template: its inputs (qwen2.5: LLaMA-Factory's tool-calling rows) and
# template arguments (smollm3: no thinking, where its own default is thinking)
CASES = {
    "qwen2.5": ("glaive_toolcall_en_demo.json", ()),
    "llama3": ("alpaca_en_demo.json", ()),
    "phi-3-mini": ("alpaca_en_demo.json", ()),
    "smollm3": ("alpaca_en_demo.json", ("enable_thinking=false",)),
}


@pytest.fixture(scope="module", params=list(CASES))
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Shards of 100 rows, a tiny base model with the fixture tokenizer (as its folder holds it), and that model
    trained one step on their first row and merged by prep train."""
    data, kwargs = CASES[request.param]
    tok_dir = fixture("tokenizers", request.param)
    root = tmp_path_factory.mktemp(request.param)
    rows = json.loads(fixture("data", "llamafactory", data).read_text(encoding="utf-8"))[:100]
    (root / data).write_text(json.dumps(rows), encoding="utf-8")
    shards = root / "shards"
    tokenize(Inputs([str(root / data)]), str(tok_dir), str(shards), template_kwargs=kwargs)
    base = make_tiny_model(root / "base", tokenizer=tok_dir, hidden=16, layers=1)
    report = train(str(shards), TrainOptions(model=str(base), output=str(root / "out"), max_steps=1, batch_size=1,
                                             merge=True, extra={"train_sampling_strategy": "sequential"})).report
    notes = [n for n in report.get("notes", []) if "template" in n]  # any note about the template it saved
    return {"shards": str(shards), "base": str(base), "saved": report["merged"], "notes": notes,
            "case": request.param}


@pytest.mark.slow  # per tokenizer: tokenize 100 rows, train and merge a tiny model over a 32k-151k vocabulary, 100 renders
def test_the_saved_folder_renders_the_shard_rows_exactly(served: dict, tmp_path: Path) -> None:
    """AutoTokenizer from the saved folder alone, no template arguments: 100 rows, the shards' ids each, and the
    trained end-of-turn id among the stop ids. The base folder is caught where it differs, and a doubled BOS and a
    missing stop are named (one test per tokenizer: its fixture is built once)."""
    result = verify(served["shards"], serving=served["saved"], sample=100)
    assert result.ok, [str(f) for f in result.findings]
    assert result.serving["rows"] == 100 and served["notes"] == []
    eot = read_manifest(served["shards"])["template"]["eot"]
    eot_id = tokenizers.Tokenizer.from_file(str(Path(served["saved"]) / "tokenizer.json")).token_to_id(eot)
    config = json.loads((Path(served["saved"]) / "generation_config.json").read_text(encoding="utf-8"))
    assert eot_id in config["eos_token_id"]
    if served["case"] == "smollm3":  # the tokenizer's own folder renders with its default: thinking on
        base = verify(served["shards"], serving=served["base"], sample=10)
        assert set(base.counts) == {"serving_mismatch"} and base.counts["serving_mismatch"] == 10
        assert "another template" in base.findings[0].message
    if served["case"] == "phi-3-mini":  # its EOS is <|endoftext|>; its answers end with <|end|>
        assert set(verify(served["shards"], serving=served["base"], sample=10).counts) == {"serving_no_stop"}
    if served["case"] == "llama3":  # its template writes the BOS: a second one before it is named
        folder = tmp_path / "broken"
        tok = transformers.AutoTokenizer.from_pretrained(served["saved"])
        tok.chat_template = "{{ bos_token }}" + tok.chat_template
        tok.save_pretrained(folder)
        (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [tok.bos_token_id]}))
        broken = verify(served["shards"], serving=str(folder), sample=5)
        assert broken.counts == {"serving_mismatch": 5, "serving_no_stop": 1} and broken.exit_code == 1
        assert all("doubled BOS" in f.message for f in broken.findings if f.code == "serving_mismatch")
