// nubis console: a deployment's traffic charts (uPlot), from /deployments/NAME/metrics.json.
"use strict";
(function () {
  const REFRESH_MS = 10000;
  const SERIES = {
    requests: [{ label: "requests/s", stroke: "#2f5bea", key: "requests_per_s" }],
    errors: [{ label: "5xx/s", stroke: "#cf222e", key: "errors_per_s" }],
    latency: [{ label: "p50 ms", stroke: "#1a7f37", key: "p50_ms" }, { label: "p95 ms", stroke: "#c4500f", key: "p95_ms" }],
  };

  function columns(history, lines) {
    const xs = history.points.map(function (p) { return Date.parse(p.at) / 1000; });
    return [xs].concat(lines.map(function (line) {
      return history.points.map(function (p) { return p[line.key]; });
    }));
  }

  function makeChart(el, history) {
    const lines = SERIES[el.dataset.series];
    const opts = {
      title: el.dataset.title, width: Math.max(240, el.clientWidth), height: 160,
      scales: { x: { time: true } },
      series: [{}].concat(lines.map(function (l) { return { label: l.label, stroke: l.stroke, width: 1.5, spanGaps: false }; })),
      axes: [{}, { size: 50 }],
    };
    return { el: el, lines: lines, plot: new window.uPlot(opts, columns(history, lines), el) };
  }

  function start(box) {
    const url = box.dataset.metrics;
    let charts = null;
    function load() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(new Error("HTTP " + r.status)); })
        .then(function (history) {
          if (charts === null) {
            charts = Array.prototype.map.call(box.querySelectorAll(".chart[data-series]"), function (el) { return makeChart(el, history); });
          } else {
            charts.forEach(function (c) { c.plot.setData(columns(history, c.lines)); });
          }
          box.dataset.loaded = String(history.points.length);
        })
        .catch(function () { box.dataset.loaded = "error"; });
    }
    load();
    setInterval(load, REFRESH_MS);
    window.addEventListener("resize", function () {
      (charts || []).forEach(function (c) { c.plot.setSize({ width: Math.max(240, c.el.clientWidth), height: 160 }); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!window.uPlot) return;
    document.querySelectorAll("[data-metrics]").forEach(start);
  });
})();
