"""A repeated stretch between special tokens is tokenized once (prep.render.segments): every row's encoding stays
that of the whole text (ids, offsets, char_to_token), on real tokenizers and rows that share a tools schema."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import fixture
from prep.formats import read_records
from prep.formats.inputs import Inputs
from prep.render.segments import MIN_CHARS, Segments, Tokens, _merged_back
from prep.render.templates import get_template
from prep.render.tokenizer import load_tokenizer
from prep.shards.layout import read_manifest
from prep.stages.tokenize import tokenize


def shared_tools_rows(n: int) -> list[dict]:
    """Glaive tool-call rows, each offered the same tools (all the fixture's functions): the stretch they repeat."""
    path = fixture("data", "llamafactory", "glaive_toolcall_en_demo.json")
    records = [r for b in read_records([str(path)]) for r in b.items][:n]
    tools = {t["function"]["name"]: t for r in records for t in r.get("tools") or []}
    return [{**r, "tools": list(tools.values())[:6]} for r in records]


def same(a, b, text: str) -> bool:
    return a.ids == b.ids and a.offsets == b.offsets and \
        all(a.char_to_token(i) == b.char_to_token(i) for i in range(len(text) + 1))


@pytest.mark.parametrize("name", ["qwen2.5", "llama3", "smollm3", "phi-3-mini"])
def test_rows_encode_as_if_whole(name: str) -> None:
    tok = load_tokenizer(fixture("tokenizers", name))
    template = get_template("chatml", tok.specials) if name != "llama3" else None
    if template is None:  # llama3's own template: tools in the first user turn; a long shared system prompt here
        template = get_template("llama3", tok.specials)
        rows = [{"messages": [{"role": "system", "content": "Answer as a pirate. " * 30},
                              {"role": "user", "content": f"Question {k}?"}, {"role": "assistant", "content": f"Arr {k}."}]}
                for k in range(40)]
    else:
        rows = shared_tools_rows(40)
    texts = [template.render(r["messages"], r.get("tools")).text for r in rows]
    segments = Segments(tok.backend)
    got = segments.encode_batch(texts[:20]) + segments.encode_batch(texts[20:])
    want = tok.backend.encode_batch(texts, add_special_tokens=False)
    assert all(same(g, w, t) for g, w, t in zip(got, want, texts, strict=True))
    if name == "phi-3-mini":  # its Metaspace marks only the text's first word: always whole
        assert segments.pattern is None and not segments.cache
    else:
        assert segments.hits and any(len(s) >= MIN_CHARS for s in segments.cache)


def test_a_run_without_repeats_stops_looking() -> None:
    tok = load_tokenizer(fixture("tokenizers", "qwen2.5"))
    chatml = get_template("chatml", tok.specials)
    texts = [chatml.render([{"role": "user", "content": f"question {k} " * 80},
                            {"role": "assistant", "content": f"answer {k} " * 80}]).text for k in range(30)]
    segments = Segments(tok.backend)
    for k in range(0, 30, 10):
        batch = texts[k:k + 10]
        assert [e.ids for e in segments.encode_batch(batch)] == \
            [e.ids for e in tok.backend.encode_batch(batch, add_special_tokens=False)]
    assert segments.pattern is None and not segments.cache


def test_shards_equal_with_one_and_two_workers(tmp_path: Path) -> None:
    rows = shared_tools_rows(30)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"messages": r["messages"], "tools": r["tools"]}) + "\n" for r in rows))
    tokenizer = str(fixture("tokenizers", "qwen2.5"))
    for workers in (1, 2):
        tokenize(Inputs([str(data)]), tokenizer, str(tmp_path / f"w{workers}"), template="chatml", workers=workers)
    whole = Segments.encode_batch
    try:  # the same run with every row encoded whole
        Segments.encode_batch = lambda self, texts: self.backend.encode_batch(texts, add_special_tokens=False)
        tokenize(Inputs([str(data)]), tokenizer, str(tmp_path / "whole"), template="chatml")
    finally:
        Segments.encode_batch = whole
    shards = [[s["sha256"] for s in read_manifest(tmp_path / d)["shards"]] for d in ("w1", "w2", "whole")]
    assert shards[0] == shards[1] == shards[2]


