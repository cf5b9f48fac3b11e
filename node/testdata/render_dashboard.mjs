// Runs the dashboard's script (ui/app.js) under Node.js against a live
// admin API, with just enough of a DOM for it, and prints what the page
// shows: one "id<TAB>hidden<TAB>text" line per element of interest, after
// a first refresh and, if a token is given, after submitting it.
//
//   node render_dashboard.mjs <base URL> <ui dir> [token]
import fs from "fs";

const [base, dir, token] = process.argv.slice(2);

class Element {
  constructor(tag) { this.tag = tag; this.children = []; this.text = ""; this.hidden = false; this.className = ""; this.listeners = {}; this.value = ""; this.max = 0; }
  set textContent(v) { this.text = String(v); this.children = []; }
  get textContent() { return [this.text, ...this.children.map((c) => c.textContent)].filter((t) => t !== "").join(" | "); }
  replaceChildren() { this.children = []; this.text = ""; }
  appendChild(c) { this.children.push(c); return c; }
  append(...cs) { this.children.push(...cs); }
  addEventListener(event, fn) { this.listeners[event] = fn; }
}

// The page's elements with an id, hidden as the markup says, each with
// the elements with an id that enclose it: one is shown only while they
// all are.
const byID = {};
const html = fs.readFileSync(dir + "/index.html", "utf8");
const spans = [];
for (const m of html.matchAll(/<(\w+)([^>]*)\bid="([^"]+)"([^>]*)>/g)) {
  const el = new Element(m[1]);
  el.hidden = /\bhidden\b/.test(m[2] + m[4]);
  byID[m[3]] = el;
  // Its end: the close tag that balances it (tags of its name nest).
  let depth = 0, end = html.length;
  for (const t of html.slice(m.index).matchAll(new RegExp("<(/?)" + m[1] + "\\b[^>]*>", "g"))) {
    depth += t[1] ? -1 : 1;
    if (depth === 0) { end = m.index + t.index; break; }
  }
  spans.push({ id: m[3], start: m.index, end });
}
const enclosing = {};
for (const a of spans) enclosing[a.id] = spans.filter((b) => b !== a && b.start < a.start && a.start < b.end).map((b) => b.id);
const shown = (id) => !byID[id].hidden && enclosing[id].every((p) => !byID[p].hidden);
globalThis.document = {
  getElementById: (id) => { if (!byID[id]) throw new Error("the script uses #" + id + ", which the page lacks"); return byID[id]; },
  createElement: (tag) => new Element(tag),
};
const stored = {};
globalThis.sessionStorage = { getItem: (k) => stored[k] ?? null, setItem: (k, v) => { stored[k] = String(v); } };
// fetch reads the whole answer before it resolves, and counts the calls in
// flight, so that settle can wait for the page's refresh to finish however
// slow the machine is, rather than for a fixed time.
const realFetch = globalThis.fetch;
let inflight = 0;
let started = 0;
globalThis.fetch = async (path, opts) => {
  inflight++;
  started++;
  try {
    const resp = await realFetch(base + path, opts);
    const text = await resp.text();
    return { ok: resp.ok, status: resp.status, statusText: resp.statusText, json: async () => JSON.parse(text) };
  } finally {
    inflight--;
  }
};
globalThis.setInterval = () => {};

// settle waits until a call was made and none is in flight: the script's
// follow-up calls start in microtasks, before any timer fires. A step that
// may make no call (a token the page refuses) gives up waiting for one
// after startWithin ms.
const tick = () => new Promise((r) => setTimeout(r, 20));
const settle = async (after, startWithin = 20000) => {
  const begun = Date.now();
  const deadline = begun + 20000;
  while ((started <= after || inflight > 0) && Date.now() < deadline) {
    if (started <= after && Date.now() - begun > startWithin) break;
    await tick();
  }
  await tick();
};
const show = (stage) => {
  for (const id of ["login", "login-error", "error", "status", "operation", "operation-title", "operation-text", "members", "shards-summary", "shards"]) {
    console.log([stage, id, shown(id) ? "shown" : "hidden", byID[id].textContent].join("\t"));
  }
};

(0, eval)(fs.readFileSync(dir + "/app.js", "utf8"));
await settle(0);
show("first");
if (token) {
  const before = started;
  byID["token"].value = token;
  byID["token-form"].listeners.submit({ preventDefault() {} });
  await settle(before, 1000);
  show("token");
}
