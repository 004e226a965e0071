// app.js - the coders' worklist page. Everything it shows comes from the
// daemon's /api as JSON and is put in the page as text (never as HTML), so
// message content cannot run as script. POSTs carry the session's CSRF token.
"use strict";

const $ = (sel) => document.querySelector(sel);
let csrf = "";
let current = null; // the item on show

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}

async function api(path, body) {
  const opts = { credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.headers["X-CSRF-Token"] = csrf;
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  if (r.status === 401) {
    location.href = "/login";
    throw new Error("logged out");
  }
  const data = await r.json();
  return { status: r.status, data };
}

function show(view) {
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== "view-" + view;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("on", a.id === "nav-" + view);
}

// ---------------------------------------------------------------- the list

function listParams() {
  const q = location.hash.split("?")[1] || "";
  return new URLSearchParams(q);
}

function setList(p) {
  location.hash = "#/list?" + p.toString();
}

async function showList() {
  show("list");
  const p = listParams();
  const form = $("#filters");
  for (const name of ["state", "since", "until", "source", "q"]) form.elements[name].value = p.get(name) || "";
  const { data } = await api("/api/items?" + p.toString());
  const rule = $("#f-rule");
  rule.replaceChildren(el("option", { value: "", text: "any" }));
  const counts = $("#rule-counts");
  counts.replaceChildren();
  for (const [r, n] of Object.entries(data.counts).sort((a, b) => b[1] - a[1])) {
    rule.append(el("option", { value: r, text: r + " (" + n + ")" }));
    const chip = el("a", { href: "#", class: "chip" + (p.get("rule") === r ? " on" : ""), text: r + " " + n });
    chip.addEventListener("click", (ev) => {
      ev.preventDefault();
      p.set("rule", r);
      p.delete("page");
      setList(p);
    });
    counts.append(chip);
  }
  rule.value = p.get("rule") || "";
  const tbody = $("#items tbody");
  tbody.replaceChildren();
  for (const it of data.items) {
    const refs = it.refs || {};
    const row = el("tr", { "data-id": it.id },
      el("td", {}, el("a", { href: "#/item/" + it.id, text: String(it.id) })),
      el("td", { text: it.received.replace("T", " ").replace("Z", "") }),
      el("td", {}, el("span", { class: "state " + it.state, text: it.state })),
      el("td", { text: it.verdict }),
      el("td", { text: it.source }),
      el("td", {}, el("a", { href: "#/item/" + it.id, text: it.control_id })),
      el("td", { text: [refs.account, refs.mrn].filter(Boolean).join(" / ") }),
      el("td", { text: it.rules.join(", ") }));
    tbody.append(row);
  }
  if (!data.items.length) tbody.append(el("tr", {}, el("td", { colspan: 8, text: "Nothing matches." })));
  const pages = Math.max(1, Math.ceil(data.total / data.per_page));
  $("#page").textContent = "page " + data.page + " of " + pages + " · " + data.total + " items";
  $("#prev").disabled = data.page <= 1;
  $("#next").disabled = data.page >= pages;
  for (const th of document.querySelectorAll("#items th[data-sort]")) {
    const on = (p.get("sort") || "id") === th.dataset.sort;
    th.className = on ? (p.get("order") === "asc" ? "asc" : "desc") : "";
  }
}

function wireList() {
  $("#filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(ev.target)) if (v) p.set(k, v);
    const old = listParams();
    for (const k of ["sort", "order"]) if (old.get(k)) p.set(k, old.get(k));
    setList(p);
  });
  for (const th of document.querySelectorAll("#items th[data-sort]")) {
    th.addEventListener("click", () => {
      const p = listParams();
      const same = (p.get("sort") || "id") === th.dataset.sort;
      p.set("sort", th.dataset.sort);
      p.set("order", same && p.get("order") !== "asc" ? "asc" : "desc");
      setList(p);
    });
  }
  for (const [id, step] of [["#prev", -1], ["#next", 1]]) {
    $(id).addEventListener("click", () => {
      const p = listParams();
      p.set("page", String(Math.max(1, (parseInt(p.get("page") || "1", 10) || 1) + step)));
      setList(p);
    });
  }
}

// ---------------------------------------------------------------- one item

// "DG1(2)-3" -> {seg: "DG1", occ: 2, field: 3}
function place(loc) {
  const m = /^([A-Z0-9]{3})(?:\((\d+)\))?(?:-(\d+))?/.exec(loc || "");
  return m ? { seg: m[1], occ: parseInt(m[2] || "1", 10), field: m[3] ? parseInt(m[3], 10) : 0 } : null;
}

