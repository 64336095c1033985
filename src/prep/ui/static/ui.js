// prep ui: the pages' few scripts, plain JavaScript served by prep (no framework, no build step, nothing fetched
// from elsewhere). Each action is one JSON call to the server, which runs a prep verb; this draws the answer.
"use strict";
const $ = (selector, el = document) => el.querySelector(selector);
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
const num = (n) => (typeof n === "number" ? n.toLocaleString("en") : esc(n ?? ""));

async function api(url, body, method) {
  const options = body === undefined ? { method: method || "GET" }
    : { method: method || "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(url, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function fail(el, error) { el.innerHTML = `<p class="err">${esc(error.message)}</p>`; }

function table(head, rows, id) {
  return `<table${id ? ` id="${id}"` : ""}><tr>${head.map((h) => `<th>${esc(h)}</th>`).join("")}</tr>` +
    rows.map((r) => `<tr>${r.map((c) => (typeof c === "number" ? `<td class="n">${num(c)}</td>` : `<td>${c ?? ""}</td>`)).join("")}</tr>`).join("") +
    "</table>";
}

async function fillLists() {
  const files = await api("/api/files");
  for (const sel of document.querySelectorAll("select[data-list]")) {
    const items = files[sel.dataset.list], keep = sel.value;
    sel.innerHTML = (sel.dataset.empty ? `<option value="">${esc(sel.dataset.empty)}</option>` : "") +
      items.map((f) => `<option>${esc(f)}</option>`).join("");
    if (keep && items.includes(keep)) sel.value = keep;
  }
  return files;
}

function debounce(fn, ms) {
  let timer;
  const call = () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
  call.cancel = () => clearTimeout(timer);
  return call;
}

const pages = {};

// ---------------------------------------------------------------- Data

pages.data = async () => {
  await fillLists();
  const file = $("#file"), format = $("#format"), out = $("#out"), shown = $("#row");
  const showRow = async (where) => {
    shown.innerHTML = '<p class="busy">reading…</p>';
    try {
      const q = new URLSearchParams({ file: file.value, format: format.value, ...where });
      const r = await api(`/api/row?${q}`);
      const record = r.record !== null ? JSON.stringify(r.record, null, 2)
        : "rejected:\n" + r.findings.map((f) => `${f.path} ${f.code}: ${f.message}${f.hint ? ` (${f.hint})` : ""}`).join("\n");
      shown.innerHTML = `<h2 id="rowtitle">${esc(r.file)} row ${r.row} (line ${r.line})</h2><div class="pair">` +
        `<div><b>as read</b><pre id="raw">${esc(JSON.stringify(r.raw, null, 2))}</pre></div>` +
        `<div><b>prep's record</b><pre id="record">${esc(record)}</pre></div></div>`;
    } catch (e) { fail(shown, e); }
  };
  $("#check").onclick = async () => {
    out.innerHTML = '<p class="busy">prep validate…</p>';
    shown.innerHTML = "";
    try {
      const d = await api("/api/data", { file: file.value, format: format.value });
      const f = d.files[0], s = d.summary, fields = d.fields;
      const codes = Object.entries(s.findings_by_code);
      let html = `<h2>${esc(d.file)}</h2><p>format <b id="fmt">${esc(f.format)}</b> (${esc(f.container)} file, ` +
        `${num(f.bytes)} bytes)</p><p id="counts">rows read ${num(s.rows_read)}, accepted ${num(s.rows_accepted)}, ` +
        `rejected ${num(s.rows_rejected)}; <b>${num(s.errors)}</b> errors, <b>${num(s.warnings)}</b> warnings</p>`;
      const dropped = Object.entries(fields.dropped_fields);
      html += `<h2>Fields</h2><p id="fields">records read ${num(fields.read)} = written ${num(fields.written)} + rejected ` +
        `${num(Object.values(fields.rejected).reduce((a, b) => a + b, 0))}; ` +
        (dropped.length ? "fields not carried (rows that had them): " + dropped.map(([k, n]) => `<code>${esc(k)}</code> ${num(n)}`).join(", ")
          : "every field mapped or carried") + "</p>";
      html += "<h2>Findings by code</h2>" + (codes.length ? table(["code", "severity", "rows"],
        codes.map(([code, c]) => [`<code>${esc(code)}</code>`, `<span class="${esc(c.severity)}">${esc(c.severity)}</span>`, c.count]), "codes")
        : '<p id="codes" class="ok">no findings</p>');
      if (d.findings.length) {
        html += "<h2>Findings</h2>" + table(["line", "path", "code", "message"], d.findings.map((x) => [
          `<button class="link" data-line="${x.line}">${x.line}</button>`, `<code>${esc(x.path)}</code>`,
          `<span class="${esc(x.severity)}">${esc(x.code)}</span>`, esc(x.message) + (x.hint ? ` <i>(${esc(x.hint)})</i>` : "")]), "findings");
      }
      const rows = Math.min(s.rows_read, 30);
      html += `<h2>Rows</h2><p id="rows">${Array.from({ length: rows }, (_, i) => `<button class="link" data-row="${i + 1}">${i + 1}</button>`).join(" ")}` +
        `${s.rows_read > rows ? ` … (${num(s.rows_read)} in all)` : ""}</p>`;
      out.innerHTML = html;
      for (const b of out.querySelectorAll("button[data-line]")) b.onclick = () => showRow({ line: b.dataset.line });
      for (const b of out.querySelectorAll("button[data-row]")) b.onclick = () => showRow({ row: b.dataset.row });
    } catch (e) { fail(out, e); }
  };
  $("#upload").onchange = async (event) => {
    const picked = event.target.files[0];
    if (!picked) return;
    out.innerHTML = '<p class="busy">uploading…</p>';
    try {
      const r = await upload(`uploads/${picked.name}`, picked);
      await fillLists();
      file.value = r.saved;
      out.innerHTML = `<p class="ok">saved ${esc(r.saved)} (${num(r.bytes)} bytes)</p>`;
    } catch (e) { fail(out, e); }
  };
};

// the upload goes as the raw body (a PUT of the file itself): no multipart parser on the server
const upload = async (path, blob) => {
  const response = await fetch(`/api/upload?${new URLSearchParams({ path })}`, { method: "PUT", body: blob });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error);
  return data;
};

// ---------------------------------------------------------------- Template

function drawRuns(runs) {
  return runs.map((r) => (Array.isArray(r) ? `<span class="${r[1] ? "t" : "u"}">${esc(r[0])}</span>`
    : `<span class="m">${r.thumb ? `<img src="${r.thumb}" alt="${esc(r.media)}">` : ""}${esc(r.media)}</span>`)).join("");
}

pages.template = async () => {
  await fillLists();
  const out = $("#out");
  const render = async () => {
    out.innerHTML = '<p class="busy">prep tokenize…</p>';
    const kwargs = $("#template_kwargs").value.split(/[;\n]/).map((x) => x.trim()).filter(Boolean);
    const values = { file: $("#file").value, format: $("#format").value, tokenizer: $("#tokenizer").value,
      template: $("#template").value, train_on: $("#train_on").value, train_on_reasoning: $("#train_on_reasoning").value,
      template_kwargs: kwargs, row: Number($("#row").value || 0) };
    if ($("#max_len").value) values.max_len = Number($("#max_len").value);
    try {
      const d = await api("/api/template", values);
      let html = `<p id="summary">${esc(d.summary)}: ${esc(d.kind)} shards, ${num(d.rows)} rows, ${num(d.tokens.total)} tokens, ` +
        `<b>${num(d.tokens.loss)}</b> trained (template ${esc(d.template?.name ?? "")})</p>`;
      if (d.sample) {
        html += `<h2>row ${d.sample.row}: ${num(d.sample.tokens)} tokens</h2>` + d.sample.parts.map((p) =>
          `<div class="doc"><div class="dt">${esc(p.title)}: ${num(p.tokens)} tokens, ${num(p.trained)} trained` +
          `${p.hidden ? `, the last ${num(p.hidden)} not shown` : ""}</div><pre class="runs">${drawRuns(p.runs)}</pre></div>`).join("");
      }
      if (d.rejects.length) {
        html += "<h2>Rejected rows</h2>" + table(["row", "reason"], d.rejects.map((r) => [esc(r.id ?? r.row_number), esc(r.reason ?? "")]));
      }
      out.innerHTML = html;
      out.dataset.done = "1";
    } catch (e) { fail(out, e); }
  };
  $("#render").onclick = render;
  for (const id of ["train_on", "train_on_reasoning", "template", "row"]) {
    $(`#${id}`).onchange = () => { if (out.dataset.done) render(); };
  }
};

// ---------------------------------------------------------------- Recipe

pages.recipe = async () => {
  await fillLists();
  const form = $("#form");
  const collect = () => {
    const sections = {};
    for (const fs of form.querySelectorAll("fieldset")) {
      if (!fs.querySelector(".use").checked) continue;
      const values = {};
      for (const el of fs.querySelectorAll("[name]")) {
        const key = el.name.split(".")[1];
        if (el.tagName === "TEXTAREA") {
          const lines = el.value.split("\n").map((x) => x.trim()).filter(Boolean);
          if (lines.length) values[key] = lines;
        } else if (el.value.trim() !== "") values[key] = el.value;
      }
      sections[fs.dataset.section] = values;
    }
    return { name: $("#name").value.trim(), output: $("#output").value.trim(), sections };
  };
  const shade = () => { for (const fs of form.querySelectorAll("fieldset")) fs.classList.toggle("off", !fs.querySelector(".use").checked); };
  let latest = 0;  // only the newest check draws: a preview still on its way must not hide a save
  const check = async (write) => {
    const mine = ++latest;
    try {
      const d = await api("/api/recipe/save", { path: $("#path").value, form: collect(), write });
      if (mine !== latest) return;
      $("#yaml").textContent = d.yaml;
      $("#msg").innerHTML = d.error ? `<p class="err" id="problem">${esc(d.error)}</p>`
        : `<p class="ok" id="saved">${d.saved ? `saved ${esc(d.saved)}` : "a good recipe (not saved yet)"}</p>`;
      $("#plan").innerHTML = d.plan ? "<h2>prep run --dry-run</h2>" + table(["stage", "would", "key"],
        d.plan.map((s) => [esc(s.stage), esc(s.would), `<code>${esc(s.key.slice(0, 16))}</code>`]), "plankeys") : "";
      if (d.saved) {
        await fillLists();
        $("#plan").innerHTML += `<p><a id="torun" href="/run?${new URLSearchParams({ recipe: d.saved })}">run it</a></p>`;
      }
    } catch (e) { fail($("#msg"), e); }
  };
  const preview = debounce(() => check(false), 300);
  shade();
  form.addEventListener("input", preview);
  form.addEventListener("change", () => { shade(); preview(); });
  for (const id of ["name", "output", "path"]) $(`#${id}`).addEventListener("input", preview);
  $("#save").onclick = () => { preview.cancel(); check(true); };
  $("#load").onchange = async () => {
    const path = $("#load").value;
    if (!path) return;
    try {
      const d = await api(`/api/recipe?${new URLSearchParams({ path })}`);
      $("#name").value = d.name;
      $("#output").value = d.output;
      for (const fs of form.querySelectorAll("fieldset")) {
        const values = d.sections[fs.dataset.section];
        fs.querySelector(".use").checked = values !== undefined;
        for (const el of fs.querySelectorAll("[name]")) {
          const v = values?.[el.name.split(".")[1]];
          el.value = v === undefined || v === null ? "" : Array.isArray(v) ? v.join("\n") : String(v);
        }
      }
      shade();
      preview();
    } catch (e) { fail($("#msg"), e); }
  };
  preview();
};

// ---------------------------------------------------------------- Run

pages.run = async () => {
  await fillLists();
  const wanted = new URLSearchParams(location.search).get("recipe");
  if (wanted) $("#recipe").value = wanted;
  const out = $("#out");
  let polling = false;
  const draw = (s) => {
    const live = s.state === "running" || s.state === "stopping";
    $("#start").disabled = live;
    $("#stop").disabled = s.state !== "running";
    $("#state").innerHTML = s.state === "idle" ? "" : `<span id="runstate" class="st ${esc(s.state)}">${esc(s.state)}</span> ${esc(s.recipe)}` +
      (s.exit_code !== null && s.exit_code !== undefined ? ` (exit ${s.exit_code})` : "");
    if (s.state === "idle") return;
    let html = table(["stage", "status", "progress / result"], s.stages.map((x) => [esc(x.stage),
      `<span class="st ${esc(x.status)}">${esc(x.status)}</span>`, esc(x.line)]), "stages");
    if (s.run) {
      const r = s.run;
      html += `<h2>Summary: ${num(r.seconds)} s</h2>` + table(["stage", "status", "read", "written", "rejected", "result"],
        r.stages.filter((x) => !["run", "skip"].includes(x.status)).map((x) => [esc(x.name), `<span class="st ${esc(x.status)}">${esc(x.status)}</span>`,
          x.summary.read ?? "", x.summary.written ?? x.summary.accepted ?? "", x.summary.rejected ?? "", esc(x.summary.line)]), "summary");
      if (r.failed || r.stopped) html += `<p class="err">${esc(r.failed || r.stopped)}</p>`;
    }
    if (s.report) html += `<p><a id="report" href="/files/${s.report.split("/").map(encodeURIComponent).join("/")}" target="_blank">open report.html</a> (${esc(s.report)})</p>`;
    if (s.log) html += `<details><summary>prep run's output</summary><pre>${esc(s.log)}</pre></details>`;
    out.innerHTML = html;
  };
  const poll = async () => {
    if (polling) return;
    polling = true;
    try {
      for (;;) {
        const s = await api("/api/run/status");
        draw(s);
        if (s.state !== "running" && s.state !== "stopping") break;
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    } catch (e) { fail(out, e); }
    polling = false;
  };
  $("#start").onclick = async () => {
    try { draw(await api("/api/run/start", { recipe: $("#recipe").value })); poll(); } catch (e) { fail(out, e); }
  };
  $("#stop").onclick = async () => { try { draw(await api("/api/run/stop", {})); } catch (e) { fail(out, e); } };
  poll();
};

// ---------------------------------------------------------------- Runs

const FIGURES = ["status", "read", "written", "accepted", "rejected", "errors", "warnings", "tokens", "rows",
  "efficiency", "steps", "first_loss", "last_loss", "tokens_per_s"];

pages.runs = async () => {
  const out = $("#out"), compare = $("#compare");
  let runs;
  try { runs = await api("/api/runs"); } catch (e) { fail(out, e); return; }
  if (!runs.length) { out.innerHTML = "<p>No run folders under ROOT yet: start one on the Run page.</p>"; return; }
  out.innerHTML = table(["", "folder", "name", "status", "seconds", "stages", "report"], runs.map((r, i) => [
    `<input type="checkbox" data-i="${i}">`, `<code>${esc(r.folder)}</code>`, esc(r.name),
    `<span class="st ${esc(r.status.split(" ")[0])}">${esc(r.status)}</span>${r.why ? `<br><small>${esc(r.why)}</small>` : ""}`,
    r.seconds ?? "", r.stages.map((s) => `${esc(s.stage)} <span class="st ${esc(s.status)}">${esc(s.status)}</span>`).join(", "),
    r.report ? `<a href="/files/${r.report.split("/").map(encodeURIComponent).join("/")}" target="_blank">report.html</a>` : ""]), "runlist");
  const boxes = [...out.querySelectorAll("input[type=checkbox]")];
  const side = () => {
    const picked = boxes.filter((b) => b.checked).map((b) => runs[Number(b.dataset.i)]);
    if (picked.length !== 2) { compare.innerHTML = picked.length > 2 ? "<p>Tick two runs.</p>" : ""; return; }
    const [a, b] = picked;
    const rows = [["seconds", a.seconds, b.seconds]];
    const names = [...new Set([...a.stages, ...b.stages].map((s) => s.stage))];
    for (const name of names) {
      const sa = a.stages.find((s) => s.stage === name) || {}, sb = b.stages.find((s) => s.stage === name) || {};
      for (const k of FIGURES) if (sa[k] !== undefined || sb[k] !== undefined) rows.push([`${name} ${k}`, sa[k], sb[k]]);
    }
    compare.innerHTML = "<h2>Side by side</h2>" + table(["", a.folder, b.folder], rows.map(([k, x, y]) => [
      esc(k), typeof x === "number" ? x : esc(x ?? "–"), typeof y === "number" ? y : esc(y ?? "–")]), "sidebyside");
  };
  for (const b of boxes) b.onchange = side;
};

pages[document.body.dataset.page]?.();
