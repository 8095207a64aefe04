// The run page's system figures: CPU and resident memory of its worker
// process, and its GPU's utilisation, memory, temperature and power, as the
// worker sent them with each heartbeat. The history is read once
// (GET /runs/{id}/system.json); then each `system` event of the page's stream
// (run.js's EventSource) adds one point. After a reconnect the history is
// read again, since points may have been missed meanwhile.
"use strict";
(function () {
  const section = document.getElementById("system");
  const C = window.maelabCharts;
  if (!section || !C || typeof uPlot === "undefined") return;
  const box = document.getElementById("system-charts");
  const none = document.getElementById("no-system");
  const FIGURES = ["cpu_percent", "rss_mib", "gpu_utilization_percent", "gpu_memory_used_mib",
                   "gpu_memory_total_mib", "gpu_temperature_c", "gpu_power_watts"];
  const CHARTS = [
    { title: "GPU memory (MiB)", series: [["gpu_memory_used_mib", "used"], ["gpu_memory_total_mib", "total"]] },
    { title: "GPU utilisation (%)", series: [["gpu_utilization_percent", "utilisation"]] },
    { title: "GPU temperature (°C) and power (W)", series: [["gpu_temperature_c", "°C"], ["gpu_power_watts", "W"]] },
    { title: "Worker CPU (% of one core)", series: [["cpu_percent", "CPU %"]] },
    { title: "Worker resident memory (MiB)", series: [["rss_mib", "RSS"]] },
  ];
  const drawn = {};  // title -> {u, box}
  let cols = null;   // the columns drawn; null until the history is read
  const early = [];  // points that arrived before the history

  function draw() {
    if (!cols || !cols.minutes.length) return;
    none.hidden = true;
    CHARTS.forEach(function (spec) {
      const ys = spec.series.map(function (s) { return cols[s[0]]; });
      if (!ys.some(C.hasValues)) return;  // a CPU worker has no GPU charts
      const data = [cols.minutes].concat(ys);
      const c = drawn[spec.title];
      if (c) { c.u.setData(data); return; }
      drawn[spec.title] = C.make(box, {
        title: spec.title, xLabel: "minutes",
        series: spec.series.map(function (s) { return { label: s[1] }; }),
      }, data);
    });
  }

  function add(point) {
    const at = Date.parse(point.sampled_at);
    if (cols.first_sampled_at === null) {
      cols.first_sampled_at = point.sampled_at;
    }
    const minutes = (at - Date.parse(cols.first_sampled_at)) / 60000;
    const n = cols.minutes.length;
    if (n && minutes <= cols.minutes[n - 1]) return;  // already in the history
    cols.minutes.push(minutes);
    FIGURES.forEach(function (k) { cols[k].push(point[k]); });
  }

  function load() {
    fetch(section.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (res) {
        if (!res.ok) throw new Error("HTTP " + res.status);
        return res.json();
      })
      .then(function (history) {
        cols = history;
        early.splice(0).forEach(add);
        draw();
      })
      .catch(function (e) { console.warn("system figures:", e); });
  }

  // For the browser tests: the points each drawn chart holds.
  window.maelabSystem = {
    drawn: function (title) { const c = drawn[title]; return c ? c.u.data[0].length : 0; },
  };

  const es = window.maelabEvents;
  if (es) {
    es.addEventListener("system", function (ev) {
      const point = JSON.parse(ev.data);
      if (!cols) { early.push(point); return; }
      add(point);
      draw();
    });
    let opened = false;
    es.addEventListener("open", function () {
      if (opened) load();  // a reconnect: points may have been missed
      opened = true;
    });
  }
  load();
})();