def test_texts_in_the_normal_form_skip_the_normalizer_with_the_same_encodings() -> None:
    """qwen2.5's normalizer is NFC alone: texts already in NFC go to a copy without it, others to the tokenizer (a
    decomposed é or Å tokenizes otherwise unnormalized), in a worker process too (the copy is left out of the pickled
    state and made again there: copy.copy goes through the same __getstate__/__setstate__)."""
    tok = load_tokenizer(fixture("tokenizers", "qwen2.5"))
    chatml = get_template("chatml", tok.specials)
    contents = ["Café au lait, déjà vu.", "Cafe\u0301 au lait, de\u0301ja\u0300 vu.", "A\u030a and \u212b", "plain text"]
    texts = [chatml.render([{"role": "user", "content": c}, {"role": "assistant", "content": c[::-1]}]).text
             for c in contents]
    for segments in (Segments(tok.backend), copy.copy(Segments(tok.backend))):
        assert segments.form == "NFC" and segments.bare is not None
        got = segments.encode_batch(texts)
        want = tok.backend.encode_batch(texts, add_special_tokens=False)
        assert all(same(g, w, t) for g, w, t in zip(got, want, texts, strict=True))
    assert segments.bare.encode(texts[1], add_special_tokens=False).ids != got[1].ids  # the copy would not do here


def test_an_added_token_the_normalizer_would_change_keeps_the_normalizer() -> None:
    """An added token with normalized=true is matched in the normalized text, so the tokenizer matches the NFC form of
    a decomposed token's content; the copy without the normalizer would match only the decomposed spelling, which no
    NFC text holds: such a tokenizer is not given the copy (found on the second reading)."""
    from tokenizers import AddedToken

    tok = load_tokenizer(fixture("tokenizers", "qwen2.5"))
    tok.backend.add_tokens([AddedToken("e\u0301x", normalized=True)])
    texts = ["\u00e9x and caf\u00e9x", "e\u0301x"]
    segments = Segments(tok.backend)
    got = segments.encode_batch(texts)
    want = tok.backend.encode_batch(texts, add_special_tokens=False)
    assert [g.ids for g in got] == [w.ids for w in want]
    assert segments.bare is None


MANY_SCRIPTS = ["你好，世界！这是一个测试。", "emoji 😀👍🏽 family 👨‍👩‍👧 ok", "café naïve Ångström", "日本語のテキスト　全角スペース",
                "русский текст и  двойные  пробелы", "\u200b zero width \ufeff bom", "tabs\tand\r\nnewlines\n\n\n end  "]


@pytest.mark.parametrize("name", ["qwen2.5", "llama3", "smollm3", "phi-3-mini"])
def test_tokens_without_offsets_answer_as_the_tokenizers_offsets(name: str) -> None:
    """A long batch of a byte-level BPE is encoded without offsets (`Tokens`): the same ids, and char_to_token at every
    character as the tokenizer's own offsets answer it (characters split between tokens: emoji, CJK); phi-3's
    Metaspace pre-tokenizer is not byte-level and keeps the tokenizer's encodings."""
    tok = load_tokenizer(fixture("tokenizers", name))
    chatml = get_template("chatml", tok.specials)
    records = [r for b in read_records([str(fixture("data", "llamafactory", "alpaca_en_demo.json"))]) for r in b.items]
    texts = [chatml.render(r["messages"]).text for r in records[:250]]
    texts += [chatml.render([{"role": "user", "content": a}, {"role": "assistant", "content": b + a}]).text
              for a in MANY_SCRIPTS for b in MANY_SCRIPTS]
    segments = Segments(tok.backend)
    got = segments.encode_batch(texts)
    want = tok.backend.encode_batch(texts, add_special_tokens=False)
    assert [g.ids for g in got] == [w.ids for w in want]
    if name == "phi-3-mini":
        assert segments.widths is None and not any(isinstance(g, Tokens) for g in got)
        return
    assert all(isinstance(g, Tokens) for g in got)
    for g, w, t in zip(got[-len(MANY_SCRIPTS) ** 2 - 20:], want[-len(MANY_SCRIPTS) ** 2 - 20:], texts[-len(MANY_SCRIPTS) ** 2 - 20:],
                       strict=True):
        assert [g.char_to_token(i) for i in range(len(t) + 2)] == [w.char_to_token(i) for i in range(len(t) + 2)]


