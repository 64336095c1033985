"""prep report: the page of the quickstart run states what run.json, the manifests and the training report
say; every kind of TARGET gets its page; the page opens in headless Chromium without a console error or a
single request beyond itself."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from tokenizers import Tokenizer

from browser import needs_chromium, open_in_chromium
from conftest import ROOT, SAMPLES, fixture, make_tiny_model, run_prep
from prep.cli import main
from prep.formats.inputs import Inputs
from prep.recipes.recipe import load_recipe
from prep.recipes.runner import run, write_report, write_run_json
from prep.shards.layout import read_manifest
from prep.stages import validate_report
from prep.stages.report import report
from prep.stages.tokenize import tokenize
from prep.stages.validate import validate

pytest.importorskip("peft")


class Page(HTMLParser):
    """What a test reads from the page: the stated figures (data-figure, data-value and text), the samples'
    documents (their runs of trained and untrained text), the charts' titles, and every address it names."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.figures: dict[str, tuple[str, str]] = {}
        self.urls: list[str] = []
        self.tags: set[str] = set()
        self.docs: list[dict[str, Any]] = []
        self.charts: list[str] = []
        self._open: list[tuple[str, str | None, list[str]]] = []  # (tag, figure, text)
        self._run: bool | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.add(tag)
        self.urls += [v for k, v in attrs if k in ("href", "src", "action", "data", "poster") and v]
        classes = (a.get("class") or "").split()
        if "doc" in classes:
            self.docs.append({"mark": "mark" in classes, "title": "", "runs": []})
        if tag == "span" and self.docs and ("t" in classes or "u" in classes):
            self._run = "t" in classes
            self.docs[-1]["runs"].append(["", self._run])
        if tag == "figure" and a.get("data-chart"):
            self.charts.append(a["data-chart"])
        self._open.append((tag, a.get("data-figure"), []))
        if a.get("data-figure"):
            self.figures[a["data-figure"]] = (a.get("data-value") or "", "")

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            open_tag, figure, text = self._open.pop()
            if figure:
                self.figures[figure] = (self.figures[figure][0], "".join(text))
            if open_tag == tag:
                break
        if tag == "span":
            self._run = None

    def handle_data(self, data: str) -> None:
        for _, figure, text in self._open:
            if figure:
                text.append(data)
        if self._run is not None:
            self.docs[-1]["runs"][-1][0] += data

    def value(self, name: str) -> str:
        return self.figures[name][0]

    def number(self, name: str) -> float:
        return float(self.figures[name][0])


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's quickstart run, finished as `prep run` finishes it: run.json, then report.html (a few
    training steps, to keep the suite quick; `prep run` itself prints the page's path: test_run.py)."""
    root = tmp_path_factory.mktemp("quickstart")
    model = make_tiny_model(root / "tiny-llama")
    result = run(load_recipe(ROOT / "recipes" / "quickstart.yaml",
                             (f"output={root / 'run'}", f"train.model={model}", "train.max_steps=6")))
    assert result.exit_code == 0
    write_run_json(result)
    assert write_report(result) == (root / "run" / "report.html", None)
    return root / "run"


