"""`prep validate`, preference and feedback rules: OpenAI DPO, ShareGPT and Alpaca preference,
TRL layouts, KTO labels, AutoTrain columns, and --kind. One planted defect per row."""

from __future__ import annotations

from pathlib import Path

from validate_util import assert_exactly, run, write_rows


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def dpo(prompt: list[dict], chosen: list[dict], rejected: list[dict]) -> dict:
    return {"input": {"messages": prompt}, "preferred_output": chosen, "non_preferred_output": rejected}


def test_openai_dpo(tmp_path: Path) -> None:
    q = [msg("user", "Best way to learn a language?")]
    rows = [
        dpo(q, [msg("assistant", "Practise daily with native speakers.")], [msg("assistant", "Don't bother.")]),  # 1
        dpo(q, [msg("assistant", "Read a lot."), msg("assistant", "And listen.")], [msg("assistant", "No.")]),    # 2
        dpo(q, [msg("assistant", "Use flashcards.")], [msg("user", "Give up.")]),                                # 3
        dpo([msg("user", "Hi"), msg("assistant", "Hello")], [msg("assistant", "Watch films.")],
            [msg("assistant", "Sleep.")]),                                                                       # 4
        dpo(q, [msg("assistant", "Immersion.")], [msg("assistant", "Immersion.")]),                              # 5
        {"input": {"messages": q}, "preferred_output": [msg("assistant", "Travel.")]},                           # 6
        dpo([msg("user", "Best time to study?")], [msg("assistant", "Mornings.")], [msg("assistant", "Never.")]),  # 7
    ]
    report = run(write_rows(tmp_path / "dpo.jsonl", rows))
    assert_exactly(report, {
        (2, "bad_preference", "$.preferred_output"),
        (3, "bad_preference", "$.non_preferred_output[0].role"),
        (4, "bad_preference", "$.input.messages[1].role"),
        (5, "identical_preference", "$.preferred_output[0].content"),
        (6, "missing_field", "$.non_preferred_output"),
    })


def test_sharegpt_preference(tmp_path: Path) -> None:
    def row(turns: list[tuple[str, str]], chosen: tuple[str, str] | None, rejected: tuple[str, str] | None) -> dict:
        out: dict = {"conversations": [{"from": f, "value": v} for f, v in turns]}
        if chosen:
            out["chosen"] = {"from": chosen[0], "value": chosen[1]}
        if rejected:
            out["rejected"] = {"from": rejected[0], "value": rejected[1]}
        return out

    rows = [
        row([("human", "Write a haiku.")], ("gpt", "Old pond, frog leaps in."), ("gpt", "Roses are red.")),     # 1
        row([("human", "Name a planet.")], ("human", "Mars."), ("gpt", "The sun.")),                            # 2
        row([("human", "Name a metal.")], ("gpt", "Iron."), None),                                             # 3
        row([("human", "Hi"), ("gpt", "Hello")], ("gpt", "How are you?"), ("gpt", "Bye.")),                    # 4
        row([("human", "Name a river.")], ("gpt", "The Nile."), ("gpt", "A lake.")),                           # 5
    ]
    report = run(write_rows(tmp_path / "sharegpt_pref.jsonl", rows))
    assert_exactly(report, {
        (2, "bad_preference", "$.chosen"),
        (3, "bad_preference", "$.rejected"),
        (4, "bad_preference", "$.conversations[1].from"),
    })


