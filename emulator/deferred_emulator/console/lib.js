// The console's helpers: building DOM nodes, calling the JSON API, formatting, and hash routing.
// Loaded before app.js, which holds the views; both are plain scripts sharing one global scope.
"use strict";

// -- DOM and HTTP helpers ------------------------------------------------------------------------

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "data") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(3)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

async function api(method, path, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (method !== "GET") {
    // State-changing requests always carry a JSON body: the emulator refuses anything else.
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body || {});
  }
  const resp = await fetch(path, init);
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error((data.error && data.error.message) || `${resp.status} ${resp.statusText}`);
    err.status = resp.status;
    throw err;
  }
  return data;
}

function toast(text, kind) {
  const el = h("div", { class: `toast ${kind || ""}`, role: "status" }, text);
  document.getElementById("toasts").append(el);
  setTimeout(() => el.remove(), kind === "error" ? 7000 : 3500);
}

function confirmDialog(title, text, action) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = action;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

// -- formatting ----------------------------------------------------------------------------------

const fmtNum = (n) => Number(n || 0).toLocaleString("en-US");

// A duration in its two largest units, never rounded up: "1h 59m", "5m 3s", "2d 4h".
function spanText(seconds) {
  const whole = Math.floor(seconds);
  const units = [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];
  const i = units.findIndex(([, size]) => whole >= size);
  if (i < 0) return "0s";
  const [unit, size] = units[i];
  const first = `${Math.floor(whole / size)}${unit}`;
  if (unit === "s") return first;
  const [small, smallSize] = units[i + 1];
  const second = Math.floor((whole % size) / smallSize);
  return second ? `${first} ${second}${small}` : first;
}

function relTime(iso, nowIso) {
  if (!iso) return "—";
  const s = (Date.parse(iso) - Date.parse(nowIso || new Date().toISOString())) / 1000;
  if (Math.abs(s) < 1) return "now";
  const amount = spanText(Math.abs(s));
  return s > 0 ? `in ${amount}` : `${amount} ago`;
}

// The browser's zone as it names it ("UTC", "CET", "GMT+2"), shown after every full time.
const zoneName = (d) => (new Intl.DateTimeFormat("en-US", { timeZoneName: "short" }).formatToParts(d)
  .find((p) => p.type === "timeZoneName") || { value: "" }).value;

function localTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)} ${zoneName(d)}`;
}

// What a task runs: its deferred call in short, else its method and URL.
function runsText(t) {
  return t.callable ? `${t.callable}(${t.argsSummary || ""})` : `${t.method} ${t.url}`;
}

function runsCell(t) {
  if (!t.callable) return h("td", { class: "runs mono muted", data: { col: "runs" } }, `${t.method} ${t.url}`);
  return h("td", { class: "runs mono", data: { col: "runs" }, title: runsText(t) },
    h("span", { class: "callable" }, t.callable), h("span", { class: "args" }, `(${t.argsSummary || ""})`));
}

// Wide tables scroll inside this box, never the page.
const scroller = (table) => h("div", { class: "table-scroll" }, table);
const firstLine = (text) => (text || "").split("\n").find((line) => line.trim()) || "";

const timeCell = (iso, now, extra) => h("td", { class: `num time ${extra || ""}`, title: localTime(iso), data: iso ? { iso } : null }, relTime(iso, now));
const pill = (state) => h("span", { class: `pill ${String(state).toLowerCase().replace(/ /g, "-")}` }, state);

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

// -- routing -------------------------------------------------------------------------------------

function route() {
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return { view: "queues", params };
  if (parts[0] === "queues" && parts.length === 2) return { view: "tasks", queue: parts[1], params };
  if (parts[0] === "queues" && parts[2] === "tasks" && parts.length === 4) {
    return { view: "task", queue: parts[1], task: parts[3], params };
  }
  return { view: "missing", params };
}

function href(path, params) {
  const query = params && [...params].length ? `?${params}` : "";
  return `#${path}${query}`;
}

const queueHref = (q, params) => href(`/queues/${encodeURIComponent(q)}`, params);
const taskHref = (q, t) => href(`/queues/${encodeURIComponent(q)}/tasks/${encodeURIComponent(t)}`);

function withParams(params, changes) {
  const next = new URLSearchParams(params);
  for (const [key, value] of Object.entries(changes)) {
    if (value === null || value === "" || value === undefined) next.delete(key);
    else next.set(key, value);
  }
  return next;
}

function crumbs(items) {
  const nav = document.getElementById("crumbs");
  nav.replaceChildren(...items.flatMap((item, i) => [
    i ? h("span", { class: "sep", "aria-hidden": "true" }, "/") : null,
    item.href ? h("a", { href: item.href }, item.text) : h("span", { class: "here" }, item.text),
  ]).filter(Boolean));
}
