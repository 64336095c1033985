"""`prep validate`, quality warnings and text hygiene: duplicates, near-duplicates between a
training and a validation file, long rows, capitals, identical answers, shared prefixes and
suffixes, and Unicode oddities (NUL, lone surrogates, control and zero-width characters)."""

from __future__ import annotations

from pathlib import Path

from validate_util import assert_exactly, chat, run, write_rows


def test_row_level_quality_and_text(tmp_path: Path) -> None:
    rows = [
        chat("Who wrote Hamlet?", "Shakespeare."),                                           # 1
        chat("Largest ocean?", "The Pacific."),                                              # 2
        chat("Tallest mountain?", "Everest, at 8,849 metres."),                              # 3
        chat("Largest ocean?", "The Pacific."),                                              # 4 duplicate of 2
        chat("Describe the sea.", "Blue " * 80),                                             # 5 too long
        chat("Shout a greeting.", "HELLO THERE, MY GOOD FRIEND, HOW ARE YOU?"),              # 6 capitals
        '{"messages": [{"role": "user", "content": "a\\u0000b"}, {"role": "assistant", "content": "NUL."}]}',  # 7
        '{"messages": [{"role": "user", "content": "x\\ud800y"}, {"role": "assistant", "content": "Half."}]}',  # 8
        chat("Ring the bell\u0007", "Ding."),                                                # 9
        chat("Hidden\u200b\u200b\u200btext", "Invisible."),                                   # 10
        chat("Spell 'eye'.", "E-Y-E."),                                                      # 11
    ]
    path = write_rows(tmp_path / "quality.jsonl", rows)
    report = run(path, max_chars=300)
    assert_exactly(report, {
        (4, "duplicate_row", "$"),
        (5, "too_long_text", "$"),
        (6, "mostly_uppercase", "$.messages[1].content"),
        (7, "nul_char", "$.messages[0].content"),
        (8, "lone_surrogate", "$.messages[0].content"),
        (9, "control_char", "$.messages[0].content"),
        (10, "zero_width_run", "$.messages[0].content"),
    })
    assert report.rows_rejected == 2  # NUL and lone surrogate are errors; the rest warn


def test_answer_patterns_over_a_file(tmp_path: Path) -> None:
    same = [chat(f"Question {i}?", "I cannot answer that.") for i in range(6)]
    report = run(write_rows(tmp_path / "same.jsonl", same))
    assert_exactly(report, {(0, "identical_completions", "$")})
    affixed = [chat(f"Question {i}?", f"Answer: it is {i * 7} [END]") for i in range(6)]
    report = run(write_rows(tmp_path / "affixed.jsonl", affixed))
    assert_exactly(report, {(0, "common_prefix", "$"), (0, "common_suffix", "$")})
    few = affixed[:4]  # too few rows to call it a pattern
    assert run(write_rows(tmp_path / "few.jsonl", few)).findings.total == 0


def test_near_duplicates_between_train_and_validation(tmp_path: Path) -> None:
    long = ("The mitochondrion is the powerhouse of the cell, turning nutrients into the energy "
            "that the rest of the cell runs on every day")
    train = [chat("What does the mitochondrion do?", long),
             chat("What is osmosis?", "Water moving across a membrane towards the higher solute concentration."),
             chat("Name a noble gas.", "Neon.")]
    valid = [chat("Define photosynthesis.", "Plants turning light, water and carbon dioxide into sugar."),
             chat("what does the MITOCHONDRION do", long.replace("every day", "all day") + "."),
             chat("Name a noble gas.", "Neon."),
             chat("What is a prime number?", "A number with exactly two divisors.")]
    tp, vp = write_rows(tmp_path / "train.jsonl", train), write_rows(tmp_path / "valid.jsonl", valid)
    report = run([tp, vp])
    assert [f.role for f in report.files] == ["train", "validation"]
    assert_exactly(report, {("valid.jsonl", 2, "near_duplicate", "$"), ("valid.jsonl", 3, "near_duplicate", "$")},
                   with_file=True)
    messages = {f.line: f.message for f in report.findings.stored}
    assert "similar to training row" in messages[2] and "train.jsonl:1" in messages[2]
    assert messages[3].startswith("this validation row repeats training row")
    # Given explicitly, with any name; and a lone file is never a validation file.
    other = write_rows(tmp_path / "heldout.jsonl", valid)
    assert run(tp, validation=[str(other)]).findings.counts == {"near_duplicate": 2}
    assert run(vp).files[0].role == "train"


def test_an_answer_just_over_70_percent_capitals_is_flagged_by_both_paths() -> None:
    """234 capitals beside 100 lower-case letters is 70.06%: flagged (the early answers once used 2.34 for 7/3 and
    missed it); 233 is 69.97%: not."""
    from prep.checks.rules.quality import shouting

    assert shouting("a" * 100 + "A" * 234) and not shouting("a" * 100 + "A" * 233)
    assert shouting("é" * 50 + "A" * 15 + "b" * 6) and not shouting("A" * 19)  # letters outside ASCII do not count


def test_a_block_of_answers_taken_at_once_leaves_what_one_by_one_does() -> None:
    """`Answers.add_all` (validate's plain path, a block at a time) against `add` row by row: the same count, first
    answer, sameness, common prefix and suffix, however the answers are cut into blocks."""
    import random

    from prep.checks.rules.quality import Answers

    rng = random.Random(7)
    for _ in range(2000):
        head, tail = rng.choice(["", "Sure! ", "Answer: "]), rng.choice(["", " Thanks.", "!"])
        texts = [head + "".join(rng.choices("ab c", k=rng.randint(0, 6))) + tail for _ in range(rng.randint(0, 12))]
        if texts and rng.random() < 0.2:
            texts = [texts[0]] * len(texts)
        one, blocks = Answers(), Answers()
        for text in texts:
            one.add(text)
        cuts = sorted(rng.sample(range(len(texts) + 1), k=min(2, len(texts) + 1)))
        for a, b in zip([0, *cuts], [*cuts, len(texts)], strict=True):
            blocks.add_all(texts[a:b])
        assert one == blocks, texts