def test_alpaca_preference_and_kto(tmp_path: Path) -> None:
    pref = [
        {"instruction": "Summarise: the cat sat.", "chosen": "A cat sat.", "rejected": "Dogs bark."},          # 1
        {"instruction": "Summarise: it rained.", "chosen": "Rain fell."},                                     # 2
        {"instruction": "Summarise: we won.", "chosen": "A win.", "rejected": "A win."},                      # 3
        {"instruction": "Summarise: sun rose.", "chosen": "Dawn.", "rejected": "Night."},                     # 4
    ]
    report = run(write_rows(tmp_path / "alpaca_pref.jsonl", pref))
    assert_exactly(report, {(2, "missing_field", "$.rejected"), (3, "identical_preference", "$.chosen")})
    kto = [
        {"instruction": "Is the sky blue?", "output": "Yes.", "kto_tag": True},                               # 1
        {"instruction": "Is fire cold?", "output": "Yes.", "kto_tag": "no"},                                  # 2
        {"instruction": "Is ice cold?", "output": "Yes.", "kto_tag": False},                                  # 3
        {"instruction": "Is water wet?", "output": "Yes.", "kto_tag": "true"},                                # 4
    ]
    report = run(write_rows(tmp_path / "alpaca_kto.jsonl", kto))
    assert_exactly(report, {(2, "bad_label", "$.kto_tag"), (4, "bad_label", "$.kto_tag")})


def test_trl_layouts(tmp_path: Path) -> None:
    pref = [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},                                                    # 1
        {"prompt": "3+3?", "chosen": "6", "rejected": "6"},                                                    # 2
        {"prompt": "4+4?", "chosen": "8"},                                                                     # 3
        {"chosen": [msg("user", "5+5?"), msg("assistant", "10")],
         "rejected": [msg("user", "5+5?"), msg("assistant", "11")]},                                           # 4
        {"prompt": [msg("user", "6+6?"), msg("assistant", "12")], "chosen": [msg("assistant", "Twelve.")],
         "rejected": [msg("assistant", "Thirteen.")]},                                                         # 5
    ]
    report = run(write_rows(tmp_path / "trl_pref.jsonl", pref), format="trl")
    assert_exactly(report, {(2, "identical_preference", "$.chosen"), (3, "missing_field", "$.rejected"),
                            (5, "bad_preference", "$.prompt[1].role")})
    kto = [
        {"prompt": "Capital of Chile?", "completion": "Santiago.", "label": True},                             # 1
        {"prompt": "Capital of Peru?", "completion": "Quito.", "label": "maybe"},                              # 2
        {"prompt": "Capital of Cuba?", "completion": "Havana.", "label": False},                               # 3
        {"completion": "Lima.", "label": True},                                                                # 4
    ]
    report = run(write_rows(tmp_path / "trl_kto.jsonl", kto), format="trl")
    assert_exactly(report, {(2, "bad_label", "$.label"), (4, "missing_field", "$.prompt")})


def test_autotrain_columns(tmp_path: Path) -> None:
    path = tmp_path / "autotrain_dpo.csv"
    path.write_text("prompt,text,rejected_text\n"
                    "Greet me.,Hello!,Go away.\n"           # line 2
                    "Thank me.,You are welcome.,\n"        # line 3: empty rejected answer
                    "Wish me luck.,Good luck!,Whatever.\n")  # line 4
    report = run(path)
    assert report.files[0].format == "autotrain"
    assert_exactly(report, {(3, "empty_content", "$.rejected_text")})
    # A column named in the options that the file does not have: AutoTrain ignores it silently.
    report = run(path, settings={"prompt_text_column": "question"})
    assert (2, "missing_column", "$.question") in {(f.line, f.code, f.path) for f in report.findings.stored}
    assert report.findings.counts["missing_column"] == 1


def test_kind_and_mixed_kinds(tmp_path: Path) -> None:
    rows = [{"instruction": "Hi", "output": "Hello."}, {"instruction": "Bye", "output": "See you."}]
    report = run(write_rows(tmp_path / "sft.jsonl", rows), kind="dpo", min_rows=0)
    assert_exactly(report, {(1, "wrong_kind", "$"), (2, "wrong_kind", "$")})
    report = run(write_rows(tmp_path / "sft.jsonl", rows), kind="sft")
    assert report.findings.total == 0
    mixed = [*rows, {"instruction": "Pick one", "chosen": "A", "rejected": "B"}]
    report = run(write_rows(tmp_path / "mixed.jsonl", mixed))
    assert_exactly(report, {(3, "mixed_kinds", "$")})