function findingBox(f) {
  return el("div", { class: "finding " + (f.severity || "") },
    el("strong", { text: (f.location ? f.location + " " : "") + f.rule + " · " + f.severity }),
    f.message ? el("div", { text: f.message }) : null,
    f.suggestion ? el("div", { class: "suggestion", text: "Suggestion: " + f.suggestion }) : null,
    f.reference ? el("div", { class: "reference", text: "Reference: " + f.reference }) : null);
}

function editable(it) {
  return it.state === "open" && it.kind !== "dead";
}

// HL7: a row per segment, each field in its own cell, DG1-3 an input when
// the item can be resent; the findings in a cell beside their segment.
function renderHl7(it) {
  const tbody = $("#message tbody");
  const segs = it.message.split(/\r\n|\r|\n/).filter((s) => s.length);
  const seen = {}, total = {};
  for (const seg of segs) total[seg.slice(0, 3)] = (total[seg.slice(0, 3)] || 0) + 1;
  const placed = new Set();
  segs.forEach((seg, i) => {
    const name = seg.slice(0, 3);
    const occ = (seen[name] = (seen[name] || 0) + 1);
    const fields = name === "MSH" ? ["MSH", "|"].concat(seg.slice(4).split("|")) : seg.split("|");
    const here = it.findings.filter((f, k) => {
      const p = place(f.location);
      const ok = p && p.seg === name && p.occ === occ;
      if (ok) placed.add(k);
      return ok;
    });
    const marked = new Set(here.map((f) => place(f.location).field));
    const cells = el("td", { class: "fields" });
    fields.forEach((v, n) => {
      if (n === 0) return;
      const label = name + "-" + n;
      let node;
      if (name === "DG1" && n === 3 && editable(it)) {
        // The code (first component) is edited; its text goes with the old code.
        node = el("input", { class: "code", value: v.split("^")[0], "data-seg": String(i), "data-occ": String(occ), "aria-label": label + " code" });
      } else {
        node = el("span", { class: "field", text: v || "\u00a0" });
      }
      cells.append(el("span", { class: "cell" + (marked.has(n) ? " marked" : ""), title: label }, node), " ");
    });
    tbody.append(el("tr", {}, el("th", { text: total[name] > 1 ? name + "(" + occ + ")" : name }), cells,
      el("td", { class: "findings" }, ...here.map(findingBox))));
  });
  const rest = it.findings.filter((f, k) => !placed.has(k));
  if (rest.length) tbody.append(el("tr", {}, el("th", { text: "message" }), el("td", {}), el("td", { class: "findings" }, ...rest.map(findingBox))));
}

function hl7Edited(it) {
  const segs = it.message.split(/\r\n|\r|\n/).filter((s) => s.length);
  for (const input of document.querySelectorAll("#message input.code")) {
    const i = parseInt(input.dataset.seg, 10);
    const f = segs[i].split("|");
    const comps = (f[3] || "").split("^");
    if (comps[0] !== input.value) {
      comps[0] = input.value;
      if (comps.length > 1) comps[1] = "";
    }
    f[3] = comps.join("^");
    segs[i] = f.join("|");
  }
  return segs.join("\r") + "\r";
}

// FHIR JSON: each diagnosis on a row with its code editable; the findings
// that point at a diagnosis beside it, the rest below; the Claim in full under.
function renderFhir(it) {
  const tbody = $("#message tbody");
  let claim = null;
  try { claim = JSON.parse(it.message); } catch (e) { claim = null; }
  const raw = $("#message-raw");
  raw.hidden = false;
  raw.textContent = claim ? JSON.stringify(claim, null, 2) : it.message;
  const placed = new Set();
  ((claim && claim.diagnosis) || []).forEach((dx, i) => {
    const coding = (dx.diagnosisCodeableConcept && dx.diagnosisCodeableConcept.coding || [])[0] || {};
    const code = coding.code || "";
    const here = it.findings.filter((f, k) => {
      // Beside the diagnosis its location names; without one, beside its codes.
      const at = /diagnosis\[(\d+)\]/.exec(f.location || "");
      const ok = at ? parseInt(at[1], 10) === i : (f.codes || []).includes(code);
      if (ok) placed.add(k);
      return ok;
    });
    const node = editable(it) ? el("input", { class: "code", value: code, "data-dx": String(i), "aria-label": "diagnosis " + (dx.sequence || i + 1) })
      : el("span", { class: "field", text: code });
    tbody.append(el("tr", {}, el("th", { text: "diagnosis " + (dx.sequence || i + 1) }),
      el("td", { class: "fields" }, el("span", { class: "cell" + (here.length ? " marked" : "") }, node)),
      el("td", { class: "findings" }, ...here.map(findingBox))));
  });
  const rest = it.findings.filter((f, k) => !placed.has(k));
  if (rest.length) tbody.append(el("tr", {}, el("th", { text: "Claim" }), el("td", {}), el("td", { class: "findings" }, ...rest.map(findingBox))));
  return claim;
}

