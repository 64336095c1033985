"""The JSON Schemas: valid draft 2020-12, shipped in the package and mirrored in schemas/, the fast
(jsonschema-rs) and the explaining (python-jsonschema) validators agree, and what every format
reader emits fits the canonical record schema."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from conftest import ROOT, SAMPLES
from prep.checks import schemas
from prep.core.codes import CODES
from prep.formats import read_records

jsonschema_rs = pytest.importorskip("jsonschema_rs")


@pytest.mark.parametrize("name", schemas.NAMES)
def test_schema_is_valid_and_mirrored(name: str) -> None:
    schema = schemas.load(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    top = ROOT / "schemas" / f"{name}.json"
    assert top.exists() and json.loads(top.read_text()) == schema, \
        f"schemas/{name}.json differs from src/prep/schemas/{name}.json: cp src/prep/schemas/*.json schemas/"


def test_every_x_prep_code_is_registered() -> None:
    def walk(node: object) -> list[str]:
        if isinstance(node, dict):
            return list(node.get("x-prep", {}).values()) + [c for v in node.values() for c in walk(v)]
        if isinstance(node, list):
            return [c for v in node for c in walk(v)]
        return []
    codes = {c for name in schemas.NAMES for c in walk(schemas.load(name))}
    assert codes and codes <= set(CODES)


def test_no_stray_schema_files() -> None:
    assert {p.stem for p in (ROOT / "schemas").glob("*.json")} == set(schemas.NAMES)


KEYS = ["messages", "role", "content", "conversations", "from", "value", "instruction", "output", "history",
        "chosen", "rejected", "prompt", "completion", "label", "text", "tools", "tool_calls", "function", "name",
        "arguments", "type", "weight", "input", "preferred_output", "non_preferred_output", "story", "questions",
        "answers", "input_text", "id", "tool_call_id", "image_url", "url"]
leaf = st.one_of(st.none(), st.booleans(), st.integers(-1, 2), st.floats(allow_nan=False, allow_infinity=False),
                 st.sampled_from(["user", "assistant", "tool", "system", "function", "human", "gpt", "text",
                                  "image_url", "", " ", "x"]))
values = st.recursive(leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                    st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
                      max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(value=values, name=st.sampled_from(schemas.NAMES))
def test_fast_and_explaining_validators_agree(value: object, name: str) -> None:
    fast = schemas._fast(name).is_valid(value)
    assert fast == schemas._explainer(name).is_valid(value)
    assert (schemas.check(name, value) == []) == fast  # an invalid value is always explained


def test_every_reader_output_fits_the_record_schema() -> None:
    files = [str(p) for p in sorted(SAMPLES.iterdir())
             if p.suffix in (".json", ".jsonl", ".csv", ".txt") and p.name != "dataset_info.json"]
    records = [r for batch in read_records(files) for r in batch.items]
    assert len(records) > 50
    for record in records:
        assert schemas.check("records", record) == [], record
