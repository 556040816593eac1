// The deferred-emulator console: a few views over the emulator's JSON endpoints, no build step.
"use strict";

const V1 = "/_emulator/v1";
const REFRESH_MS = 3000;
const PAGE_SIZE = 50;
const STATES = [["all", "All"], ["waiting", "Waiting"], ["running", "In flight"], ["failed", "Failed"]];
let renderSeq = 0;
let busy = false;
let queueNames = {};
let lastKey = "";

// Helpers (h, api, toast, formatting, routing) are in lib.js, loaded first.

// -- actions -------------------------------------------------------------------------------------

async function act(label, fn) {
  busy = true;
  try {
    await fn();
    toast(label, "ok");
  } catch (err) {
    toast(`${label} failed: ${err.message}`, "error");
  } finally {
    busy = false;
    refresh();
  }
}

const taskStateLabel = (t) => (t.due ? "DUE" : t.state === "RUNNING" ? "IN FLIGHT" : t.state);

function queueActions(q) {
  const paused = q.state === "PAUSED";
  return h("div", { class: "actions" },
    h("button", {
      class: "btn", data: { action: paused ? "resume" : "pause", queue: q.id },
      onclick: () => act(`${paused ? "Resumed" : "Paused"} ${q.id}`,
        () => api("POST", `/v2/${q.name}:${paused ? "resume" : "pause"}`)),
    }, paused ? "Resume" : "Pause"),
    h("button", {
      class: "btn danger-quiet", data: { action: "purge", queue: q.id },
      onclick: async () => {
        const total = (q.stats.waiting || 0) + (q.stats.failed || 0);
        const ok = await confirmDialog(`Purge ${q.id}?`,
          `Delete every task of queue ${q.id} (${fmtNum(total)} now). This cannot be undone.`, "Purge");
        if (ok) act(`Purged ${q.id}`, () => api("POST", `/v2/${q.name}:purge`));
      },
    }, "Purge"));
}

function taskActions(queue, t) {
  const base = `/v2/${queueNames[queue]}/tasks/${encodeURIComponent(t.name)}`;
  const retry = h("button", {
    class: "btn primary", data: { action: "retry", task: t.name },
    onclick: () => act(`Retrying ${t.name}`,
      () => api("POST", `${V1}/queues/${encodeURIComponent(queue)}/failed:retry`, { task: t.name })),
  }, "Retry");
  const run = h("button", {
    class: "btn primary", data: { action: "run", task: t.name }, disabled: t.state === "RUNNING",
    onclick: () => act(`Running ${t.name}`, () => api("POST", `${base}:run`)),
  }, "Run now");
  const del = h("button", {
    class: "btn danger-quiet", data: { action: "delete", task: t.name },
    onclick: () => act(`Deleted ${t.name}`, () => api("DELETE", base)),
  }, "Delete");
  return h("div", { class: "actions" }, t.state === "FAILED" ? retry : run, del);
}

// -- views ---------------------------------------------------------------------------------------

async function statsByQueue() {
  const stats = await api("GET", `${V1}/stats`);
  queueNames = Object.fromEntries(stats.queues.map((q) => [q.id, q.name]));
  return stats;
}

async function queuesView() {
  const [stats, flow] = await Promise.all([statsByQueue(), api("GET", `${V1}/flow`)]);
  return { data: [stats, flow], build: () => buildQueues(stats, flow) };
}

