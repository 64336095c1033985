"""prep mix, split, dedup and decontaminate (issue 14): exact counts, duplicate groups on one side, every
removed row a reject naming its twin or the benchmark line and n-gram, same seed same bytes."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pytest

import prep
from conftest import SAMPLES, fixture, run_prep
from prep.core.findings import PrepError
from prep.shards.reader import iter_tables


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def alpaca_chats() -> list[dict]:
    rows = json.loads(fixture("data", "llamafactory", "alpaca_en_demo.json").read_text(encoding="utf-8"))
    return [chat((r["instruction"] + "\n" + r["input"]).strip(), r["output"]) for r in rows]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- mix


def test_mix_gives_exactly_the_asked_rows_and_every_small_source_row_twice(tmp_path: Path) -> None:
    rows = alpaca_chats()
    a, b = write_jsonl(tmp_path / "a.jsonl", rows[:100]), write_jsonl(tmp_path / "b.jsonl", rows[100:110])
    done = run_prep("mix", f"{a}:20", f"{b}:20", "-o", str(tmp_path / "m1.jsonl"), "--rejects", str(tmp_path / "r.jsonl"))
    assert done.returncode == 0, done.stderr.decode()
    assert run_prep("mix", f"{a}:20", f"{b}:20", "-o", str(tmp_path / "m2.jsonl")).returncode == 0
    assert (tmp_path / "m1.jsonl").read_bytes() == (tmp_path / "m2.jsonl").read_bytes()
    assert run_prep("mix", f"{a}:20", f"{b}:20", "-o", str(tmp_path / "m3.jsonl.gz")).returncode == 0
    assert (tmp_path / "m3.manifest.json").exists()  # the stem without .jsonl.gz, as for m1.jsonl
    ids = Counter(r["id"] for r in lines(tmp_path / "m1.jsonl"))
    assert sum(n for i, n in ids.items() if i.startswith("a.jsonl")) == 20
    assert {i: n for i, n in ids.items() if i.startswith("b.jsonl")} == {f"b.jsonl:{k}": 2 for k in range(1, 11)}
    manifest = json.loads((tmp_path / "m1.manifest.json").read_text())
    assert [(s["target"], s["passes"], s["rows_written"]) for s in manifest["sources"]] == [(20, 0, 20), (20, 2, 20)]
    assert manifest["sources"][0]["sha256"] and manifest["counts"] == {  # b read in two passes
        "read": 120, "written": 40, "rejected": {"not_sampled": 80}, "altered": {}}
    assert len(lines(tmp_path / "r.jsonl")) == 80  # every row left out is kept, with its reason
    other = run_prep("mix", f"{a}:20", f"{b}:20", "-o", str(tmp_path / "m3.jsonl"), "--seed", "7")
    assert other.returncode == 0 and (tmp_path / "m3.jsonl").read_bytes() != (tmp_path / "m1.jsonl").read_bytes()


def test_mix_shares_and_refusals(tmp_path: Path) -> None:
    rows = alpaca_chats()
    a, b = write_jsonl(tmp_path / "a.jsonl", rows[:100]), write_jsonl(tmp_path / "b.jsonl", rows[100:120])
    shares = prep.mix([f"{a}:0.75", f"{b}:0.25"], str(tmp_path / "s.jsonl"))
    assert [s["target"] for s in shares.manifest["sources"]] == [60, 20]  # b allows 80 in all without repeats
    fixed = prep.mix([f"{a}:x0.5", f"{b}:0.5"], str(tmp_path / "f.jsonl"))
    assert [s["rows_written"] for s in fixed.manifest["sources"]] == [50, 50]
    for bad, words in ((["a.jsonl:0.5"], "must add up to 1.0"), (["nothere.jsonl:3"], "no such file")):
        done = run_prep("mix", *bad, "-o", str(tmp_path / "x.jsonl"), cwd=tmp_path)
        assert done.returncode == 2 and words in done.stderr.decode() and b"Traceback" not in done.stderr


def test_mix_tokenized_shards_by_tokens_lands_within_one_row(tmp_path: Path) -> None:
    for name, files in (("a", ["openai.jsonl", "sharegpt.jsonl"]), ("b", ["alpaca.json"])):
        prep.tokenize(prep.Inputs([str(SAMPLES / f) for f in files]), str(SAMPLES / "tokenizer"), str(tmp_path / name),
                      template="chatml")
    budget = 3000
    result = prep.mix([f"{tmp_path / 'a'}:{budget}", f"{tmp_path / 'b'}:{budget}"], str(tmp_path / "mixed"), by="tokens")
    assert prep.verify(str(tmp_path / "mixed")).ok
    for source in result.manifest["mix"]["sources"]:
        longest = max(int(pc.max(t["num_tokens"]).as_py()) for t in iter_tables(source["source"]))
        assert budget - longest < source["tokens_written"] <= budget
    total = sum(int(pc.sum(t["num_tokens"]).as_py()) for t in iter_tables(tmp_path / "mixed"))
    assert total == sum(s["tokens_written"] for s in result.manifest["mix"]["sources"])


# ---------------------------------------------------------------- split


def _planted_sources(tmp_path: Path) -> list[Path]:
    """3 sources x 100 alpaca chats; in each, 5 rows nearly repeat another row of the same source."""
    rows = alpaca_chats()
    paths = []
    for n, name in enumerate("abc"):
        part = [dict(r) for r in rows[n * 100:(n + 1) * 100]]
        for k in range(0, 10, 2):
            twin = json.loads(json.dumps(part[k]))
            twin["messages"][1]["content"] = twin["messages"][1]["content"].upper() + "  "
            part[k + 50] = twin
        paths.append(write_jsonl(tmp_path / f"{name}.jsonl", part))
    return paths


def test_split_per_source_keeps_near_duplicates_on_one_side(tmp_path: Path) -> None:
    paths = _planted_sources(tmp_path)
    out = tmp_path / "split"
    done = run_prep("split", *map(str, paths), "--val", "0.1", "--per-source", "-o", str(out))
    assert done.returncode == 0, done.stderr.decode()
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["validation"] for s in manifest["sources"]] == [10, 10, 10]
    train, valid = lines(out / "train.jsonl"), lines(out / "validation.jsonl")
    assert len(train) == 270 and len(valid) == 30
    sides = {r["id"]: side for side, rows in (("t", train), ("v", valid)) for r in rows}
    for name in "abc":
        for k in range(0, 10, 2):
            assert sides[f"{name}.jsonl:{k + 1}"] == sides[f"{name}.jsonl:{k + 51}"]
    report = prep.validate(prep.Inputs([str(out / "train.jsonl")]), validation=[str(out / "validation.jsonl")])
    assert "near_duplicate" not in report.findings.counts
    copy = tmp_path / "copy_of_train.jsonl"
    copy.write_bytes((out / "train.jsonl").read_bytes())
    check = prep.validate(prep.Inputs([str(out / "train.jsonl")]), validation=[str(copy)])
    assert check.findings.counts["near_duplicate"] == 270  # the check itself finds twins


# ---------------------------------------------------------------- dedup


def test_dedup_removes_planted_duplicates_across_files_and_names_each_twin(tmp_path: Path) -> None:
    rows = alpaca_chats()[:200]
    a, b = [dict(r) for r in rows[:100]], [dict(r) for r in rows[100:]]
    a += [rows[3], rows[150]]  # 5 exact copies, within and across files
    b += [rows[7], rows[120], rows[99]]
    planted_near = []
    for k in (10, 40, 130):  # 3 near copies: case, spacing, one word changed
        twin = json.loads(json.dumps(rows[k]))
        words = twin["messages"][1]["content"].split()
        words[len(words) // 2] = "zebra"
        twin["messages"][1]["content"] = "  ".join(words).upper()
        (b if k < 100 else a).append(twin)
        planted_near.append(k)
    pa, pb = write_jsonl(tmp_path / "a.jsonl", a), write_jsonl(tmp_path / "b.jsonl", b)
    result = prep.dedup(prep.Inputs([str(pa), str(pb)]), str(tmp_path / "out.jsonl"),
                        rejects=str(tmp_path / "rej.jsonl"))
    assert result.tally.read == 208 and result.tally.written == 200 and result.exit_code == 0
    assert dict(result.tally.rejected) == {"duplicate": 5, "near_duplicate": 3}
    rejects = lines(tmp_path / "rej.jsonl")
    kept = {r["id"] for r in lines(tmp_path / "out.jsonl")}
    assert all(r["duplicate_of"]["id"] in kept for r in rejects)
    near = {frozenset((r["row"]["id"], r["duplicate_of"]["id"])) for r in rejects
            if r["reasons"][0]["code"] == "near_duplicate"}
    copies = {10: "b.jsonl:104", 40: "b.jsonl:105", 130: "a.jsonl:103"}  # where each near copy was appended
    assert near == {frozenset((f"{'a' if k < 100 else 'b'}.jsonl:{k % 100 + 1}", copies[k])) for k in planted_near}
    exact = run_prep("dedup", str(pa), str(pb), "--exact", "-o", str(tmp_path / "exact.jsonl"))
    assert exact.returncode == 0 and len(lines(tmp_path / "exact.jsonl")) == 203


def test_dedup_fields_and_normalisation_are_options(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [chat("Ｓａｍｅ question", "first answer"),
                                             chat("same   QUESTION", "another answer entirely")])
    same_user = prep.dedup(prep.Inputs([str(path)]), str(tmp_path / "u.jsonl"), fields="user", exact=True)
    assert dict(same_user.tally.rejected) == {"duplicate": 1}
    strict = prep.dedup(prep.Inputs([str(path)]), str(tmp_path / "s.jsonl"), fields="user", exact=True, nfkc=False)
    assert strict.tally.rejected_total == 0
    everything = prep.dedup(prep.Inputs([str(path)]), str(tmp_path / "a.jsonl"))
    assert everything.tally.rejected_total == 0


# ---------------------------------------------------------------- decontaminate


def test_decontaminate_drops_exactly_the_rows_with_benchmark_ngrams(tmp_path: Path) -> None:
    rows = alpaca_chats()[:300]
    rng = random.Random(0)
    bench, planted = [], {}
    for k in rng.sample(range(300), 6):
        words = rows[k]["messages"][1]["content"].split()
        if len(words) < 20:
            continue
        bench.append({"question": "Q: " + " ".join(words[2:17]) + " ?", "answer": "x"})
        planted[k + 1] = len(bench)
    bench.append({"question": "东京是日本的首都，也是日本最大的城市和经济中心。"})
    rows.append(chat("请问：东京是日本的首都，也是日本最大的城市和经济中心吗？", "是的"))
    planted[301] = len(bench)
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    benchmark = write_jsonl(tmp_path / "bench.jsonl", bench)
    done = run_prep("decontaminate", str(train), "--against", str(benchmark), "--field", "question",
                    "-o", str(tmp_path / "clean.jsonl"), "--rejects", str(tmp_path / "hits.jsonl"))
    assert done.returncode == 0, done.stderr.decode()
    hits = lines(tmp_path / "hits.jsonl")
    assert {h["row_number"]: h["benchmark"]["line"] for h in hits} == planted
    assert all(len(h["benchmark"]["ngram"].split()) == 13 for h in hits if h["row_number"] != 301)
    assert hits[-1]["benchmark"]["ngram"] in "东京是日本的首都也是日本最大的城市和经济中心"
    assert len(lines(tmp_path / "clean.jsonl")) == len(rows) - len(planted)
    assert f"{len(planted)} rows dropped" in done.stderr.decode()


def test_decontaminate_refuses_a_benchmark_without_the_field(tmp_path: Path) -> None:
    bench = write_jsonl(tmp_path / "b.jsonl", [{"q": "x"}])
    try:
        prep.decontaminate(prep.Inputs([str(SAMPLES / "openai.jsonl")]), str(tmp_path / "o.jsonl"), against=[str(bench)])
    except PrepError as e:
        assert "--field" in str(e)
    else:
        raise AssertionError("a benchmark without text was accepted")


# ---------------------------------------------------------------- recipes


def test_recipe_counts_need_a_mix_section_and_name_the_line(tmp_path: Path) -> None:
    from prep.recipes.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"inputs:\n  files:\n    - {SAMPLES / 'openai.jsonl'}:3\ndedup: {{}}\n", encoding="utf-8")
    try:
        load_recipe(recipe)
    except PrepError as e:
        assert str(e).startswith(f"{recipe}:3: inputs.files[0]: ") and "needs a mix section" in str(e)
    else:
        raise AssertionError("a count without a mix section was accepted")
    recipe.write_text(f"inputs:\n  files: [{SAMPLES / 'openai.jsonl'}:3, {SAMPLES / 'sharegpt.jsonl'}]\n"
                      f"mix: {{seed: 1}}\ndedup: {{exact: true}}\nsplit: {{val: 2}}\n", encoding="utf-8")
    result = prep.run(load_recipe(recipe, [f"output={tmp_path / 'run'}"]))
    assert result.exit_code == 0, result.failed
    summary = {s.name: s.summary for s in result.stages}
    assert (summary["mix"]["written"], summary["split"]["validation"], summary["split"]["train"]) == (9, 2, 7)
    again = prep.run(load_recipe(recipe, [f"output={tmp_path / 'run'}"]))
    assert {s.status for s in again.stages} == {"skipped"}


def test_mix_records_by_tokens_counts_as_tokenize_does(tmp_path: Path) -> None:
    sources = [f"{SAMPLES / 'openai.jsonl'}:1500", f"{SAMPLES / 'alpaca.json'}:900"]
    result = prep.mix(sources, str(tmp_path / "m.jsonl"), by="tokens", tokenizer=str(SAMPLES / "tokenizer"),
                      template="chatml")
    shards = prep.tokenize(prep.Inputs([str(tmp_path / "m.jsonl")]), str(SAMPLES / "tokenizer"), str(tmp_path / "t"),
                           template="chatml")
    written = [s["tokens_written"] for s in result.manifest["sources"]]
    assert shards.manifest["tokens"]["total"] == sum(written)
    longest = max(int(pc.max(t["num_tokens"]).as_py()) for t in iter_tables(tmp_path / "t"))
    assert all(budget - longest < got <= budget for budget, got in zip((1500, 900), written, strict=True))


def test_ascii_shingles_are_the_tokens_bigrams_and_hash_as_text() -> None:
    """near.shingles splits ASCII text as bytes; it must give the regular expression's words, and rensa must
    hash a str and its UTF-8 bytes alike, or ASCII and non-ASCII rows would not compare."""
    import string

    import rensa

    from prep.overlap.near import shingles
    from prep.overlap.text import tokens

    rng = random.Random(0)
    for _ in range(2000):
        text = "".join(rng.choice(string.printable + "\x1e\x1f") for _ in range(rng.randint(0, 40)))
        words = tokens(text)
        assert [s.decode() for s in shingles(text)] == ([f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
                                                        or words)
    as_text, as_bytes = rensa.RMinHash.digests_from_token_sets([["a b", "é c"], [b"a b", "é c".encode()]], num_perm=8,
                                                               seed=1)
    assert as_text == as_bytes


def test_an_unknown_role_reads_the_same_in_validate_and_dedup(tmp_path: Path) -> None:
    """validate checks rows against the schema, dedup reads them as records: one message and one hint."""
    data = write_jsonl(tmp_path / "roles.jsonl", [{"messages": [{"role": "human", "content": "hi"},
                                                                {"role": "assistant", "content": "yo"}]}, chat("a", "b")])
    prep.validate(prep.Inputs([str(data)]), rejects=str(tmp_path / "v.jsonl"))
    prep.dedup(prep.Inputs([str(data)]), str(tmp_path / "d.jsonl"), rejects=str(tmp_path / "dr.jsonl"))
    (validated,), (deduped,) = lines(tmp_path / "v.jsonl"), lines(tmp_path / "dr.jsonl")
    said = [{k: r["reasons"][0][k] for k in ("code", "message", "hint", "path")} for r in (validated, deduped)]
    assert said[0] == said[1] == {"code": "bad_role", "message": 'unknown role "human"', "path": "$.messages[0].role",
                                  "hint": "use one of system, developer, user, assistant, tool, function"}


def test_decontaminate_compares_every_text_field_and_short_answers_whole(tmp_path: Path) -> None:
    """Four training rows whose answers are benchmark answers once all passed (0 of 4 dropped): only the question was
    compared, and with --field answer the short fourth was skipped as "shorter than the n-gram"."""
    rows = alpaca_chats()[:40]
    bench = [{"question": "Which gas do plants take in to make their food?", "choices": ["Oxygen", "Carbon dioxide"],
              "answer": "Plants take in carbon dioxide from the air and with sunlight and water turn it into sugar."},
             {"question": "Who wrote Hamlet?", "answer": "William Shakespeare wrote the tragedy Hamlet around 1600, "
                                                         "in London, for the Globe theatre company."},
             {"question": "What is the largest planet?", "answer": "Jupiter is the largest planet of our solar system "
                                                                   "by mass and by volume, by far."},
             {"question": "How do plants make food?", "answer": "By photosynthesis in their green leaves.",
              "meta": {"source": "the third chapter of the school textbook", "id": 7}}]
    planted = {}
    for k, item in zip((3, 11, 25, 38), bench, strict=True):
        rows[k] = chat(rows[k]["messages"][0]["content"], item["answer"])
        planted[k + 1] = bench.index(item) + 1
    rows.append(chat("Tell me about Oxygen.", "Oxygen is a gas."))  # a one-word choice is too short to look for
    rows.append(chat("Which chapter?", "It was in the third chapter of the school textbook."))  # a nested text, whole
    planted[len(rows)] = 4
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    benchmark = write_jsonl(tmp_path / "bench.jsonl", bench)
    result = prep.decontaminate(prep.Inputs([str(train)]), str(tmp_path / "clean.jsonl"), against=[str(benchmark)],
                                rejects=str(tmp_path / "hits.jsonl"))
    hits = lines(tmp_path / "hits.jsonl")
    assert {h["row_number"]: h["benchmark"]["line"] for h in hits} == planted
    assert [h["benchmark"]["whole"] for h in hits] == [False, False, False, True, True]
    assert hits[3]["benchmark"]["ngram"] == "by photosynthesis in their green leaves"
    assert len(lines(tmp_path / "clean.jsonl")) == len(rows) - 5
    (entry,) = result.benchmarks
    assert {k: entry[k] for k in ("items", "texts", "texts_ngrams", "texts_whole", "texts_too_short", "hits",
                                  "hits_whole")} == {"items": 4, "texts": 11, "texts_ngrams": 3, "texts_whole": 5,
                                                     "texts_too_short": 3, "hits": 5, "hits_whole": 2}
    narrowed = prep.decontaminate(prep.Inputs([str(train)]), str(tmp_path / "q.jsonl"), against=[str(benchmark)],
                                  field="question")
    assert narrowed.tally.rejected_total == 0 and narrowed.benchmarks[0]["texts"] == 4
    floor = prep.decontaminate(prep.Inputs([str(train)]), str(tmp_path / "f.jsonl"), against=[str(benchmark)],
                               field="answer", min_item_tokens=7)
    assert floor.tally.rejected_total == 3 and floor.benchmarks[0]["texts_too_short"] == 1
    with pytest.raises(PrepError, match="--min-item-tokens 0: must be an integer of at least 1"):
        prep.decontaminate(prep.Inputs([str(train)]), str(tmp_path / "f.jsonl"), against=[str(benchmark)],
                           min_item_tokens=0)


def test_verbs_that_read_twice_refuse_what_can_be_read_once(tmp_path: Path) -> None:
    """Near-duplicate dedup, split and mix read their inputs twice: a FIFO or standard input is refused in one line
    (the second pass found it empty: 0 rows written, none reported lost); exact dedup, one pass, takes it whole."""
    import os
    import subprocess

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in alpaca_chats()[:50]), encoding="utf-8")
    fifo = tmp_path / "in.jsonl"
    os.mkfifo(fifo)
    for path in (str(fifo), "-"):
        with pytest.raises(PrepError, match="reads its inputs twice"):
            prep.dedup(prep.Inputs([path]), str(tmp_path / "out.jsonl"))
        with pytest.raises(PrepError, match="reads its inputs twice"):  # split too (it wrote 0 of 3,000 rows)
            prep.split(prep.Inputs([path]), str(tmp_path / "split"), val=0.1)
    with pytest.raises(PrepError, match="reads its record files twice"):  # and mix
        prep.mix([str(fifo)], str(tmp_path / "mixed.jsonl"))
    writer = subprocess.Popen(["sh", "-c", 'cat "$0" > "$1"', str(rows), str(fifo)])
    result = prep.dedup(prep.Inputs([str(fifo)]), str(tmp_path / "out.jsonl"), exact=True)
    assert writer.wait(5) == 0
    assert result.tally.read == 50 == result.tally.written + sum(result.tally.rejected.values())


def test_decontaminate_reads_a_fifo_input_and_a_fifo_benchmark_whole(tmp_path: Path) -> None:
    """decontaminate reads each input and each benchmark once, so FIFOs (`<(zcat x.gz)`) are taken whole: every one of
    3,000 rows read and accounted for, the planted benchmark item found through the benchmark's FIFO too."""
    import os
    import subprocess

    rows, bench = tmp_path / "rows.jsonl", tmp_path / "bench.jsonl"
    rows.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"question {i} about tides"},
                                                     {"role": "assistant", "content": f"answer {i}"}]}) + "\n"
                            for i in range(3000)), encoding="utf-8")
    bench.write_text(json.dumps({"question": "question 7 about tides"}) + "\n", encoding="utf-8")
    fifos = [tmp_path / "in.jsonl", tmp_path / "against.jsonl"]
    writers = []
    for fifo, source in zip(fifos, (rows, bench), strict=True):
        os.mkfifo(fifo)
        writers.append(subprocess.Popen(["sh", "-c", 'cat "$0" > "$1"', str(source), str(fifo)]))
    result = prep.decontaminate(prep.Inputs([str(fifos[0])]), str(tmp_path / "clean.jsonl"),
                                against=[str(fifos[1])], min_item_tokens=2)
    assert [w.wait(5) for w in writers] == [0, 0]
    assert result.tally.read == 3000 and result.tally.written == 2999 and result.tally.rejected == {"contaminated": 1}
