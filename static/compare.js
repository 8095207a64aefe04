// Compare page: overlay the picked runs' per-epoch curves, and any one
// metric key of theirs picked in the selector: an epoch column from the
// embedded series, any other key read from the API (one series per run).
"use strict";
(function () {
  const box = document.getElementById("compare-charts");
  if (!box) return;
  const runs = JSON.parse(box.dataset.series);
  const C = window.maelabCharts;
  const metrics = [["train_loss", "Training loss"], ["test_loss", "Test loss"],
                   ["test_acc1", "Top-1 (%)"], ["test_acc5", "Top-5 (%)"],
                   ["psnr", "PSNR (dB)"], ["hf_ratio", "High-frequency ratio"]];
  metrics.forEach(function (m) {
    const key = m[0];
    if (!runs.some(function (r) { return C.hasValues(r.epochs[key]); })) return;
    const tables = runs.map(function (r) { return [r.epochs.epoch, r.epochs[key]]; });
    const data = uPlot.join(tables);
    C.make(box, { title: m[1], xLabel: "epoch",
                  series: runs.map(function (r) { return { label: r.name }; }) }, data);
  });

  const picker = document.getElementById("compare-key");
  const overlay = document.getElementById("compare-overlay");
  const M = window.maelabMetrics;
  if (!picker || !overlay || !M) return;
  let chart = null, shown = 0;
  const state = { key: "", series: 0, data: null };
  window.maelabCompare = state;

  // One [x, y] table per run: the epoch column if it is one, else the points.
  function table(r, key) {
    const column = r.epochs[key];
    if (Array.isArray(column)) return Promise.resolve([r.epochs.epoch, column]);
    return M.points(r.run_id, key, -1).then(function (p) { return [p.step, p.value]; });
  }

  function show() {
    const key = picker.value;
    const mine = ++shown;
    const url = new URL(location.href);
    if (key) url.searchParams.set("key", key); else url.searchParams.delete("key");
    history.replaceState(null, "", url);
    if (chart) { chart.u.destroy(); chart.box.remove(); chart = null; }
    state.key = key; state.series = 0; state.data = null;
    if (!key) return;
    Promise.all(runs.map(function (r) { return table(r, key); })).then(function (tables) {
      if (mine !== shown) return;
      const isEpoch = runs.some(function (r) { return Array.isArray(r.epochs[key]); });
      const data = uPlot.join(tables);
      chart = C.make(overlay, { title: key, xLabel: isEpoch ? "epoch" : "step",
                                series: runs.map(function (r) { return { label: r.name }; }) }, data);
      state.series = runs.length;
      state.data = data;
    }).catch(function (e) { console.warn("maelab: reading " + key + " failed", e); });
  }
  picker.addEventListener("change", show);
  show();
})();