function buildQueues(stats, flow) {
  crumbs([{ text: "Queues" }]);
  const cols = ["Queue", "State", "Rate", "Bucket", "Waiting", "Due", "In flight", "Failed", "Last minute", "Flow (1h)", "Oldest ETA", ""];
  const numeric = new Set([2, 3, 4, 5, 6, 7, 8, 10]);
  const rows = stats.queues.map((q) => {
    const s = q.stats || {};
    const r = q.rateLimits;
    const failed = s.failed ? h("a", { href: queueHref(q.id, new URLSearchParams({ state: "failed" })), class: "bad" }, fmtNum(s.failed)) : "0";
    const minute = h("span", {}, h("span", { class: "good" }, fmtNum(s.succeededLastMinute)),
      h("span", { class: "muted" }, " / "), h("span", { class: s.failedLastMinute ? "bad" : "" }, fmtNum(s.failedLastMinute)));
    return h("tr", { data: { queue: q.id } },
      h("td", {}, h("a", { href: queueHref(q.id), class: "name" }, q.id)),
      h("td", { data: { col: "state" } }, pill(q.state)),
      h("td", { class: "num", data: { col: "rate" } }, q.rate || `${r.maxDispatchesPerSecond}/s`),
      h("td", { class: "num opt", data: { col: "bucket" } }, fmtNum(r.maxBurstSize)),
      h("td", { class: "num", data: { col: "waiting" } }, fmtNum(s.waiting)),
      h("td", { class: "num", data: { col: "due" } }, fmtNum(s.due)),
      h("td", { class: "num", data: { col: "inflight" } }, fmtNum(s.inFlight)),
      h("td", { class: "num", data: { col: "failed" } }, failed),
      h("td", { class: "num", data: { col: "minute" }, title: "succeeded / failed attempts in the last minute" }, minute),
      h("td", { class: "chart", data: { col: "flow" } }, flow.queues[q.id] ? flowChart(flow.queues[q.id], { label: q.id }) : "—"),
      timeCell(s.oldestEstimatedArrivalTime, stats.now),
      h("td", { class: "end" }, queueActions(q)));
  });
  const totals = stats.queues.reduce((acc, q) => {
    for (const k of ["waiting", "due", "inFlight", "failed"]) acc[k] += (q.stats && q.stats[k]) || 0;
    return acc;
  }, { waiting: 0, due: 0, inFlight: 0, failed: 0 });
  return [
    h("section", { class: "summary" },
      summaryCard("Queues", stats.queues.length), summaryCard("Waiting", totals.waiting),
      summaryCard("Due", totals.due), summaryCard("In flight", totals.inFlight),
      summaryCard("Failed", totals.failed, totals.failed ? "bad" : "")),
    scroller(h("table", { class: "grid", id: "queues" },
      h("thead", {}, h("tr", {}, cols.map((c, i) => h("th", { class: `${numeric.has(i) ? "num" : ""} ${c === "Bucket" ? "opt" : ""}` }, c)))),
      h("tbody", {}, rows))),
  ];
}

function summaryCard(label, value, kind) {
  return h("div", { class: `card ${kind || ""}` }, h("div", { class: "value" }, fmtNum(value)), h("div", { class: "label" }, label));
}

function listing(r) {
  const state = r.params.get("state") || "all";
  const order = r.params.get("order") || "soonest";
  const pages = (r.params.get("pages") || "").split(",").filter(Boolean);
  const name = r.params.get("name") || "";
  const callable = r.params.get("callable") || "";
  return { state, order, pages, name, callable, q: encodeURIComponent(r.queue) };
}

