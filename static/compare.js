// Compare page: overlay the picked runs' per-epoch curves.
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
})();