def test_the_quickstart_page_states_what_run_json_and_the_manifests_say(quickstart) -> None:
    run = quickstart
    assert (run / "report.html").stat().st_size < 100_000
    html = (run / "report.html").read_text(encoding="utf-8")
    page = Page(html)
    record = json.loads((run / "run.json").read_text())
    stages = {s["name"]: s["summary"] for s in record["stages"]}
    tokenized, packed = read_manifest(run / "tokenize"), read_manifest(run / "pack")
    trained = json.loads((run / "train" / "training_report.json").read_text())

    # row accounting, stage by stage, as run.json and the manifests count it
    for name in ("convert", "validate", "tokenize", "pack"):
        written = stages[name]["accepted"] if name == "validate" else stages[name]["written"]
        assert page.number(f"stage.{name}.read") == stages[name]["read"] == 4
        assert page.number(f"stage.{name}.written") == written
        assert page.number(f"stage.{name}.rejected") == stages[name]["rejected"] == 0
        assert page.figures[f"stage.{name}.read"][1] == f"{stages[name]['read']:,}"
    for name, m in (("tokenize", tokenized), ("pack", packed)):
        assert page.number(f"stage.{name}.read") == m["counts"]["read"]
        assert page.number(f"stage.{name}.written") == m["counts"]["written"]
        assert page.number(f"shards.{name}.rows") == m["counts"]["rows"]
        assert page.number(f"shards.{name}.tokens") == m["tokens"]["total"]
        assert page.number(f"shards.{name}.loss_tokens") == m["tokens"]["loss"]
        assert page.number(f"shards.{name}.documents") == m["counts"]["written"]
    assert page.number("rows.read") == stages["convert"]["read"]
    assert page.number("rows.written") == packed["counts"]["written"]
    assert page.number("tokens.total") == packed["tokens"]["total"] == stages["tokenize"]["tokens"]["total"]
    assert page.number("tokens.trained_share") == round(packed["tokens"]["loss"] / packed["tokens"]["total"], 6)
    assert page.number("packing.efficiency") == packed["packing"]["efficiency"] == stages["pack"]["efficiency"]
    assert page.figures["packing.efficiency"][1] == f"{packed['packing']['efficiency']:.1%}"

    # token lengths per source, before and after max_len, as the tokenize manifest counted them
    for source in tokenized["sources"]:
        key = f"lengths.{source['path']}"
        assert page.number(key + ".before_rows") == source["read"] == 4
        assert page.number(key + ".after_rows") == source["written"]
        assert page.number(key + ".max_len") == tokenized["max_len"] == 1024

    # training: the report's figures, and one point per logged step in each chart
    assert page.number("train.steps") == trained["steps"] == 6
    assert page.number("train.tokens_per_s") == trained["tokens_per_s"] == stages["train"]["tokens_per_s"]
    assert page.number("train.peak_memory_bytes") == trained["peak_memory"]["bytes"]
    assert page.number("train.last_loss") == trained["last_loss"] == stages["train"]["last_loss"]
    assert page.number("train.first_loss") == trained["first_loss"]
    assert html.count("<title>step ") == sum(1 for p in trained["loss_curve"] for k in p
                                             if k not in ("step", "tokens_seen"))
    assert {"loss", "learning rate"} <= set(page.charts)

    # the sample: the packed row holding the source's first document, decoded, trained tokens marked
    decoder = Tokenizer.from_file(str(SAMPLES / "tokenizer" / "tokenizer.json"))
    row = pq.read_table(run / "pack" / packed["shards"][0]["path"]).to_pylist()[0]
    assert len(page.docs) == len(row["seq_lengths"]) == 4
    start = 0
    for doc, n in zip(page.docs, row["seq_lengths"], strict=True):
        ids, labels = row["input_ids"][start:start + n], row["labels"][start:start + n]
        assert "".join(t for t, _ in doc["runs"]) == decoder.decode(ids, skip_special_tokens=False)
        trained_ids = [i for i, label in zip(ids, labels, strict=True) if label != -100]
        shown = [t for t, is_trained in doc["runs"] if is_trained]
        assert "".join(shown) == decoder.decode(trained_ids, skip_special_tokens=False)
        assert all(t.endswith("<|im_end|>") for t in shown)  # every answer ends with its end-of-turn token
        start += n
    first = read_manifest(run / "tokenize")["sources"][0]["first_row"]
    first_id = pq.read_table(run / "tokenize" / tokenized["shards"][0]["path"])["ids"].to_pylist()[first][0]
    assert [d["mark"] for d in page.docs] == [doc_id == first_id for doc_id in row["ids"]]

    # self-contained: no script, nothing to fetch
    assert "script" not in page.tags and "img" not in page.tags
    assert all(u.startswith(("#", "data:")) for u in page.urls), page.urls
    assert "default-src 'none'" in html


def test_a_shard_folder_a_train_folder_and_a_validate_report_get_their_pages(quickstart, tmp_path) -> None:
    run = quickstart
    packed = report(run / "pack", str(tmp_path / "pack.html"))
    page = Page((tmp_path / "pack.html").read_text())
    assert packed.page["what"] == "shard folder" and [s["stage"] for s in packed.page["stages"]] == ["tokenize", "pack"]
    assert page.number("packing.efficiency") == read_manifest(run / "pack")["packing"]["efficiency"]
    assert len(page.docs) == 4  # the unpacked folder it came from is still there: its sources, marked
    assert sum(d["mark"] for d in page.docs) == 1

    trained = report(run / "train", str(tmp_path / "train.html"))
    assert trained.page["training"]["steps"] == 6 and trained.page["shards"]
    assert Page((tmp_path / "train.html").read_text()).number("train.steps") == 6

    done = run_prep("report", str(run / "validate" / "report.json"), "-o", str(tmp_path / "v.html"))
    assert done.returncode == 0 and b"v.html" in done.stderr
    assert Page((tmp_path / "v.html").read_text()).number("stage.validate.read") == 4