// The API's filter text: name:PREFIX callable:TEXT, values quoted when they hold a space or a quote.
function filterText(name, callable) {
  const quote = (v) => (/[\s"'\\]/.test(v) ? `"${v.replace(/["\\]/g, "\\$&")}"` : v);
  return [name ? `name:${quote(name)}` : "", callable ? `callable:${quote(callable)}` : ""].filter(Boolean).join(" ");
}

async function tasksView(r) {
  const { state, order, pages, name, callable, q } = listing(r);
  const query = new URLSearchParams({ pageSize: PAGE_SIZE, order });
  if (pages.length) query.set("pageToken", pages[pages.length - 1]);
  if (name || callable) query.set("filter", filterText(name, callable));
  const listPath = state === "failed" ? `${V1}/queues/${q}/failed` : `${V1}/queues/${q}/tasks`;
  if (state !== "failed") query.set("state", state);
  const [stats, page, flow] = await Promise.all([
    statsByQueue(), api("GET", `${listPath}?${query}`), api("GET", `${V1}/flow?queue=${q}`).catch(() => null)]);
  return { data: [stats, page, flow], build: () => buildTasks(r, stats, page, flow) };
}

function filterForm(r, name, callable) {
  const apply = (e) => {
    e.preventDefault();
    const form = e.target.closest("form");
    location.hash = queueHref(r.queue, withParams(r.params, {
      name: form.elements.name.value.trim(), callable: form.elements.callable.value.trim(), pages: null,
    }));
  };
  return h("form", { class: "filters", id: "filters", role: "search", onsubmit: apply },
    h("label", {}, h("span", { class: "muted" }, "Name starts with"),
      h("input", { name: "name", id: "filter-name", value: name, placeholder: "report-", autocomplete: "off", spellcheck: "false" })),
    h("label", {}, h("span", { class: "muted" }, "Callable"),
      h("input", { name: "callable", id: "filter-callable", value: callable, placeholder: "myapp.mail.send", autocomplete: "off", spellcheck: "false" })),
    h("button", { class: "btn", type: "submit" }, "Find"),
    name || callable ? h("a", { class: "btn", id: "filter-clear", href: queueHref(r.queue, withParams(r.params, { name: null, callable: null, pages: null })) }, "Clear") : null);
}

function buildTasks(r, stats, page, flow) {
  const { state, order, pages, name, callable, q } = listing(r);
  const flowPanel = flow ? flowPanelFor(flow.queues[r.queue]) : null;
  const queue = stats.queues.find((x) => x.id === r.queue);
  if (!queue) throw Object.assign(new Error(`No queue named ${r.queue}.`), { status: 404 });
  crumbs([{ text: "Queues", href: "#/" }, { text: r.queue }]);
  const s = queue.stats || {};
  const now = page.now || stats.now;
  const header = h("section", { class: "queue-head" },
    h("div", {}, h("h1", {}, r.queue, " ", pill(queue.state)),
      h("p", { class: "muted" }, `${queue.rate || `${queue.rateLimits.maxDispatchesPerSecond}/s`} · bucket ${queue.rateLimits.maxBurstSize} · `,
        `${fmtNum(s.waiting)} waiting · ${fmtNum(s.due)} due · ${fmtNum(s.inFlight)} in flight · ${fmtNum(s.failed)} failed`)),
    h("div", { class: "actions" },
      s.failed ? h("button", {
        class: "btn primary", data: { action: "retry-all" },
        onclick: () => act(`Retrying ${s.failed} failed task(s)`, () => api("POST", `${V1}/queues/${q}/failed:retry`)),
      }, `Retry all failed (${fmtNum(s.failed)})`) : null,
      queueActions(queue)));
  const tabs = h("div", { class: "toolbar" },
    h("div", { class: "tabs", role: "tablist" }, STATES.map(([value, label]) => h("a", {
      href: queueHref(r.queue, withParams(r.params, { state: value === "all" ? null : value, pages: null })),
      class: value === state ? "tab active" : "tab", role: "tab", "aria-selected": String(value === state),
    }, label, value === "failed" && s.failed ? h("span", { class: "count" }, fmtNum(s.failed)) : null))),
    h("label", { class: "order" }, "Order ",
      h("select", {
        id: "order",
        onchange: (e) => { location.hash = queueHref(r.queue, withParams(r.params, { order: e.target.value === "soonest" ? null : e.target.value, pages: null })); },
      }, [["soonest", "Soonest first"], ["newest", "Newest first"]].map(([v, l]) => h("option", { value: v, selected: v === order }, l)))));
  const failedView = state === "failed";
  const cols = ["Task", "Runs", "State", failedView ? "Last attempt" : "ETA", "Created", "Retries", "Last status", "Size",
    ...(failedView ? ["Response"] : []), ""];
  const rows = page.tasks.map((t) => {
    const last = t.lastAttempt || {};
    return h("tr", { data: { task: t.name } },
      h("td", { class: "task" }, h("a", { href: taskHref(r.queue, t.name), class: "name mono" }, t.name)),
      runsCell(t),
      h("td", {}, pill(taskStateLabel(t))),
      failedView ? timeCell(last.dispatchTime, now) : timeCell(t.scheduleTime, now),
      timeCell(t.createTime, now, "opt"),
      h("td", { class: "num" }, fmtNum(t.retryCount)),
      h("td", { class: `num ${last.status >= 400 || last.status === 0 ? "bad" : ""}` }, last.dispatchTime ? String(last.status || "none") : "—"),
      h("td", { class: "num opt" }, fmtBytes(t.size)),
      failedView ? h("td", { class: "excerpt", title: last.responseExcerpt || "" }, firstLine(last.responseExcerpt) || "—") : null,
      h("td", { class: "end" }, taskActions(r.queue, t)));
  });
  const what = state === "all" ? "tasks" : `${STATES.find(([v]) => v === state)[1].toLowerCase()} tasks`;
  const empty = h("p", { class: "empty" }, name || callable
    ? `No ${what} match${page.nextPageToken ? " on this page (the search stopped early: try Next)" : ""}.`
    : state === "all" ? "No tasks in this queue." : `No ${what}.`);
  const pager = h("div", { class: "pager" },
    h("a", { class: `btn ${pages.length ? "" : "disabled"}`, href: pages.length ? queueHref(r.queue, withParams(r.params, { pages: pages.slice(0, -1).join(",") })) : null }, "← Previous"),
    h("span", { class: "muted" }, `Page ${pages.length + 1}`),
    h("a", { class: `btn ${page.nextPageToken ? "" : "disabled"}`, href: page.nextPageToken ? queueHref(r.queue, withParams(r.params, { pages: [...pages, page.nextPageToken].join(",") })) : null }, "Next →"));
  return [header, flowPanel, tabs, filterForm(r, name, callable), rows.length ? scroller(h("table", { class: "grid", id: "tasks" },
    h("thead", {}, h("tr", {}, cols.map((c, i) => h("th", {
      class: `${[3, 4, 5, 6, 7].includes(i) ? "num" : ""} ${c === "Created" || c === "Size" ? "opt" : ""}`,
    }, c)))),
    h("tbody", {}, rows))) : empty, pager];
}

async function taskView(r) {
  const base = `${V1}/queues/${encodeURIComponent(r.queue)}/tasks/${encodeURIComponent(r.task)}`;
  await statsByQueue();
  let parts;
  try {
    parts = await Promise.all([api("GET", base), api("GET", `${base}/payload`), api("GET", `${base}/attempts`)]);
  } catch (err) {
    if (err.status !== 404) throw err;
    parts = null;
  }
  return { data: parts, build: () => buildTask(r, parts) };
}

function buildTask(r, parts) {
  crumbs([{ text: "Queues", href: "#/" }, { text: r.queue, href: queueHref(r.queue) }, { text: r.task }]);
  if (!parts) {
    return [h("h1", { class: "mono" }, r.task), h("p", { class: "empty" },
      "This task is no longer in the queue: it ran successfully, or it was deleted or purged. ",
      h("a", { href: queueHref(r.queue) }, `Back to ${r.queue}`))];
  }
  const [task, payload, attempts] = parts;
  const req = task.resource.appEngineHttpRequest || task.resource.httpRequest || {};
  const last = task.lastAttempt || {};
  const overview = [
    ["Queue", h("a", { href: queueHref(task.queue) }, task.queue)],
    ["State", pill(taskStateLabel(task))],
    ["ETA", h("span", {}, `${localTime(task.scheduleTime)} (`, h("span", { data: { iso: task.scheduleTime } }, relTime(task.scheduleTime)), ")")],
    ["Created", localTime(task.createTime)],
    ["Request", h("span", { class: "mono" }, `${task.method} ${task.url}`)],
    ["Target", task.target === "http" ? "HTTP URL" : `App Engine${task.service ? ` · service ${task.service}` : ""}`],
    ["Retries", fmtNum(task.retryCount)], ["Executions", fmtNum(task.executionCount)],
    ["Dispatches", fmtNum(task.dispatchCount)], ["Last status", last.dispatchTime ? String(last.status || "no response") : "—"],
  ];
  return [
    h("section", { class: "queue-head" },
      h("div", {}, h("h1", { class: "mono" }, task.name),
        h("p", { class: "subtitle" }, pill(taskStateLabel(task)), "in queue ", h("a", { href: queueHref(task.queue) }, task.queue),
          "·", h("span", { class: "mono" }, `${task.method} ${task.url}`))),
      taskActions(task.queue, task)),
    h("div", { class: "columns" },
      h("section", { class: "panel" }, h("h2", {}, "Overview"),
        h("dl", { class: "facts" }, overview.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))),
      h("section", { class: "panel" }, h("h2", {}, "Payload"), payloadView(payload))),
    h("section", { class: "panel" }, h("h2", {}, "Headers"),
      h("table", { class: "grid compact" }, h("tbody", {}, Object.entries(req.headers || {}).map(([k, v]) =>
        h("tr", {}, h("th", { class: "mono key" }, k), h("td", { class: "mono" }, v)))))),
    h("section", { class: "panel" }, h("h2", {}, `Attempts (${attempts.attempts.length})`), attemptsView(attempts.attempts)),
  ];
}

function payloadView(p) {
  const facts = [["Format", p.format], ["Size", fmtBytes(p.size)]];
  if (p.contentType) facts.push(["Content type", p.contentType]);
  if (p.protocol !== undefined) facts.push(["Pickle protocol", String(p.protocol)]);
  const parts = [];
  if (p.call) parts.push(h("pre", { class: "code call", id: "payload-call" }, p.call));
  if (p.value) parts.push(h("pre", { class: "code" }, p.value));
  if (p.excerpt !== undefined) parts.push(h("pre", { class: "code" }, p.excerpt + (p.truncated ? "…" : "")));
  if (p.error) parts.push(h("p", { class: "bad" }, p.error));
  if (p.entity) {
    parts.push(h("p", { class: "muted" }, `Stored as entity ${p.entity.key}` + (p.entity.missing ? " (missing)" : `, ${fmtBytes(p.entity.size)}:`)));
    if (p.entity.call) parts.push(h("pre", { class: "code call" }, p.entity.call));
  }
  if (p.globals && p.globals.length) facts.push(["Names", h("span", { class: "mono" }, p.globals.join(", "))]);
  parts.push(h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
  return parts;
}

const TRACEBACK_RE = /^Traceback \(most recent call last\):/m;

// An attempt's answer, folded to its first line (for a Python traceback, the exception too).
function responseView(a, open) {
  const text = a.response !== undefined ? a.response : a.responseExcerpt || "";
  if (!text) return h("span", { class: "muted" }, a.status ? "(empty answer)" : "—");
  const lines = text.replace(/\n$/, "").split("\n");
  const first = firstLine(text);
  const traceback = TRACEBACK_RE.test(text);
  const exception = traceback ? lines.filter((l) => l.trim()).pop() : "";
  if (lines.filter((l) => l.trim()).length <= 1 && first.length <= 120 && !a.responseTruncated) {
    return h("code", { class: "response-line" }, first);
  }
  return h("details", { class: `response ${traceback ? "has-traceback" : ""}`, id: `response-${a.number}`, open: open || null },
    h("summary", {}, traceback ? h("span", { class: "tag bad" }, "traceback") : null,
      h("code", {}, traceback && exception !== first ? `${exception}` : first),
      h("span", { class: "muted size" }, ` · ${fmtNum(lines.length)} lines, ${fmtBytes(new Blob([text]).size)}`)),
    h("pre", { class: `code ${traceback ? "traceback" : "body"}` }, text),
    a.responseTruncated ? h("p", { class: "muted" }, "The answer was longer: the first 64 KiB were kept.") : null);
}

function attemptsView(attempts) {
  if (!attempts.length) return h("p", { class: "empty" }, "No failed attempts recorded yet (a successful attempt deletes the task).");
  const lastNumber = attempts[attempts.length - 1].number;
  return scroller(h("table", { class: "grid", id: "attempts" },
    h("thead", {}, h("tr", {}, ["#", "Dispatched", "Status", "Latency", "Retry reason"].map((c, i) =>
      h("th", { class: [0, 2, 3].includes(i) ? "num" : "" }, c)))),
    h("tbody", {}, attempts.map((a) => [
      h("tr", { class: "attempt", data: { attempt: String(a.number) } },
        h("td", { class: "num" }, String(a.number)),
        h("td", { class: "num time" }, localTime(a.dispatchTime)),
        h("td", { class: `num ${a.status >= 200 && a.status < 300 ? "good" : "bad"}` }, a.status ? String(a.status) : "none"),
        h("td", { class: "num" }, `${a.latencyMs.toFixed(1)} ms`),
        h("td", {}, a.retryReason || "—")),
      h("tr", { class: "answer", data: { attempt: String(a.number) } },
        h("td", { colspan: "5" }, responseView(a, a.number === lastNumber))),
    ]))));
}

// -- refresh loop --------------------------------------------------------------------------------

async function refresh() {
  const seq = ++renderSeq;
  const r = route();
  const main = document.getElementById("main");
  try {
    const views = { queues: queuesView, tasks: tasksView, task: taskView };
    const view = views[r.view];
    const result = view ? await view(r) : { data: null, build: () => [h("p", { class: "empty" }, "Nothing here. ", h("a", { href: "#/" }, "Go to the queues"))] };
    if (seq !== renderSeq) return;
    // Re-render only when something changed: a button being clicked must not be replaced under the pointer.
    const key = location.hash + JSON.stringify(result.data, (k, v) => (k === "now" ? undefined : v));
    if (key !== lastKey) {
      // Folded answers the user opened or closed stay so across a re-render.
      const folds = new Map([...main.querySelectorAll("details[id]")].map((d) => [d.id, d.open]));
      main.replaceChildren(...[result.build()].flat());
      for (const d of main.querySelectorAll("details[id]")) if (folds.has(d.id)) d.open = folds.get(d.id);
      lastKey = key;
    } else {
      const now = nowOf(result.data);
      for (const el of main.querySelectorAll("[data-iso]")) el.textContent = relTime(el.dataset.iso, now);
    }
    setStatus(`Live · updated ${new Date().toLocaleTimeString([], { hour12: false })}`, "live");
  } catch (err) {
    if (seq !== renderSeq) return;
    lastKey = "";
    if (err.status) main.replaceChildren(h("p", { class: "empty bad" }, err.message, " ", h("a", { href: "#/" }, "Back to the queues")));
    setStatus(err.status ? "Live" : "Emulator unreachable", err.status ? "live" : "down");
  }
}

function nowOf(data) {
  const found = [data].flat(2).find((d) => d && d.now);
  return found ? found.now : new Date().toISOString();
}

function setStatus(text, kind) {
  const el = document.getElementById("status");
  el.className = `status ${kind}`;
  el.textContent = text;
}

function tick() {
  const dialogOpen = document.getElementById("confirm").open;
  // A re-render would close a select the user has open, or replace a field being typed in.
  const choosing = document.activeElement && ["SELECT", "INPUT"].includes(document.activeElement.tagName);
  if (document.visibilityState === "visible" && !busy && !dialogOpen && !choosing) refresh();
}

window.addEventListener("hashchange", refresh);
document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") tick(); });
window.addEventListener("DOMContentLoaded", () => {
  refresh();
  setInterval(tick, REFRESH_MS);
  api("GET", `${V1}/health`).then((health) => {
    document.title = `deferred-emulator ${health.version}`;
    const flags = [health.virtualClock ? "virtual clock" : null, health.dispatch ? null : "dispatch off"].filter(Boolean);
    document.querySelector(".brand").append(h("span", { class: "version" }, `v${health.version}`, flags.length ? ` · ${flags.join(" · ")}` : ""));
  }).catch(() => {});
});
