// The flow chart: attempts per minute over the last hour, as a few SVG polylines (no library, no build step).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
// Drawn in this order, so the totals sit under the parts.
const FLOW_SERIES = [
  ["dispatched", "Dispatched"],
  ["succeeded", "Succeeded"],
  ["retried", "Retried"],
  ["failed", "Failed (gave up)"],
];

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, value);
  el.append(...children);
  return el;
}

// One queue's series ({dispatched: [60 counts], ...}) as an SVG chart of width x height viewBox units.
function flowChart(series, { width = 120, height = 28, label = "" } = {}) {
  const minutes = series.dispatched.length;
  const top = Math.max(1, ...FLOW_SERIES.flatMap(([key]) => series[key]));
  const pad = 2;
  const x = (i) => (pad + (i * (width - 2 * pad)) / Math.max(1, minutes - 1)).toFixed(1);
  const y = (n) => (height - pad - (n * (height - 2 * pad)) / top).toFixed(1);
  const totals = Object.fromEntries(FLOW_SERIES.map(([key]) => [key, series[key].reduce((a, b) => a + b, 0)]));
  const summary = FLOW_SERIES.map(([key, name]) => `${name.toLowerCase()} ${fmtNum(totals[key])}`).join(", ");
  const title = `${label ? `${label}: ` : ""}attempts per minute over the last hour (busiest minute ${fmtNum(top)}): ${summary}`;
  const chart = svg("svg", {
    class: "flow", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img", "aria-label": title,
  }, svg("title", {}, title), svg("line", { class: "axis", x1: 0, x2: width, y1: height - pad, y2: height - pad }));
  for (const [key] of FLOW_SERIES) {
    const points = series[key].map((n, i) => `${x(i)},${y(n)}`).join(" ");
    chart.append(svg("polyline", { class: `series ${key}`, points, "data-series": key, "data-points": String(series[key].length) }));
  }
  return chart;
}

function flowLegend(series) {
  return h("ul", { class: "legend" }, FLOW_SERIES.map(([key, name]) => h("li", { class: key },
    h("span", { class: "swatch", "aria-hidden": "true" }), `${name} `,
    h("strong", { data: { total: key } }, fmtNum(series[key].reduce((a, b) => a + b, 0))))));
}

// The queue page's panel: a wide chart, its scale and a legend with the hour's totals.
function flowPanelFor(series) {
  if (!series) return null;
  return h("section", { class: "panel flow-panel", id: "flow" },
    h("h2", {}, "Flow · attempts per minute, last hour"),
    h("div", { class: "flow-peak muted" }, `busiest minute: ${fmtNum(Math.max(0, ...series.dispatched))}`),
    h("div", { class: "flow-wide" }, flowChart(series, { width: 600, height: 90 })),
    h("div", { class: "flow-axis muted" }, h("span", {}, "60 min ago"), h("span", {}, "now")),
    flowLegend(series));
}