def test_findings_and_rejects_are_counted_with_their_file_and_line(tmp_path) -> None:
    bad = tmp_path / "chats.jsonl"
    rows = (SAMPLES / "openai.jsonl").read_text(encoding="utf-8").splitlines()
    bad.write_text("\n".join([*rows, '{"messages": [{"role": "user", "content": "hi"}]}', "not json"]) + "\n")
    validate_report.write_json(validate(Inputs([str(bad)])), str(tmp_path / "v.json"))
    validated = json.loads((tmp_path / "v.json").read_text())
    done = run_prep("report", str(tmp_path / "v.json"))
    assert done.returncode == 1 and f"{tmp_path / 'report.html'} (".encode() in done.stderr  # the page's rows include rejected ones: exit 1, as prep stats
    page = Page((tmp_path / "report.html").read_text())
    assert validated["summary"]["findings_by_code"]
    for code, info in validated["summary"]["findings_by_code"].items():
        assert page.number(f"finding.validate.{code}") == info["count"]
    assert "chats.jsonl" in page.urls  # linked relative to the page, so the two can move together
    assert f"chats.jsonl:{len(rows) + 2}".encode() in (tmp_path / "report.html").read_bytes()

    shards = tmp_path / "shards"
    tokenize(Inputs([str(SAMPLES / "openai.jsonl")]), str(SAMPLES / "tokenizer"), str(shards), template="chatml",
             max_len=100, overflow="truncate", rejects=str(shards / "rejects.jsonl"))
    m = read_manifest(shards)
    done = report(shards)
    page = Page((shards / "report.html").read_text())
    assert m["counts"]["rejected"] and m["counts"]["altered"]
    for code, n in [*m["counts"]["rejected"].items(), *m["counts"]["altered"].items()]:
        assert page.number(f"finding.tokenize.{code}") == n
        assert page.number(f"stage.tokenize.{'rejected' if code in m['counts']['rejected'] else 'altered'}.{code}") == n
    (source,) = m["sources"]
    over = [f for f in done.page["findings"] if f["code"] == "too_long"][0]
    assert over["examples"] and all(e["file"].endswith("openai.jsonl") and e["line"] for e in over["examples"])
    assert page.number(f"lengths.{source['path']}.before_rows") == source["read"]
    assert page.number(f"lengths.{source['path']}.after_rows") == source["written"]
    over = source["rejected"].get("too_long", 0) + sum(source["altered"].values())
    assert page.number(f"lengths.{source['path']}.over_max_len") == over > 0

    (shards / "rejects.jsonl").unlink()  # counted all the same, and the page says how to keep them
    report(shards)
    page = Page((shards / "report.html").read_text())
    assert page.number("finding.tokenize.too_long") == m["counts"]["rejected"]["too_long"]
    assert "--rejects FILE" in (shards / "report.html").read_text()

    del m["sources"]  # a folder from a prep that did not record sources: its rows' lengths, as one source
    (shards / "manifest.json").write_text(json.dumps(m))
    assert [(s["path"], s["after"].rows) for s in report(shards).page["lengths"]] == [("all rows", m["counts"]["rows"])]


