// nubis console: a job's per-epoch charts (uPlot), grown live from the job's `metrics` events.
// The page holds the history so far (data-history) and the metric names (data-series); each new
// record arrives as JSON on the page's event stream (/jobs/ID/updates, sse-swap="metrics").
"use strict";
(function () {
  const COLOURS = ["#2f5bea", "#cf222e", "#1a7f37", "#9a6700", "#a3218e", "#0a7ea4"];
  const SKIP = { epoch: true, epochs: true, elapsed_s: true };  // as NOT_CHARTED in pages/jobs.py
  const HEIGHT = 200;

  function groupOf(key) {
    if (/loss/i.test(key)) return "loss";
    if (/acc|f1|precision|recall|auc|score/i.test(key)) return "accuracy";
    return key;
  }

  function isNumber(value) {
    return typeof value === "number" && isFinite(value);
  }

  function TrainingCharts(el) {
    this.el = el;
    this.history = JSON.parse(el.dataset.history || "[]");
    this.keys = JSON.parse(el.dataset.series || "[]");
    this.groups = {};
    this.draw();
  }

  TrainingCharts.prototype.add = function (record) {
    this.history.push(record);
    let added = false;
    for (const key in record) {
      if (!SKIP[key] && isNumber(record[key]) && this.keys.indexOf(key) < 0) {
        this.keys.push(key);
        added = true;
      }
    }
    if (added) this.reset();
    this.draw();
  };

  TrainingCharts.prototype.reset = function () {
    for (const name in this.groups) {
      this.groups[name].plot.destroy();
      this.groups[name].box.remove();
    }
    this.groups = {};
  };

  TrainingCharts.prototype.data = function (keys) {
    const xs = this.history.map(function (r, i) { return isNumber(r.epoch) ? r.epoch : i + 1; });
    const columns = keys.map(function (key) {
      return this.history.map(function (r) { return isNumber(r[key]) ? r[key] : null; });
    }, this);
    return [xs].concat(columns);
  };

  TrainingCharts.prototype.draw = function () {
    if (!this.history.length || !this.keys.length) return;
    const empty = this.el.querySelector("#no-metrics");
    if (empty) empty.remove();
    const byGroup = {};
    this.keys.forEach(function (key) { (byGroup[groupOf(key)] = byGroup[groupOf(key)] || []).push(key); });
    const fresh = [];
    for (const name in byGroup) {
      if (this.groups[name]) {
        this.groups[name].plot.setData(this.data(byGroup[name]));
        continue;
      }
      const box = document.createElement("div");
      box.className = "chart";
      box.style.minWidth = "0";  // a grid cell may shrink below its canvas; resize() fits the canvas
      this.el.appendChild(box);
      fresh.push(name);
      this.groups[name] = { box: box, plot: null };
    }
    // every box is in the grid before any is measured: each new chart changes the others' width
    fresh.forEach(function (name) {
      const keys = byGroup[name];
      const group = this.groups[name];
      const opts = {
        title: name, width: this.widthOf(group.box), height: HEIGHT,
        scales: { x: { time: false } },
        axes: [{ label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000] }, {}],
        series: [{ label: "epoch" }].concat(keys.map(function (key, i) {
          return { label: key, stroke: COLOURS[i % COLOURS.length], width: 2, points: { show: true, size: 4 } };
        })),
      };
      group.plot = new uPlot(opts, this.data(keys), group.box);
    }, this);
    if (fresh.length) this.resize();
  };

  TrainingCharts.prototype.widthOf = function (box) {
    return Math.max(240, Math.floor(box.getBoundingClientRect().width));
  };

  TrainingCharts.prototype.resize = function () {
    for (const name in this.groups) {
      const group = this.groups[name];
      if (group.plot) group.plot.setSize({ width: this.widthOf(group.box), height: HEIGHT });
    }
  };

  document.addEventListener("DOMContentLoaded", function () {
    const el = document.getElementById("job-chart");
    if (!el || typeof uPlot === "undefined") return;
    const charts = new TrainingCharts(el);
    el.addEventListener("htmx:sseMessage", function (event) {
      if (event.target !== el) return;
      charts.add(JSON.parse(event.detail.data));
      el.dataset.epochs = String(charts.history.length);
    });
    let pending = null;
    window.addEventListener("resize", function () {
      clearTimeout(pending);
      pending = setTimeout(function () { charts.resize(); }, 150);
    });
    el.dataset.epochs = String(charts.history.length);
  });
})();
