// The roost dashboard: polls this node's admin API and renders it. Every
// value goes into the page as text (textContent), never as markup.
"use strict";

const tokenKey = "roost-admin-token";
const every = 2000; // ms between refreshes

function $(id) { return document.getElementById(id); }

// api fetches one admin call; it rejects with {status, message}.
async function api(path) {
  const headers = {};
  const token = sessionStorage.getItem(tokenKey);
  if (token) headers["Authorization"] = "Bearer " + token;
  const resp = await fetch(path, { headers, cache: "no-store" });
  let body = null;
  try { body = await resp.json(); } catch (e) { /* not JSON */ }
  if (!resp.ok) {
    throw { status: resp.status, message: (body && body.error) || resp.statusText };
  }
  return body;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fact(dl, name, value, cls) {
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = value;
  if (cls) dd.className = cls;
  dl.append(dt, dd);
}

function list(ids) { return (ids || []).join(", ") || "—"; }

function renderStatus(st) {
  const dl = $("status");
  dl.replaceChildren();
  fact(dl, "answering node", st.node_id);
  fact(dl, "mode", st.mode);
  fact(dl, "ready", st.ready ? "yes" : "no: " + st.reason, st.ready ? "good" : "bad");
  if (st.mode === "cluster") {
    fact(dl, "cluster", st.cluster_id || "not formed yet");
    fact(dl, "meta leader", st.meta_leader || "none (election under way?)", st.meta_leader ? "" : "bad");
    fact(dl, "map version", String(st.map_version));
    fact(dl, "nodes", String(st.nodes));
  }
  fact(dl, "shards", String(st.shards));
  let replicas = String(st.replicas);
  if (st.under_replicated) replicas += " (" + st.under_replicated + " of the shards have fewer)";
  fact(dl, "replicas per shard", replicas, st.under_replicated ? "bad" : "");

  const op = st.operation;
  $("operation").hidden = !op;
  if (op) {
    const what = op.node ? op.kind + " of " + op.node : op.kind; // a drain's node
    $("operation-title").textContent = "Operation " + op.id + ": " + what + " (" + op.state + ")";
    $("operation-progress").max = Math.max(op.total, 1);
    $("operation-progress").value = op.done;
    let text = op.done + " of " + op.total + " moves";
    if (op.eta_seconds) text += ", about " + Math.round(op.eta_seconds) + " s left";
    const w = (op.waiting || [])[0]; // the longest wait comes first
    if (w && w.seconds >= 10) text += "; waiting " + w.seconds + " s on shard " + w.shard + ": " + w.reason;
    if (op.error) text += " — " + op.error;
    $("operation-text").textContent = text;
  }
}

function renderMembers(members) {
  const body = $("members");
  body.replaceChildren();
  for (const m of members) {
    const tr = document.createElement("tr");
    cell(tr, m.id);
    cell(tr, m.state, m.state === "active" ? "" : "muted");
    cell(tr, m.alive ? "yes" : "no", m.alive ? "good" : "bad");
    cell(tr, String(m.replicas));
    cell(tr, String(m.leaders));
    cell(tr, m.meta || "—");
    cell(tr, m.http || "—");
    cell(tr, m.admin || "—");
    cell(tr, m.grpc || "—");
    cell(tr, m.gossip || "—");
    body.appendChild(tr);
  }
}

function renderShards(shards) {
  const body = $("shards");
  body.replaceChildren();
  let leaderless = 0, silentShards = 0;
  for (const s of shards) {
    const tr = document.createElement("tr");
    cell(tr, String(s.id));
    cell(tr, s.leader || "none", s.leader ? "" : "bad");
    cell(tr, list(s.replicas));
    cell(tr, list(s.voters));
    cell(tr, list(s.nonvoters));
    cell(tr, String(s.applied_index));
    let worst = 0, silent = [];
    for (const [id, lag] of Object.entries(s.replica_lag || {})) {
      if (lag < 0) silent.push(id); else worst = Math.max(worst, lag);
    }
    if (!s.leader) leaderless++;
    if (silent.length) silentShards++;
    cell(tr, silent.length ? "no answer from " + silent.join(", ") : worst + " entries", silent.length ? "bad" : "");
    body.appendChild(tr);
  }
  // A follower of a quiet group trails by an entry or two until the next
  // append tells it the commit: only silence is worth an alarm.
  $("shards-summary").textContent = shards.length + " shards, " + leaderless + " without a leader, " + silentShards + " with a replica not answering";
}

function showLogin(message) {
  $("dashboard").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

async function refresh() {
  try {
    const st = await api("/v1/status");
    $("login").hidden = true;
    $("dashboard").hidden = false;
    renderStatus(st);
    const cluster = st.mode === "cluster";
    $("members-section").hidden = !cluster;
    $("shards-section").hidden = !cluster;
    if (cluster) {
      const [members, shards] = await Promise.all([api("/v1/members"), api("/v1/shards")]);
      renderMembers(members.members || []);
      renderShards(shards.shards || []);
    }
    $("error").hidden = true;
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    if (err && err.status === 401) {
      showLogin(sessionStorage.getItem(tokenKey) ? err.message : "");
    } else {
      // Outside the dashboard's section: seen before a first answer too.
      $("login").hidden = true;
      $("error").hidden = false;
      $("error").textContent = "Could not refresh: " + ((err && err.message) || err);
    }
  }
}

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = $("token").value.trim();
  $("token").value = "";
  // A browser cannot put anything else in a header (fetch throws), and a
  // node refuses to start with such a token anyway.
  if (!/^[\x20-\x7e\t]*$/.test(token)) {
    showLogin("An admin token is printable ASCII; this one is not.");
    return;
  }
  sessionStorage.setItem(tokenKey, token);
  refresh();
});

refresh();
setInterval(refresh, every);
