// The study page: grouped curves (per arm the mean over seeds and a shaded
// band from the lowest to the highest seed, uPlot's `bands`), and the chains
// table kept live from the API's study stream (`progress` events). When the
// set of succeeded chains changes, the results were computed from other
// chains than are now done: the page reloads (debounced) to show new ones.
"use strict";
(function () {
  const root = document.getElementById("study");
  if (!root) return;
  const D = JSON.parse(root.dataset.study);
  const C = window.maelabCharts;
  const COLORS = C ? C.COLORS : ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"];

  function color(index) { return COLORS[index % COLORS.length]; }
  function alpha(hex, a) {
    const n = parseInt(hex.slice(1), 16);
    return "rgba(" + ((n >> 16) & 255) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + a + ")";
  }
  function fmt(v) {
    if (v == null) return "—";
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(3) : String(+v.toPrecision(5));
  }

  // One chart per stage and metric: data columns are x, then for each arm
  // its mean, its highest seed and its lowest seed; the band fills from the
  // highest down to the lowest.
  const charts = [];
  function drawCharts() {
    const box = document.getElementById("study-charts");
    if (!box || typeof uPlot === "undefined") return;
    const width = Math.max(360, Math.min(Math.floor((box.clientWidth || 1300) / 2) - 16, 660));
    D.curves.forEach(function (chart) {
      const data = [chart.epochs];
      const series = [{ label: "epoch" }];
      const bands = [];
      const edges = [];
      chart.arms.forEach(function (a) {
        const c = color(a.index);
        data.push(a.mean, a.high, a.low);
        const mean = series.length;
        series.push({ label: a.arm, stroke: c, width: 2, spanGaps: true, points: { show: chart.epochs.length < 3 },
                      value: function (u, v) { return fmt(v); } });
        series.push({ label: a.arm + " highest seed", stroke: alpha(c, 0.35), width: 1, spanGaps: true,
                      points: { show: false }, value: function (u, v) { return fmt(v); } });
        series.push({ label: a.arm + " lowest seed", stroke: alpha(c, 0.35), width: 1, spanGaps: true,
                      points: { show: false }, value: function (u, v) { return fmt(v); } });
        bands.push({ series: [mean + 1, mean + 2], fill: alpha(c, 0.16) });
        edges.push(mean + 1, mean + 2);
      });
      const el = document.createElement("div");
      el.className = "chart";
      el.dataset.title = chart.title;
      el.dataset.key = chart.key;
      box.appendChild(el);
      const u = new uPlot({
        title: chart.title,
        width: width,
        height: 260,
        series: series,
        bands: bands,
        scales: { x: { time: false } },
        // Epochs are whole: no 0.1 ticks on a two-epoch study.
        axes: [{ label: "epoch", incrs: C.WHOLE_INCRS },
               { size: 64, values: function (u, ticks) { return ticks.map(fmt); } }],
        cursor: { drag: { x: true, y: false } },
        legend: { live: true },
        hooks: { setData: [C.widenSingleX] },
      }, data, el);
      // The band edges are drawn but not listed: the legend shows one line per arm.
      const rows = u.root.querySelectorAll(".u-legend .u-series");
      edges.forEach(function (i) { if (rows[i]) rows[i].style.display = "none"; });
      charts.push({ key: chart.key, title: chart.title, u: u });
    });
  }

  // --- live chains ---------------------------------------------------------

  const succeeded = new Set(D.succeeded);
  let reloadTimer = null;
  const state = { progress: 0, last: null, reloading: false, loadedAt: Date.now() + Math.random() };
  window.maelabStudy = state;

  function setStatus(el, status) {
    el.textContent = status;
    el.className = "status status-" + status;
  }

  function runCell(td, run) {
    td.replaceChildren();
    if (!run) { td.textContent = "—"; return; }
    const a = document.createElement("a");
    a.href = "/runs/" + run.run_id;
    const badge = document.createElement("span");
    setStatus(badge, run.status);
    a.appendChild(badge);
    a.appendChild(document.createTextNode(" " + run.epochs_done + "/" + run.epochs_total));
    td.appendChild(a);
  }

  function chainRow(c) {
    return document.querySelector('#chains tr[data-arm="' + CSS.escape(c.arm) + '"][data-seed="' + CSS.escape(String(c.seed)) + '"]');
  }

  function onProgress(p) {
    state.progress += 1;
    state.last = p;
    setStatus(document.getElementById("study-status"), p.status);
    // `chains` is the list of chains, `chains_total` their count.
    const total = p.chains_total;
    [["chains-succeeded", p.chains_succeeded], ["chains-total", total],
     ["chains-failed", p.chains_failed], ["chains-active", p.active]].forEach(function (kv) {
      const el = document.getElementById(kv[0]);
      if (el) el.textContent = String(kv[1]);
    });
    const open = p.cancelled_at == null;
    document.getElementById("cancel-study-form").hidden =
      !(open && (p.active > 0 || p.status === "calibrating" || p.status === "running"));
    document.getElementById("retry-study-form").hidden = !(p.chains_failed > 0 || !open);
    const now = new Set();
    p.chains.forEach(function (c) {
      if (c.status === "succeeded") now.add(c.arm + "/" + c.seed);
      const tr = chainRow(c);
      if (!tr) return;
      setStatus(tr.querySelector("[data-col=status]"), c.status);
      runCell(tr.querySelector("[data-col=pretrain]"), c.pretrain);
      runCell(tr.querySelector("[data-col=finetune]"), c.finetune);
      tr.querySelector("[data-col=error]").textContent = c.error || "";
      const retry = tr.querySelector("form.retry-chain");
      if (retry) retry.hidden = !(c.status === "failed" || c.status === "cancelled");
    });
    const changed = now.size !== succeeded.size || Array.from(now).some(function (k) { return !succeeded.has(k); });
    if (changed && !reloadTimer) {
      // Let a burst of finishing chains land, then show their results.
      state.reloading = true;
      reloadTimer = setTimeout(function () { location.reload(); }, 1000);
    }
  }

  function connect() {
    const es = new EventSource("/api/v1/studies/" + D.study_id + "/events");
    es.addEventListener("progress", function (ev) { onProgress(JSON.parse(ev.data)); });
    window.maelabStudyEvents = es;
  }

  drawCharts();
  // For the browser tests: what each chart draws (series without x, bands).
  window.maelabStudyCharts = charts.map(function (c) {
    return { key: c.key, title: c.title, series: c.u.series.length - 1, bands: (c.u.bands || []).length,
             arms: (c.u.series.length - 1) / 3 };
  });
  connect();
})();
