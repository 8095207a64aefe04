// The run page's system figures: CPU and resident memory of its worker
// process, and its GPU's utilisation, memory, temperature and power, as the
// worker sent them with each heartbeat (GET /runs/{id}/system.json). While
// the run runs, a slow timer reads them again: they arrive with heartbeats,
// which send no page event.
"use strict";
(function () {
  const section = document.getElementById("system");
  const C = window.maelabCharts;
  if (!section || !C || typeof uPlot === "undefined") return;
  const box = document.getElementById("system-charts");
  const none = document.getElementById("no-system");
  const REFRESH_MS = 10000;
  const CHARTS = [
    { title: "GPU memory (MiB)", series: [["gpu_memory_used_mib", "used"], ["gpu_memory_total_mib", "total"]] },
    { title: "GPU utilisation (%)", series: [["gpu_utilization_percent", "utilisation"]] },
    { title: "GPU temperature (°C) and power (W)", series: [["gpu_temperature_c", "°C"], ["gpu_power_watts", "W"]] },
    { title: "Worker CPU (% of one core)", series: [["cpu_percent", "CPU %"]] },
    { title: "Worker resident memory (MiB)", series: [["rss_mib", "RSS"]] },
  ];
  const drawn = {};  // title -> {u, box}

  function draw(cols) {
    if (!cols.minutes.length) return;
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

  function load() {
    fetch(section.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (res) {
        if (!res.ok) throw new Error("HTTP " + res.status);
        return res.json();
      })
      .then(draw).catch(function (e) {
      console.warn("system figures:", e);
    });
  }

  load();
  if (section.dataset.running === "true") {
    const timer = setInterval(function () {
      const status = document.getElementById("status");
      if (status && !status.classList.contains("status-running")) clearInterval(timer);
      load();
    }, REFRESH_MS);
  }
})();
