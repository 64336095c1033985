"""The page of `prep report`: HTML with its styles and SVG charts inline, no script, nothing fetched.

The charts are drawn here as plain SVG (bars and lines on linear axes, a `<title>` on each bar and
point for its exact value): a dozen of them weigh a few kilobytes, need no library at build time
(matplotlib is only in the train extra, and its SVG carries every glyph as a path) and no runtime
in the browser (Vega-Lite would inline about a megabyte of JavaScript), and the same figures give
the same bytes. A Content-Security-Policy forbids every fetch, so the page stays offline even if
something in it tried. Each figure the page states carries `data-figure` (its name) and
`data-value` (the number as it stands in run.json, the manifests or the reports), so a test can
read the page against its sources.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any
from urllib.parse import quote

from prep.checks.dataset_stats import LengthCounts

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_PALETTE = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#bc4c00", "#1b7c83", "#6e7781", "#bf3989")
_W, _H = 640, 220  # chart size in SVG units (the page scales them to its width)
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 56, 16, 14, 38

_STYLE = """
:root{--fg:#1f2328;--muted:#656d76;--line:#d0d7de;--bg:#f6f8fa;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;
--trained:#dafbe1;--trained-fg:#116329}
*{box-sizing:border-box}
body{font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);margin:0;background:#fff}
main{max-width:1040px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:16px 0 6px}
.sub{color:var(--muted);margin:0 0 16px;word-break:break-all}
nav a{margin-right:14px;color:#0969da;text-decoration:none}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;margin:16px 0}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 12px;background:var(--bg)}
.card b{display:block;font-size:20px;white-space:nowrap}.card span{color:var(--muted);font-size:12px}
table{border-collapse:collapse;width:100%;margin:8px 0;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--bg);font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.src td{color:var(--muted);font-size:12px}tr.src td:first-child{padding-left:24px}
.error,.rejected{color:var(--bad)}.warning,.altered{color:var(--warn)}.ok{color:var(--ok)}
.hint{color:var(--muted)}.where a{margin-right:8px;white-space:nowrap}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:16px}
figure{margin:0;border:1px solid var(--line);border-radius:8px;padding:8px}
figcaption{font-size:12px;color:var(--muted);margin-top:4px}
svg{width:100%;height:auto;display:block}svg text{font:11px system-ui,sans-serif;fill:#57606a}
.legend span{margin-right:12px;font-size:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
.sample{border:1px solid var(--line);border-radius:8px;margin:8px 0 16px;overflow:hidden}
.sample .head{background:var(--bg);padding:6px 10px;font-size:12px;color:var(--muted)}
.doc{border-top:1px dashed #8c959f;padding:0}
.doc .title{font-size:12px;color:var(--muted);padding:4px 10px;background:#fbfcfd}
.doc.mark .title{color:var(--fg);font-weight:600;background:#ddf4ff}
.text{white-space:pre-wrap;word-break:break-word;font:12px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
padding:6px 10px;margin:0;max-height:420px;overflow:auto}
.text .u{color:#8c959f}.text .t{background:var(--trained);color:var(--trained-fg)}
.text .side-rejected.t{background:#ffebe9;color:#a40e26}
.more{color:var(--muted);font-style:italic}
.m{display:inline-flex;align-items:center;gap:6px;background:#fbefff;border:1px solid #d8b9ff;border-radius:6px;padding:2px 6px;margin:2px 0;vertical-align:middle;white-space:nowrap}
.m img{max-width:96px;max-height:96px;border-radius:4px;display:block}
footer{color:var(--muted);font-size:12px;margin-top:40px}
.stop{border:1px solid #ff8182;background:#ffebe9;border-radius:8px;padding:8px 12px}
"""


def page(data: dict[str, Any]) -> str:
    """The whole page for the figures `prep.stages.report.gather` collected."""
    sections = [("rows", "Rows", _rows(data)), ("findings", "Findings and rejects", _findings(data)),
                ("lengths", "Token lengths", _lengths(data)), ("training", "Training", _training(data)),
                ("shards", "Shards", _shards(data)), ("samples", "Sample rows", _samples(data))]
    sections = [s for s in sections if s[2]]
    nav = "".join(f'<a href="#{key}">{escape(title)}</a>' for key, title, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{escape(title)}</h2>{html}</section>' for key, title, html in sections)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,">'
            f'<title>{escape(data["title"])}</title><style>{_STYLE}</style></head><body><main>'
            f'<h1>{escape(data["title"])}</h1><p class="sub">{escape(data["what"])}: {escape(data["target"])}</p>'
            f'<nav>{nav}</nav>{_stopped(data)}{_cards(data)}{body}'
            f'<footer>prep {escape(data["prep_version"])}: prep report {escape(data["target"])}</footer>'
            '</main></body></html>\n')


# ---------------------------------------------------------------- figures and numbers


def _fig(name: str, value: Any, text: str | None = None, tag: str = "span", cls: str = "") -> str:
    """A stated figure: its text, and its name and exact value for whoever reads the page by machine."""
    shown = _num(value) if text is None else text
    klass = f' class="{cls}"' if cls else ""
    return (f'<{tag}{klass} data-figure="{escape(name)}" data-value="{escape(_raw(value))}">{escape(shown)}'
            f'</{tag}>')


def _raw(value: Any) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _bytes(n: int | None) -> str:
    if not n:
        return "–"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def _reasons(counts: dict[str, int], name: str, cls: str) -> str:
    total = sum(counts.values())
    if not total:
        return _fig(name, 0)
    parts = ", ".join(f"{escape(code)} {_fig(f'{name}.{code}', n)}" for code, n in sorted(counts.items()))
    return f'<span class="{cls}">{_fig(name, total)}</span> <span class="hint">({parts})</span>'


def _dropped(counts: dict[str, int] | None, name: str) -> str:
    """Input fields a stage did not carry, by name: the rows that had them (design §3)."""
    if not counts:
        return ""
    parts = ", ".join(f"{escape(field)} {_fig(f'{name}.dropped_fields.{field}', n)}" for field, n in sorted(counts.items()))
    return f'<br><span class="warning">dropped fields:</span> <span class="hint">{parts}</span>'


def _stopped(data: dict[str, Any]) -> str:
    why = data.get("stopped")
    return f'<p class="stop"><b>The run stopped:</b> {escape(why)}</p>' if why else ""


def _cards(data: dict[str, Any]) -> str:
    cards = [("rows read", _fig("rows.read", data["rows"]["read"], tag="b")),
             ("rows at the end", _fig("rows.written", data["rows"]["written"], tag="b"))]
    rejected = sum(sum(s["rejected"].values()) for s in data["stages"])
    cards.append(("rows left out (every stage)", _fig("rows.rejected", rejected, tag="b",
                                                      cls="rejected" if rejected else "ok")))
    if data["shards"]:
        last = data["shards"][-1]
        cards.append(("tokens", _fig("tokens.total", last["tokens"], tag="b")))
        if last["trained_share"] is not None:
            cards.append(("trained tokens", _fig("tokens.trained_share", last["trained_share"],
                                                 _share(last["trained_share"]), tag="b")))
        if last["packing"].get("efficiency") is not None:
            cards.append(("packing efficiency", _fig("packing.efficiency", last["packing"]["efficiency"],
                                                     _share(last["packing"]["efficiency"]), tag="b")))
    t = data["training"]
    if t:
        if t["last_loss"] is not None:
            cards.append(("loss, last step", _fig("train.last_loss", t["last_loss"], f"{t['last_loss']:.4f}", tag="b")))
        cards.append(("tokens/s", _fig("train.tokens_per_s", t["tokens_per_s"], tag="b")))
        memory = t["peak_memory"]
        cards.append(("peak memory" + (" (GPU)" if str(memory.get("kind", "")).startswith("cuda") else " (RSS)"),
                      _fig("train.peak_memory_bytes", memory.get("bytes"), _bytes(memory.get("bytes")), tag="b")))
    return '<div class="cards">' + "".join(f'<div class="card">{v}<span>{escape(k)}</span></div>'
                                           for k, v in cards) + "</div>"


def _link(path: str, link: str | None, line: int | None = None) -> str:
    label = f"{path}:{line}" if line else path
    if not link:
        return escape(label)
    return f'<a href="{escape(quote(link))}" title="{escape(label)}">{escape(_short(label))}</a>'


def _short(path: str) -> str:
    parts = path.split("/")
    return path if len(parts) <= 3 else "…/" + "/".join(parts[-2:])


# ---------------------------------------------------------------- sections


def _rows(data: dict[str, Any]) -> str:
    if not data["stages"]:
        return ""
    head = ('<table><tr><th>stage</th><th>status</th><th class="n">read</th><th class="n">written</th>'
            '<th>rejected</th><th>altered</th><th>what it did</th></tr>')
    out = [head]
    for s in data["stages"]:
        name = f"stage.{s['stage']}"
        rejects = f' <a href="{escape(quote(s["rejects"]))}">rejects</a>' if s.get("rejects") else ""
        out.append(f'<tr><td><b>{escape(s["stage"])}</b></td><td>{escape(s["status"])}</td>'
                   f'<td class="n">{_fig(name + ".read", s["read"])}</td>'
                   f'<td class="n">{_fig(name + ".written", s["written"])}</td>'
                   f'<td>{_reasons(s["rejected"], name + ".rejected", "rejected")}{rejects}</td>'
                   f'<td>{_reasons(s["altered"], name + ".altered", "altered")}</td>'
                   f'<td>{escape(s.get("line") or "")}{_dropped(s.get("dropped"), name)}</td></tr>')
        if len(s["sources"]) > 1 or s["sources"] and s["sources"][0]["read"] != s["read"]:
            for src in s["sources"]:
                key = f"source.{s['stage']}.{src['path']}"
                out.append(f'<tr class="src"><td colspan="2">{_link(src["path"], src["link"])}</td>'
                           f'<td class="n">{_fig(key + ".read", src["read"])}</td>'
                           f'<td class="n">{_fig(key + ".written", src["written"])}</td>'
                           f'<td>{_reasons(src["rejected"], key + ".rejected", "rejected")}</td>'
                           f'<td>{_reasons(src["altered"], key + ".altered", "altered")}</td><td></td></tr>')
    out.append("</table>")
    out.append('<p class="hint">Every stage keeps rows read = rows written + rows rejected; altered rows (cut, '
               'turns dropped) are written and counted. Source rows are the files each stage read.</p>')
    return "".join(out)


def _findings(data: dict[str, Any]) -> str:
    if not data["findings"]:
        return '<p class="ok">No findings and no rejected rows.</p>' if data["stages"] else ""
    out = ['<table><tr><th>stage</th><th>code</th><th>severity</th><th class="n">rows</th>'
           '<th>first finding / what to do</th><th>where (first ones)</th></tr>']
    for f in data["findings"]:
        where = "".join(_link(e["file"], e["link"], e["line"]) for e in f["examples"])
        message = f"{f['path']}: {f['message']}" if f["path"] not in ("", "$") else f["message"]
        count = _fig(f"finding.{f['stage']}.{f['code']}", f["count"])
        out.append(f'<tr><td>{escape(f["stage"])}</td><td><b>{escape(f["code"])}</b></td>'
                   f'<td class="{escape(f["severity"])}">{escape(f["severity"])}</td>'
                   f'<td class="n">{count}</td>'
                   f'<td>{escape(message)}<br><span class="hint">{escape(f["hint"])}</span></td>'
                   f'<td class="where">{where}</td></tr>')
    return "".join(out) + "</table>"


def _lengths(data: dict[str, Any]) -> str:
    if not data["lengths"]:
        return ""
    figures = []
    for s in data["lengths"]:
        before, after, max_len = s["before"], s["after"], s["max_len"]
        key = f"lengths.{s['path']}"
        series = ([("before max_len: every row tokenized", before, "#afb8c1")] if before else []) + \
            [("after: the rows written", after, _PALETTE[0])]
        svg = _histogram(series, max_len, "tokens per row", "rows")
        caption = [f"{_fig(key + '.after_rows', after.rows)} rows written"]
        if before:
            caption.insert(0, f"{_fig(key + '.before_rows', before.rows)} rows tokenized")
        if max_len:
            caption.append(f"max_len {_fig(key + '.max_len', max_len)}, overflow: {escape(s['policy'] or 'drop')}")
        if s["over"] is not None:
            caption.append(f"{_fig(key + '.over_max_len', s['over'])} over max_len")
        origin = ", ".join(f'<span title="{escape(f)}">{escape(f.rsplit("/", 1)[-1])}</span> ({escape(fmt)})'
                           for f, fmt in data["origin"].items())
        made_of = f'<p class="hint">converted from {origin}</p>' if origin and s["label"] != s["path"] else ""
        figures.append(f'<figure><h3>{escape(s["label"])}</h3>{made_of}{svg}{_legend(series)}'
                       f'<figcaption>{"; ".join(caption)}</figcaption></figure>')
    return '<div class="charts">' + "".join(figures) + "</div>"


def _shards(data: dict[str, Any]) -> str:
    out = []
    for s in data["shards"]:
        key = f"shards.{s['stage']}"
        packing = s["packing"]
        strategy = packing.get("strategy", "none")
        rows = [("kind", escape(s["kind"])), ("rows", _fig(key + ".rows", s["rows"])),
                ("documents", _fig(key + ".documents", s["documents"])), ("tokens", _fig(key + ".tokens", s["tokens"]))]
        if s["loss_tokens"] is not None:
            rows.append(("trained tokens", f'{_fig(key + ".loss_tokens", s["loss_tokens"])} '
                                           f'({_fig(key + ".trained_share", s["trained_share"], _share(s["trained_share"]))})'))
        rows.append(("packing", escape(strategy) + (f' into rows of {_fig(key + ".max_len", s["max_len"])} tokens, '
                                                   f'efficiency {_fig(key + ".efficiency", packing.get("efficiency"), _share(packing.get("efficiency")))}'
                                                   if strategy != "none" else "")))
        rows.append(("template, train_on", f'{escape(str(s["template"]))}, {escape(str(s["train_on"]))}'))
        rows.append(("tokenizer", escape(str(s["tokenizer"]))))
        table = "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"
        chart = ""
        if s["row_fill"] and strategy != "none":
            fill = [("rows", {lo: n for lo, _, n in s["row_fill"]}, _PALETTE[0])]
            chart = (f'<figure>{_bars([lo for lo, _, _ in s["row_fill"]] + [100], fill, "row fill (% of max_len)", "rows", "%")}'
                     f'<figcaption>how full the packed rows are: each bar counts the rows whose tokens fill that share of '
                     f'max_len</figcaption></figure>')
        out.append(f'<h3>{escape(s["stage"])}: {escape(s["folder"])}</h3><div class="charts"><div>{table}</div>{chart}</div>')
    return "".join(out)


def _samples(data: dict[str, Any]) -> str:
    out = []
    for s in data["samples"]:
        parts = []
        for p in s["parts"]:
            side = f" side-{p['side']}" if p.get("side") else ""
            text = "".join(_medium(r) if isinstance(r, dict) else
                           f'<span class="{"t" if r[1] else "u"}{side}">{escape(r[0])}</span>' for r in p["runs"])
            more = f'<span class="more"> … {p["hidden"]:,} more tokens</span>' if p["hidden"] else ""
            mark = " mark" if p["mark"] else ""
            where = " ← the first document of this source" if p["mark"] else ""
            parts.append(f'<div class="doc{mark}"><div class="title">{escape(p["title"])}: {p["tokens"]:,} tokens, '
                         f'{p["trained"]:,} trained{where}</div><pre class="text">{text}{more}</pre></div>')
        label = f", label {str(s['label']).lower()}" if "label" in s else ""
        out.append(f'<div class="sample"><div class="head"><b>{escape(s["source"])}</b>: row {s["row"]:,} of the '
                   f'shards, {s["tokens"]:,} tokens, {len(s["parts"])} part{"s" if len(s["parts"]) != 1 else ""}'
                   f'{label}</div>{"".join(parts)}</div>')
    if not out:
        return ""
    legend = ('<p class="legend"><span><i style="background:#dafbe1"></i>trained (labels = ids)</span>'
              '<span><i style="background:#eaeef2"></i>not trained (label -100)</span>'
              '<span>dashed lines: document boundaries (positions restart, no attention across)</span>'
              + ('<span><i style="background:#fbefff"></i>a medium in place of its tokens (never trained)</span>'
                 if any(isinstance(r, dict) for s in data["samples"] for p in s["parts"] for r in p["runs"]) else "")
              + '</p>')
    return legend + "".join(out)


def _medium(piece: dict[str, Any]) -> str:
    """A medium in place of its tokens: its thumbnail (inline, a data URL) and its label."""
    thumb = f'<img src="{escape(piece["thumb"])}" alt="{escape(piece["media"])}">' if piece.get("thumb") else ""
    return f'<span class="m m-{escape(piece["type"])}">{thumb}{escape(piece["media"])}</span>'


def _training(data: dict[str, Any]) -> str:
    t = data["training"]
    if not t:
        return ""
    memory = t["peak_memory"]
    model = str(t["model"])
    rows = [("method", escape(str(t["method"]))),
            ("model", f'<span title="{escape(model)}">{escape(model.rstrip("/").rsplit("/", 1)[-1])}</span>'),
            ("steps", _fig("train.steps", t["steps"])), ("runtime", f'{_fig("train.runtime_s", t["runtime_s"])} s'),
            ("tokens trained on", _fig("train.tokens", t["tokens"])),
            ("tokens with loss", _fig("train.trained_tokens", t["trained_tokens"])),
            ("tokens/s", _fig("train.tokens_per_s", t["tokens_per_s"])),
            ("loss, first → last", f'{_fig("train.first_loss", t["first_loss"])} → {_fig("train.last_loss", t["last_loss"])}'),
            ("peak memory", f'{_fig("train.peak_memory", memory.get("bytes"), _bytes(memory.get("bytes")))} '
                            f'({escape(str(memory.get("kind", "")))})'),
            ("batching", escape(str(t["batching"])))]
    if t["eval_loss"] is not None:
        rows.insert(8, ("eval loss", _fig("train.eval_loss", t["eval_loss"])))
    table = "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"
    charts = []
    for chart in t["charts"]:
        series = [(name, points, _PALETTE[k % len(_PALETTE)]) for k, (name, points) in enumerate(chart["series"].items())]
        charts.append(f'<figure data-chart="{escape(chart["title"])}"><h3>{escape(chart["title"])}</h3>'
                      f'{_lines(series, "step", chart["title"])}{_legend(series)}</figure>')
    return table + '<div class="charts">' + "".join(charts) + "</div>"


def _legend(series: list[tuple[str, Any, str]]) -> str:
    return '<p class="legend">' + "".join(f'<span><i style="background:{color}"></i>{escape(name)}</span>'
                                          for name, _, color in series) + "</p>"


# ---------------------------------------------------------------- SVG


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten)."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    return [first + k * step for k in range(int(math.ceil((hi - first) / step)) + 1)]


def _tick(v: float) -> str:
    if v == int(v) and abs(v) < 1e6:
        return f"{int(v):,}"
    return f"{v:.3g}"


def _frame(xdomain: tuple[float, float], xs: list[float], ys: list[float], xlabel: str,
           ylabel: str) -> tuple[str, Any, Any]:
    """Axes over `xdomain` and ys[0]..ys[-1], ticks at `xs` and `ys`, and the functions from data to SVG
    coordinates."""
    (x0, x1), y0, y1 = xdomain, ys[0], ys[-1]
    pw, ph = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B

    def x(v: float) -> float:
        return _PAD_L + (v - x0) / ((x1 - x0) or 1) * pw

    def y(v: float) -> float:
        return _PAD_T + ph - (v - y0) / ((y1 - y0) or 1) * ph

    parts = [f'<line x1="{_PAD_L}" y1="{_PAD_T + ph}" x2="{_W - _PAD_R}" y2="{_PAD_T + ph}" stroke="#8c959f"/>']
    for v in ys:
        parts.append(f'<line x1="{_PAD_L}" y1="{y(v):.1f}" x2="{_W - _PAD_R}" y2="{y(v):.1f}" stroke="#eaeef2"/>'
                     f'<text x="{_PAD_L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{_tick(v)}</text>')
    for v in xs:
        if x0 <= v <= x1:
            parts.append(f'<text x="{x(v):.1f}" y="{_PAD_T + ph + 15}" text-anchor="middle">{_tick(v)}</text>')
    parts.append(f'<text x="{_PAD_L + pw / 2:.1f}" y="{_H - 4}" text-anchor="middle">{escape(xlabel)}</text>'
                 f'<text x="12" y="{_PAD_T + ph / 2:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {_PAD_T + ph / 2:.1f})">{escape(ylabel)}</text>')
    return "".join(parts), x, y


def _svg(body: str, label: str) -> str:
    return (f'<svg viewBox="0 0 {_W} {_H}" role="img" aria-label="{escape(label)}" '
            f'xmlns="http://www.w3.org/2000/svg">{body}</svg>')


def _histogram(series: list[tuple[str, LengthCounts, str]], max_len: int | None, xlabel: str, ylabel: str) -> str:
    """Length histograms on one axis (from 0 when max_len is known, so the limit shows where rows stand),
    re-binned to one power-of-two width of at most 64 bins; max_len a dashed red line."""
    counts = [c for _, c, _ in series if c.rows]
    if not counts:
        return '<p class="hint">no rows</p>'
    width = max(c.width for c in counts)
    starts = [s for c in counts for s in c.counts]
    lo = 0 if max_len else min(starts)
    hi = max(max(starts) + width, (max_len or 0) + 1)
    while (hi - lo) / width > 64:
        width *= 2
    lo -= lo % width
    binned = []
    for name, c, color in series:
        copy = LengthCounts(c.width, dict(c.counts))
        copy.widen(width)
        binned.append((name, dict(copy.counts), color))
    edges = list(range(lo, hi + width, width))
    return _bars(edges, binned, xlabel, ylabel, marker=max_len)


def _bars(edges: list[int], series: list[tuple[str, dict[int, int], str]], xlabel: str, ylabel: str,
          unit: str = "", marker: int | None = None) -> str:
    """Bars over `edges` (bin k is [edges[k], edges[k+1])), the first series wide and the others inset on
    top of it; each bar titled with its range and count."""
    top = max((n for _, counts, _ in series for n in counts.values()), default=1)
    frame, x, y = _frame((edges[0], edges[-1]), _ticks(edges[0], edges[-1], 6), _ticks(0, top, 4), xlabel, ylabel)
    bars = []
    for k, (name, counts, color) in enumerate(series):
        inset = 0.0 if k == 0 else 0.22
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            n = counts.get(a, 0)
            if not n:
                continue
            left, right = x(a), x(b)
            w = max((right - left) * (1 - 2 * inset) - 1, 0.8)
            bars.append(f'<rect x="{left + (right - left) * inset + 0.5:.1f}" y="{y(n):.1f}" width="{w:.1f}" '
                        f'height="{y(0) - y(n):.1f}" fill="{color}"><title>{a:,}–{b - 1:,}{unit}: {n:,} '
                        f'({escape(name)})</title></rect>')
    mark = ""
    if marker:
        mx = x(marker)
        mark = (f'<line x1="{mx:.1f}" y1="{_PAD_T}" x2="{mx:.1f}" y2="{y(0):.1f}" stroke="#cf222e" '
                f'stroke-dasharray="4 3" stroke-width="1.5"/><text x="{mx - 4:.1f}" y="{_PAD_T + 10}" '
                f'text-anchor="end" fill="#cf222e">max_len {marker:,}</text>')
    return _svg(frame + "".join(bars) + mark, f"{ylabel} by {xlabel}")


def _lines(series: list[tuple[str, list[tuple[float, float]], str]], xlabel: str, ylabel: str) -> str:
    """Line chart of (step, value) series; points marked where there are few (evaluation losses)."""
    xs_all = [p[0] for _, pts, _ in series for p in pts]
    ys_all = [p[1] for _, pts, _ in series for p in pts]
    if not xs_all:
        return '<p class="hint">no points</p>'
    lo, hi = min(ys_all), max(ys_all)
    pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1
    if lo >= 0:  # a rate or a loss: no axis below zero
        pad = min(pad, lo) if lo > 0 else 0
    domain = (min(xs_all), max(xs_all))
    frame, x, y = _frame(domain, _ticks(*domain, 6), _ticks(lo - pad, hi + pad, 4), xlabel, ylabel)
    out = []
    for name, pts, color in series:
        path = " ".join(f"{'M' if k == 0 else 'L'}{x(a):.1f},{y(b):.1f}" for k, (a, b) in enumerate(pts))
        out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="1.6"/>')
        r = 3 if len(pts) <= 30 else 1.5
        out += [f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="{r}" fill="{color}"><title>step {_tick(a)}: '
                f'{escape(name)} {b:.6g}</title></circle>' for a, b in pts]
    return _svg(frame + "".join(out), f"{ylabel} by {xlabel}")
