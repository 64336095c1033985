"""The OpenAI cookbook's "Chat_finetuning_data_prep" figures, reproduced by `prep validate` on a toy
file of our own (tests/data/cookbook_toy_chat.jsonl) shaped like the cookbook's toy set: five
conversations of 3, 9, 2, 2 and 3 messages, one without a system message, one without a user
message, one with a very long answer.

The cookbook prints (for its toy_chat_fine_tuning.jsonl):
    Num examples missing system message: 1
    Num examples missing user message: 1
    #### Distribution of num_messages_per_example:
    min / max: 2, 9
    mean / median: 3.8, 3.0
    p5 / p95: 2.0, 6.6000000000000005      (computed with np.quantile at 0.1 and 0.9)
Its token figures need OpenAI's cl100k_base encoding, which cannot be fetched here; prep's token
statistics use the model's own tokenizer instead.
"""

from __future__ import annotations

import pytest

from conftest import ROOT, run_prep
from prep.formats.inputs import Inputs
from prep.stages.validate import validate

TOY = ROOT / "tests" / "data" / "cookbook_toy_chat.jsonl"


def test_cookbook_figures() -> None:
    report = validate(Inputs([str(TOY)]))
    stats = report.stats.to_dict()
    assert report.rows_read == 5
    assert stats["rows_missing_system"] == 1
    assert stats["rows_missing_user"] == 1
    m = stats["messages_per_row"]
    assert (m["min"], m["max"]) == (2, 9)
    assert (m["mean"], m["median"]) == (3.8, 3.0)
    assert m["p10"] == 2.0 and m["p90"] == pytest.approx(6.6)
    # Stricter than the cookbook, which passes it: the conversation without a user message starts
    # with an assistant reply, which chat templates and OpenAI's API refuse.
    assert [(f.line, f.code, f.path) for f in report.findings.stored] == [(4, "role_order", "$.messages[1].role")]


def test_cookbook_figures_on_the_terminal() -> None:
    out = run_prep("validate", str(TOY)).stdout.decode()
    assert "rows missing a system message: 1; missing a user message: 1" in out
    assert "messages per row: min 2, max 9, mean 3.8, median 3, p10 2, p90 6.6" in out
