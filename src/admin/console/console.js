// The electiond console. Every name and id it shows comes from users of the service and is
// treated as hostile text: elements are built with createElement and textContent only (never
// innerHTML), and the page's Content-Security-Policy runs no inline script. The bearer token,
// when access control is on, stays in this tab (sessionStorage) and is sent only in the
// Authorization header of the console's own API calls.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = {
    prefix: "",
    pageToken: "",   // the token of the page shown ("" for the first)
    nextToken: "",
    names: [],       // what the watch stream follows
    selected: null,  // the election shown in detail, or null for the list
    detail: null,    // its last answer, and when it came (for lease countdowns)
    fetchedAt: 0,
    watch: null,     // AbortController of the watch stream
    watchKey: "",
    config: { access_control: false },
  };

  // ---- talking to the replica ----

  function headers(json) {
    const h = {};
    const token = sessionStorage.getItem("electiond-token");
    if (token) h["Authorization"] = "Bearer " + token;
    if (json) h["Content-Type"] = "application/json";
    return h;
  }

  async function api(path, body) {
    const init = body === undefined
      ? { headers: headers(false) }
      : { method: "POST", headers: headers(true), body: JSON.stringify(body) };
    const r = await fetch(path, init);
    let answer = null;
    try { answer = await r.json(); } catch (_) { /* not JSON */ }
    if (!r.ok) {
      if (r.status === 401) showToken(true);
      const why = answer && answer.error ? answer.error : r.status + " " + r.statusText;
      throw new Error(why);
    }
    return answer;
  }

  function showError(e) {
    const p = $("error");
    if (!e) { p.hidden = true; p.textContent = ""; return; }
    p.textContent = String(e.message || e);
    p.hidden = false;
  }

  function showToken(show) {
    $("token-form").hidden = !show;
  }

  // ---- small helpers that only ever make text ----

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function cell(label, text, cls) {
    const td = el("td", text, cls);
    td.setAttribute("data-label", label);
    return td;
  }

  function leaderText(node, leader) {
    node.textContent = leader === "" ? "none" : leader;
    node.classList.toggle("none", leader === "");
  }

  function when(ms) {
    if (!ms) return "";
    return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function duration(ms) {
    if (ms === null || ms === undefined) return "no lease";
    if (ms < 0) return "ran out " + Math.ceil(-ms / 1000) + " s ago";
    if (ms < 10000) return (ms / 1000).toFixed(1) + " s left";
    return Math.round(ms / 1000) + " s left";
  }

  function electionLink(name) {
    return "#/e/" + encodeURIComponent(name);
  }

  // ---- the list ----

  async function loadList() {
    const q = new URLSearchParams({ prefix: state.prefix, page_token: state.pageToken });
    const page = await api("/api/elections?" + q.toString());
    const body = $("elections").tBodies[0];
    body.replaceChildren();
    for (const e of page.elections) {
      const tr = el("tr", null, "election");
      tr.dataset.name = e.name;
      const name = cell("Election", null, "name");
      const a = el("a", e.name);
      a.href = electionLink(e.name);
      name.append(a);
      const leader = cell("Leader", null, "leader");
      leaderText(leader, e.leader);
      tr.append(
        name,
        leader,
        cell("Term", e.id, "term number"),
        cell("Candidates", e.candidates, "candidates number"),
        cell("Changed", when(e.changed_unix_ms), "changed"),
      );
      tr.addEventListener("click", (ev) => {
        if (ev.target.tagName !== "A") location.hash = electionLink(e.name);
      });
      body.append(tr);
    }
    $("empty").hidden = page.elections.length > 0;
    state.nextToken = page.next_page_token;
    $("next-page").hidden = !page.next_page_token;
    $("first-page").hidden = state.pageToken === "";
    follow(page.elections.map((e) => e.name));
  }

  function rowOf(name) {
    for (const tr of $("elections").tBodies[0].rows) {
      if (tr.dataset.name === name) return tr;
    }
    return null;
  }

  function applyChangeToRow(c) {
    const tr = rowOf(c.name);
    if (!tr) return;
    leaderText(tr.querySelector(".leader"), c.leader);
    tr.querySelector(".term").textContent = c.id;
    tr.querySelector(".candidates").textContent = c.candidates;
    tr.querySelector(".changed").textContent = when(Date.now());
    tr.classList.remove("flash");
    void tr.offsetWidth;
    tr.classList.add("flash");
  }

  // ---- one election ----

  async function loadDetail() {
    const name = state.selected;
    const d = await api("/api/election?" + new URLSearchParams({ name }).toString());
    if (state.selected !== name) return;
    state.detail = d;
    state.fetchedAt = Date.now();
    $("name").textContent = d.name;
    leaderText($("leader"), d.exists ? d.leader : "");
    if (!d.exists) $("leader").textContent = "no such election (now)";
    $("term").textContent = d.id;
    $("clock").textContent = when(d.now_unix_ms);
    const list = $("candidates");
    list.replaceChildren();
    d.candidates.forEach((c, i) => {
      const li = el("li");
      li.dataset.id = c.id;
      li.append(el("span", c.id, "id"));
      if (i === 0) li.append(el("span", " (leader)", "muted"));
      const lease = el("span", "", "lease");
      lease.dataset.msLeft = c.ms_left === null ? "" : String(c.ms_left);
      lease.dataset.heldBy = c.held_by;
      li.append(lease);
      if (d.may_operate) {
        const actions = el("span", null, "actions");
        if (i > 0) actions.append(actionButton("Anoint", "anoint", d.name, c.id));
        actions.append(actionButton("Evict", "evict", d.name, c.id));
        li.append(actions);
      }
      list.append(li);
    });
    if (d.candidates.length === 0) list.append(el("li", "No candidates.", "muted"));
    const body = $("history").tBodies[0];
    body.replaceChildren();
    for (const h of d.history) {
      const tr = el("tr");
      const leader = cell("Leader", null, "leader");
      leaderText(leader, h.leader);
      tr.append(
        cell("When", when(h.unix_ms), "when"),
        cell("Term", h.id, "term number"),
        leader,
        cell("Cause", h.cause, "cause"),
      );
      body.append(tr);
    }
    $("no-history").hidden = d.history.length > 0;
    tick();
    follow([d.name]);
  }

  function tick() {
    const elapsed = Date.now() - state.fetchedAt;
    for (const lease of document.querySelectorAll("#candidates .lease")) {
      const raw = lease.dataset.msLeft;
      const left = raw === "" ? null : Number(raw) - elapsed;
      const text = duration(left);
      lease.textContent = lease.dataset.heldBy === "session" && left !== null
        ? "held by its session, " + text
        : text;
    }
  }

  function actionButton(label, action, name, candidate) {
    const b = el("button", label);
    b.type = "button";
    if (action === "evict") b.className = "danger";
    b.addEventListener("click", () => confirmAction(action, name, candidate));
    return b;
  }

  function confirmAction(action, name, candidate) {
    const dialog = $("confirm");
    const text = action === "evict"
      ? "Evict " + JSON.stringify(candidate) + " from " + JSON.stringify(name) + "? If it leads, the next candidate becomes leader."
      : "Anoint " + JSON.stringify(candidate) + " leader of " + JSON.stringify(name) + "?";
    $("confirm-text").textContent = text;
    dialog.returnValue = "";
    dialog.onclose = async () => {
      if (dialog.returnValue !== "ok") return;
      try {
        await api("/api/" + action, { name, candidate });
        showError(null);
        await loadDetail();
      } catch (e) {
        showError(e);
      }
    };
    dialog.showModal();
  }

  // ---- live changes: one stream for what is on screen ----

  function follow(names) {
    const key = JSON.stringify(names);
    if (key === state.watchKey && state.watch) return;
    if (state.watch) state.watch.abort();
    state.watchKey = key;
    state.names = names;
    state.watch = null;
    setLive(false);
    if (names.length === 0) return;
    const ctrl = new AbortController();
    state.watch = ctrl;
    stream(names, ctrl).catch(() => {}).finally(() => {
      if (state.watch !== ctrl) return;
      setLive(false);
      state.watch = null;
      // the stream ended (a replica restarting, a balancer timeout): follow again
      setTimeout(() => { if (!state.watch && state.watchKey === key) { state.watchKey = ""; follow(names); } }, 1000);
    });
  }

  async function stream(names, ctrl) {
    const r = await fetch("/api/watch", {
      method: "POST",
      headers: headers(true),
      body: JSON.stringify({ names }),
      signal: ctrl.signal,
    });
    if (!r.ok || !r.body) throw new Error("watch: " + r.status);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        let data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        await onEvent(event, data);
      }
    }
  }

  async function onEvent(event, data) {
    if (event === "ready") {
      setLive(true);
      // what changed between the last read and the subscription shows now
      await refresh(false);
      return;
    }
    if (event !== "change") return;
    const c = JSON.parse(data);
    if (state.selected === null) applyChangeToRow(c);
    else if (c.name === state.selected) await loadDetail().catch(showError);
  }

  function setLive(on) {
    const l = $("live");
    l.textContent = on ? "live" : "offline";
    l.classList.toggle("on", on);
    l.classList.toggle("off", !on);
  }

  // ---- navigation ----

  async function refresh(rewatch) {
    try {
      if (state.selected === null) await loadList();
      else await loadDetail();
      showError(null);
    } catch (e) {
      showError(e);
    }
    if (rewatch && state.watch === null) follow(state.names);
  }

  function route() {
    const m = location.hash.match(/^#\/e\/(.*)$/);
    state.selected = m ? decodeURIComponent(m[1]) : null;
    $("list-view").hidden = state.selected !== null;
    $("detail-view").hidden = state.selected === null;
    state.watchKey = "";
    refresh(true);
  }

  async function start() {
    try {
      state.config = await api("/api/config");
    } catch (e) {
      showError(e);
    }
    if (state.config.access_control && !sessionStorage.getItem("electiond-token")) showToken(true);
    $("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      sessionStorage.setItem("electiond-token", $("token").value.trim());
      $("token").value = "";
      state.watchKey = "";
      refresh(true);
    });
    let typing;
    $("prefix").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => {
        state.prefix = $("prefix").value;
        state.pageToken = "";
        refresh(true);
      }, 250);
    });
    $("filter").addEventListener("submit", (ev) => ev.preventDefault());
    $("next-page").addEventListener("click", () => { state.pageToken = state.nextToken; refresh(true); });
    $("first-page").addEventListener("click", () => { state.pageToken = ""; refresh(true); });
    window.addEventListener("hashchange", route);
    setInterval(tick, 1000);
    // changes to the elections on screen come live; elections created meanwhile appear on the
    // next listing: read again every 30 s while the list is in view
    setInterval(() => {
      if (state.selected === null && document.visibilityState === "visible") refresh(true);
    }, 30000);
    route();
  }

  start();
})();