def test_a_vocabulary_that_merges_back_is_looked_up_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """qwen2.5 loads as transformers' Qwen2Tokenizer, which merges every word: all 151,643 vocabulary words merge back
    to themselves, so on a run's second batch the model looks whole words up instead (the same ids), and the check is
    kept for the next run. A vocabulary with a word its merges cannot make is left merging."""
    from tokenizers import Tokenizer
    from tokenizers.models import BPE

    monkeypatch.setenv("PREP_CACHE", str(tmp_path))
    tok = load_tokenizer(fixture("tokenizers", "qwen2.5"))
    assert not tok.backend.model.ignore_merges
    texts = [get_template("chatml", tok.specials).render([{"role": "user", "content": f"Say {k} in words."}]).text
             for k in range(20)]
    want = [e.ids for e in tok.backend.encode_batch(texts, add_special_tokens=False)]
    segments = Segments(tok.backend, tok.files_key())
    assert [e.ids for e in segments.encode_batch(texts[:10]) + segments.encode_batch(texts[10:])] == want
    assert tok.backend.model.ignore_merges and list((tmp_path / "merges").iterdir())
    again = load_tokenizer(fixture("tokenizers", "qwen2.5"))
    Segments(again.backend, again.files_key())  # the kept check: set at once
    assert again.backend.model.ignore_merges

    odd = Tokenizer(BPE({"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4, "bc": 5}, [("b", "c"), ("a", "b")]))
    assert not _merged_back(odd)  # "abc" merges to a + bc
    odd = Tokenizer(BPE({"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4}, [("a", "b"), ("ab", "c")]))
    assert _merged_back(odd)


def test_the_token_widths_are_kept_per_tokenizer_and_added_tokens(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Each token's byte length is read from the vocabulary once and kept in the cache: a later run reads the same
    widths back; a tokenizer given another added token keeps its own; a tokenizer outside the byte alphabet keeps
    its "none"."""
    from tokenizers import AddedToken

    monkeypatch.setenv("PREP_CACHE", str(tmp_path))
    tok = load_tokenizer(fixture("tokenizers", "qwen2.5"))
    made = Segments(tok.backend, tok.files_key())._widths()
    assert made is not None and made[tok.backend.token_to_id("<|im_start|>")] == len("<|im_start|>")
    assert made[tok.backend.token_to_id("ĠHello")] == len(" Hello")
    assert len(list((tmp_path / "widths").iterdir())) == 1
    assert np.array_equal(Segments(tok.backend, tok.files_key())._widths(), made)
    tok.backend.add_tokens([AddedToken("<|mine|>", normalized=False)])
    mine = Segments(tok.backend, tok.files_key())._widths()
    assert len(mine) == len(made) + 1 and mine[-1] == len("<|mine|>")
    phi = load_tokenizer(fixture("tokenizers", "phi-3-mini"))
    assert Segments(phi.backend, phi.files_key())._widths() is None
    assert Segments(phi.backend, phi.files_key())._widths() is None
    assert len(list((tmp_path / "widths").iterdir())) == 3


def test_a_batchs_labels_found_at_once_equal_row_by_row() -> None:
    """The encoder labels a batch of sft rows at once (Tokens rows by one search over their run, the rows in pieces by
    their offsets): the same table as row by row, on rows in many scripts, rows sharing a tools schema and rows whose
    every message is trained."""
    from prep.core.findings import Batch, Source
    from prep.render.encoder import Encoder, Settings

    tok = load_tokenizer(fixture("tokenizers", "qwen2.5"))
    chatml = get_template("chatml", tok.specials)
    records = [r for b in read_records([str(fixture("data", "llamafactory", "alpaca_en_demo.json"))]) for r in b.items]
    rows = records[:210] + shared_tools_rows(30) + \
        [{"id": f"s{k}", "messages": [{"role": "user", "content": a}, {"role": "assistant", "content": a[::-1]}]}
         for k, a in enumerate(MANY_SCRIPTS * 3)]
    tables = []
    for train_on in ("assistant", "all"):
        for at_once in (True, False):
            encoder = Encoder(tok.backend, chatml, tok.specials, Settings("sft", train_on=train_on))
            if not at_once:
                encoder._at_once = lambda jobs: None
            batch: Batch = Batch()
            for k, r in enumerate(rows):
                batch.add({**r, "id": r.get("id", str(k))}, Source("rows", k + 1, k + 1))
            jobs = encoder.tokenize(encoder.prepare(batch))
            tables.append(encoder.encode(jobs, tokenized=True)[1])
            assert encoder._at_once(jobs) is not None or not at_once
    assert tables[0].equals(tables[1]) and tables[2].equals(tables[3]) and not tables[0].equals(tables[2])
    assert any(isinstance(job.encodings[0], Tokens) for job in jobs.items) and \
        not all(isinstance(job.encodings[0], Tokens) for job in jobs.items)