function fhirEdited(it) {
  const claim = JSON.parse(it.message);
  for (const input of document.querySelectorAll("#message input.code")) {
    const dx = claim.diagnosis[parseInt(input.dataset.dx, 10)];
    dx.diagnosisCodeableConcept.coding[0].code = input.value;
  }
  return JSON.stringify(claim);
}

function edited(it) {
  return it.content_type.includes("json") ? fhirEdited(it) : hl7Edited(it);
}

function fact(dl, k, v) {
  if (v) dl.append(el("dt", { text: k }), el("dd", { text: v }));
}

async function showItem(id) {
  show("item");
  $("#action-result").textContent = "";
  $("#verdict").replaceChildren();
  $("#resend").disabled = true;
  $("#resend-note").value = "";
  $("#resolve-note").value = "";
  const { status, data } = await api("/api/items/" + id);
  if (status !== 200) {
    $("#item-title").textContent = "Item " + id + ": " + data.error;
    return;
  }
  const it = (current = data);
  $("#item-title").textContent = "Item " + it.id + " · " + it.control_id + " · " + it.state;
  const dl = $("#item-facts");
  dl.replaceChildren();
  const refs = it.refs || {};
  fact(dl, "Received", it.received);
  fact(dl, "Kind", it.kind);
  fact(dl, "Verdict", it.verdict);
  fact(dl, "Source", it.source + (it.peer ? " (" + it.peer + ")" : ""));
  fact(dl, "Type", it.type);
  fact(dl, "MRN", refs.mrn);
  fact(dl, "Account", refs.account);
  fact(dl, "Visit", refs.visit);
  fact(dl, "Reason", it.reason);
  fact(dl, "Changed", it.changed ? it.changed + " by " + it.changed_by : "");
  fact(dl, "Note", it.note);
  fact(dl, "Link", it.link);
  $("#message tbody").replaceChildren();
  $("#message-raw").hidden = true;
  if (it.content_type.includes("hl7")) renderHl7(it);
  else if (it.content_type.includes("json")) renderFhir(it);
  else {
    $("#message-raw").hidden = false;
    $("#message-raw").textContent = it.message;
    it.findings.forEach((f) => $("#message tbody").append(el("tr", {}, el("th", {}), el("td", {}), el("td", { class: "findings" }, findingBox(f)))));
  }
  const open = it.state === "open";
  $("#edit-actions").hidden = !(open && it.kind !== "dead" && !it.content_type.includes("xml"));
  $("#resolve-actions").hidden = !open;
  $("#requeue-actions").hidden = !(open && it.kind === "dead");
  for (const input of document.querySelectorAll("#message input.code"))
    input.addEventListener("input", () => { $("#resend").disabled = true; $("#verdict").replaceChildren(); });
}

function showVerdict(data) {
  const box = $("#verdict");
  const j = data.judged || {};
  box.replaceChildren(el("p", { class: data.passes ? "pass" : "fail",
    text: (data.passes ? "Passes: " : "Still refused: ") + (j.verdict || "unreadable") + (data.error ? " (" + data.error + ")" : "") }));
  for (const f of j.findings || []) box.append(findingBox(f));
}

