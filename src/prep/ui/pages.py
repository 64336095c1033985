"""The five pages, rendered here: the frame, the controls, and the recipe form built from the options table (each
field with its option's type, bounds, choices and help, as the CLI has them). What a page shows after an action
is drawn by static/ui.js from the JSON the action returns."""

from __future__ import annotations

from html import escape

from prep import __version__
from prep.core.options import READABLE, TEMPLATES, TRAIN_ON, YES_NO, Option, option
from prep.ui import actions
from prep.ui.root import Root

PAGES = {"data": "Data", "template": "Template", "recipe": "Recipe", "run": "Run", "runs": "Runs"}


def render(name: str, root: Root) -> str:
    body = {"data": _data, "template": _template, "recipe": _recipe, "run": _run, "runs": _runs}[name]()
    nav = "".join(f'<a href="/{p}"{" class=on" if p == name else ""}>{title}</a>' for p, title in PAGES.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>prep ui: {PAGES[name]}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/ui.css"></head>
<body data-page="{name}"><header><b>prep</b> {nav}<span class="root" title="ROOT: prep ui reads and writes only here">
{escape(str(root.folder))}</span><span class="ver">{__version__}</span></header>
<main>{body}</main><script src="/static/ui.js"></script></body></html>
"""


def _select(name: str, choices: tuple[str, ...], first: str | None = None, chosen: str = "") -> str:
    items = ([f'<option value="">{escape(first)}</option>'] if first is not None else []) + [
        f'<option{" selected" if c == chosen else ""}>{escape(c)}</option>' for c in choices]
    return f'<select id="{name}" name="{name}">{"".join(items)}</select>'


def _data() -> str:
    return f"""<h1>Data</h1>
<p class="what">A file under ROOT: its format, rows, the fields read and dropped, and every finding of
<code>prep validate</code>. Click a finding (or a row number) to see the row as read and as prep's record.</p>
<div class="bar"><label>file <select id="file" data-list="data"></select></label>
<label>format {_select("format", ("auto", *READABLE))}</label>
<button id="check">Check</button>
<label class="up">upload into ROOT/uploads/ <input type="file" id="upload"></label></div>
<div id="out"></div><div id="row"></div>"""


def _template() -> str:
    return f"""<h1>Template</h1>
<p class="what">A row rendered and tokenized as <code>prep tokenize</code> makes it, shown as
<code>prep inspect</code> shows it: <span class="t">trained tokens</span>, <span class="u">the rest</span>,
documents and media marked. Change the policy and see the masks change.</p>
<div class="bar"><label>file <select id="file" data-list="data"></select></label>
<label>format {_select("format", ("auto", *READABLE))}</label>
<label>tokenizer <select id="tokenizer" data-list="tokenizers"></select></label>
<label>template {_select("template", TEMPLATES, "the tokenizer's own")}</label>
<label>train on {_select("train_on", TRAIN_ON, chosen="auto")}</label>
<label>reasoning trained {_select("train_on_reasoning", YES_NO, chosen="yes")}</label>
<label title="{escape(option('tokenize', 'template_kwargs').help)}">template arguments
<input id="template_kwargs" placeholder="enable_thinking=false"></label>
<label>max_len <input id="max_len" type="number" min="2" placeholder="none"></label>
<label>row <input id="row" type="number" min="0" value="0"></label>
<button id="render">Render</button></div>
<div id="out"></div>"""


def _field(section: str, o: Option) -> str:
    """One option of a recipe section as a form field: empty is "not given" (the table's default applies)."""
    name = f"{section}.{o.name}"
    default = "" if o.default in (None, ()) else f"default {o.default}".replace("True", "true").replace(
        "False", "false")
    tip = escape(f"{o.help} Accepts {o.accepts()}." + (f" ({default})" if default else ""))
    if o.multiple:
        control = f'<textarea name="{name}" rows="2" placeholder="one per line"></textarea>'
    elif o.type is bool:
        control = _select(name, ("true", "false"), default or "")
    elif o.choices:
        control = _select(name, o.choices, default or "")
    elif o.type in (int, float):
        bounds = "".join(f' {k}="{v}"' for k, v, is_open in (("min", o.low, o.low_open), ("max", o.high, o.high_open))
                         if v is not None and not is_open)
        step = ' step="any"' if o.type is float else ""
        control = f'<input name="{name}" type="number"{bounds}{step} placeholder="{escape(default)}">'
    else:
        control = f'<input name="{name}" placeholder="{escape(default)}">'
    required = " req" if o.required else ""
    return f'<label class="f{required}" title="{tip}"><span>{o.name}</span>{control}</label>'


def _recipe() -> str:
    sections = []
    for section, options in actions.form():
        fields = "".join(_field(section, o) for o in options)
        on = " checked" if section == "inputs" else ""
        sections.append(f'<fieldset data-section="{section}"><legend><label><input type="checkbox" class="use"{on}>'
                        f'{section}</label></legend><div class="fields">{fields}</div></fieldset>')
    return f"""<h1>Recipe</h1>
<p class="what">Each stage's options, from prep's options table (the same names, bounds and messages as the CLI
and <code>recipes/*.yaml</code>). Tick a stage to use it; an empty field takes the default. Paths are under
ROOT. Saving checks the recipe as <code>prep run --dry-run</code> does.</p>
<div class="bar"><label>load <select id="load" data-list="recipes" data-empty="a new recipe"></select></label>
<label>name <input id="name" placeholder="quickstart"></label>
<label>output <input id="output" placeholder="runs/NAME"></label>
<label>save as <input id="path" value="recipes/ui.yaml"></label><button id="save">Check and save</button></div>
<div class="split"><form id="form">{"".join(sections)}</form>
<div class="side"><h2>YAML</h2><pre id="yaml"></pre><div id="msg"></div><div id="plan"></div></div></div>"""


def _run() -> str:
    return """<h1>Run</h1>
<p class="what"><code>prep run RECIPE</code>: each stage live; Stop ends it cleanly (the stage under way leaves
nothing half-written, the stages before keep their outputs, and a new run skips them).</p>
<div class="bar"><label>recipe <select id="recipe" data-list="recipes"></select></label>
<button id="start">Start</button><button id="stop" disabled>Stop</button><span id="state"></span></div>
<div id="out"></div>"""


def _runs() -> str:
    return """<h1>Runs</h1>
<p class="what">Every run folder under ROOT (one holding <code>run.json</code>). Tick two to set their figures
side by side.</p><div id="out"></div><div id="compare"></div>"""