def test_preference_curves_are_drawn_whatever_their_names(quickstart, tmp_path) -> None:
    """A DPO/KTO/ORPO trainer logs rewards and margins beside the loss: every numeric series is drawn, one chart
    per family (accuracies apart, on their own 0-1 axis)."""
    run = quickstart
    folder = tmp_path / "train"
    folder.mkdir()
    trained = json.loads((run / "train" / "training_report.json").read_text())
    for k, point in enumerate(trained["loss_curve"]):
        point.update({"rewards/chosen": 0.1 * k, "rewards/rejected": -0.1 * k, "rewards/margins": 0.2 * k,
                      "rewards/accuracies": min(1.0, 0.5 + 0.1 * k), "logps/chosen": -40.0 + k, "note": "text",
                      "grad_norm": 1.0 / (k + 1)})
        if k % 3 == 2:
            point.update({"eval_loss": point["loss"] + 0.5, "eval_rewards/margins": 0.1 * k})
    (folder / "training_report.json").write_text(json.dumps(trained))
    done = report(folder)
    charts = {c["title"]: sorted(c["series"]) for c in done.page["training"]["charts"]}
    assert charts["rewards"] == ["eval_rewards/margins", "rewards/chosen", "rewards/margins", "rewards/rejected"]
    assert charts["rewards/accuracies"] == ["rewards/accuracies"] and charts["logps"] == ["logps/chosen"]
    assert charts["loss"] == ["eval_loss", "loss"] and charts["grad_norm"] == ["grad_norm"]
    assert "note" not in str(charts)
    page = Page((folder / "report.html").read_text())
    assert {"rewards", "rewards/accuracies", "logps", "loss", "learning rate"} <= set(page.charts)


def test_bad_targets_are_one_line_and_exit_2(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "other.json").write_text('{"a": 1}')
    cases = [(tmp_path / "empty", "nothing to report on"), (tmp_path / "list.json", "not a prep report"),
             (tmp_path / "other.json", "not a run.json"), (tmp_path / "nowhere", "does not exist")]
    for target, words in cases:
        refused_in_one_line(["report", str(target), "-o", str(tmp_path / "x.html")], words)
    assert not (tmp_path / "x.html").exists()


def test_another_tokenizer_is_refused_in_one_line(quickstart, tmp_path) -> None:
    qwen = fixture("tokenizers", "qwen2.5")
    refused_in_one_line(["report", str(quickstart / "pack"), "--tokenizer", str(qwen), "-o", str(tmp_path / "x.html")],
                        "not the one these shards were made with")
    assert not (tmp_path / "x.html").exists()


def refused_in_one_line(args: list[str], words: str) -> None:
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 2 and words in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


# ---------------------------------------------------------------- in a browser


@pytest.mark.slow
@needs_chromium
def test_the_page_opens_in_chromium_without_errors_or_requests(quickstart, tmp_path) -> None:
    run = quickstart
    page = run / "report.html"
    errors, urls, _ = open_in_chromium(page, tmp_path / "page.png", tmp_path / "profile")
    assert errors == []
    assert urls == [page.as_uri()]  # the page itself, and not one request more
    png = (tmp_path / "page.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000  # a drawn page, not a blank one


@needs_chromium
def test_sample_rows_show_their_images_as_thumbnails_in_chromium(tmp_path) -> None:
    """A shard folder whose rows hold images (test_media_shards builds it over the real Qwen2-VL tokenizer): the
    sample row shows the image as a thumbnail, inline, where its 391 pad tokens are, and the page asks for nothing."""
    from test_media_shards import load_tokenizer, three_rows, write_folder

    tok = load_tokenizer(fixture("processors/qwen2-vl"))
    rows, inside = three_rows(tmp_path, tok)
    folder = write_folder(tmp_path / "shards", tok, rows, [".", str(tmp_path / "pics")], inside=inside)
    made = report(folder, str(tmp_path / "media.html"))
    (part,) = made.page["samples"][0]["parts"]
    (medium,) = [r for r in part["runs"] if isinstance(r, dict)]
    assert medium["media"] == "<image 1: 640×480 → 391 tokens>" and medium["thumb"].startswith("data:image/jpeg;base64,")
    text = "".join(r[0] for r in part["runs"] if not isinstance(r, dict))
    assert "<|image_pad|>" not in text and text.endswith("A red square.<|im_end|>\n")
    html = (tmp_path / "media.html").read_text()
    assert "a.png" not in html and "file:" not in html  # the picture itself, not a link to it
    errors, urls, seen = open_in_chromium(
        tmp_path / "media.html", tmp_path / "media.png", tmp_path / "profile",
        "document.querySelector('.m').scrollIntoView(),"  # the screenshot shows the sample row
        "[...document.querySelectorAll('.m img')].map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt])")
    assert errors == [] and [u for u in urls if not u.startswith("data:")] == [(tmp_path / "media.html").as_uri()]
    assert seen == [[True, 96, 72, "<image 1: 640×480 → 391 tokens>"]]  # 640×480 made 96×72, drawn