function wireItem() {
  $("#check").addEventListener("click", async () => {
    const { data } = await api("/api/items/" + current.id + "/check", { message: edited(current) });
    showVerdict(data);
    $("#resend").disabled = !data.passes;
  });
  $("#resend").addEventListener("click", async () => {
    const { status, data } = await api("/api/items/" + current.id + "/resend",
      { message: edited(current), note: $("#resend-note").value || undefined });
    if (status === 200 && data.resent) {
      await showItem(current.id);
      $("#action-result").textContent = "Resent: judged again and queued for delivery.";
    } else {
      if (data.judged) showVerdict(data);
      $("#action-result").textContent = "Not resent: " + (data.error || "the rules still refuse it");
    }
  });
  $("#resolve").addEventListener("click", async () => {
    const { status, data } = await api("/api/items/" + current.id + "/resolve", { note: $("#resolve-note").value });
    if (status === 200) await showItem(current.id);
    $("#action-result").textContent = status === 200 ? "Resolved." : "Not resolved: " + data.error;
  });
  $("#requeue").addEventListener("click", async () => {
    const { status, data } = await api("/api/items/" + current.id + "/requeue", {});
    if (status === 200) await showItem(current.id);
    $("#action-result").textContent = status === 200 ? "Requeued for delivery." : "Not requeued: " + data.error;
  });
}

// ---------------------------------------------------------------- charts

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// One bar per label, the value above it; labels under the axis.
function barChart(labels, values, opts) {
  const w = opts.width || 640, h = 160, pad = 28, bw = (w - pad) / Math.max(1, labels.length);
  const max = Math.max(1, ...values);
  const s = svg("svg", { viewBox: "0 0 " + w + " " + (h + 40), width: w, height: h + 40, class: "chart", role: "img", "aria-label": opts.title });
  s.append(svg("title", {}, opts.title));
  s.append(svg("line", { x1: pad, y1: h, x2: w, y2: h, class: "axis" }));
  labels.forEach((lab, i) => {
    const bh = Math.round((values[i] / max) * (h - 20));
    const x = pad + i * bw + bw * 0.15;
    s.append(svg("rect", { x, y: h - bh, width: bw * 0.7, height: bh, class: "bar" }));
    if (values[i]) s.append(svg("text", { x: x + bw * 0.35, y: h - bh - 4, "text-anchor": "middle", class: "value" }, String(values[i])));
    s.append(svg("text", { x: x + bw * 0.35, y: h + 14, "text-anchor": "middle", class: "label" }, opts.short ? opts.short(lab) : lab));
  });
  return s;
}

async function showTrends() {
  show("trends");
  const { data } = await api("/api/trends");
  const box = $("#chart-rules");
  box.replaceChildren();
  const rules = Object.keys(data.findings_per_rule_day).sort();
  if (!rules.length) box.append(el("p", { text: "No findings in the last " + data.days.length + " days." }));
  for (const r of rules) {
    const per = data.findings_per_rule_day[r];
    box.append(el("h3", { text: r }),
      barChart(data.days, data.days.map((d) => per[d] || 0), { title: r + " per day", short: (d) => d.slice(5) }));
  }
  const src = Object.keys(data.rejects_per_source).sort();
  $("#chart-sources").replaceChildren(src.length
    ? barChart(src, src.map((k) => data.rejects_per_source[k]), { title: "rejects per source", width: 60 + 120 * src.length })
    : el("p", { text: "No rejects in the last " + data.days.length + " days." }));
}

// ---------------------------------------------------------------- destinations

function age(s) {
  if (!s) return "";
  if (s < 120) return Math.round(s) + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return Math.round(s / 3600) + " h";
}

async function showDestinations() {
  show("destinations");
  const { data } = await api("/api/destinations");
  const tbody = $("#dests tbody");
  tbody.replaceChildren();
  for (const [name, x] of Object.entries(data.destinations)) {
    tbody.append(el("tr", {}, el("td", { text: name }),
      el("td", {}, el("span", { class: "state " + x.state, text: x.state })),
      el("td", { text: String(x.depth) }), el("td", { text: age(x.oldest_age_s) }),
      el("td", { text: x.since || "" }), el("td", { text: x.last_error || "" })));
  }
}

// ---------------------------------------------------------------- start

function view(h) {
  const m = /^#\/item\/(\d+)/.exec(h);
  if (m) return showItem(m[1]);
  if (h.startsWith("#/trends")) return showTrends();
  if (h.startsWith("#/destinations")) return showDestinations();
  return showList();
}

// body[data-shown] names the view once it is filled in (the browser tests
// wait for it).
async function route() {
  const h = location.hash || "#/list";
  document.body.dataset.shown = "";
  await view(h);
  document.body.dataset.shown = h;
}

async function start() {
  const { data } = await api("/api/session");
  csrf = data.csrf;
  $("#who").textContent = data.user;
  $("#logout-csrf").value = csrf;
  wireList();
  wireItem();
  window.addEventListener("hashchange", route);
  await route();
}

start();
