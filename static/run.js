// The run page: draws the embedded history, then follows the run's event
// stream (no timer polling). The stream resumes after the page's cursor, and
// after the last event id when the browser reconnects, so nothing is shown
// twice and nothing is skipped.
"use strict";
(function () {
  const root = document.getElementById("run");
  if (!root) return;
  const H = JSON.parse(root.dataset.history);
  const E = H.epochs, S = H.steps;
  const recons = H.recons.slice();
  const chartsBox = document.getElementById("charts");
  const logBox = document.getElementById("log-scale");
  const smoothBox = document.getElementById("smoothing");
  const C = window.maelabCharts;
  let charts = [];

  // Read at every redraw (not when a chart is built), so the slider applies at once.
  function smoothing() { return parseFloat(smoothBox.value) || 0; }

  function defs() {
    const log = logBox.checked;
    const list = [
      { key: "step-loss", title: "Training loss per step", x: "step", log: log,
        data: function () { return [S.step, S.train_loss, C.ema(S.train_loss, smoothing())]; },
        series: [{ label: "loss", color: "#9ecae1", width: 1 }, { label: "smoothed", color: "#1f77b4" }],
        show: function () { return S.step.length > 0; } },
      { key: "lr", title: "Learning rate", x: "step", log: log,
        data: function () { return [S.step, S.lr]; },
        series: [{ label: "lr" }], show: function () { return S.step.length > 0; } },
      { key: "epoch-loss", title: "Loss per epoch", x: "epoch", log: log,
        data: function () { return [E.epoch, C.ema(E.train_loss, smoothing()), E.test_loss]; },
        series: [{ label: "train loss" }, { label: "test loss" }],
        show: function () { return E.epoch.length > 0; } },
      { key: "acc", title: "Top-1 / top-5 (%)", x: "epoch", log: false,
        data: function () { return [E.epoch, E.test_acc1, E.test_acc5]; },
        series: [{ label: "top-1" }, { label: "top-5" }],
        show: function () { return C.hasValues(E.test_acc1) || C.hasValues(E.test_acc5); } },
      { key: "psnr", title: "PSNR of masked patches (dB)", x: "epoch", log: false,
        data: function () { return [E.epoch, E.psnr]; }, series: [{ label: "PSNR" }],
        show: function () { return C.hasValues(E.psnr); } },
      { key: "hf", title: "High-frequency ratio", x: "epoch", log: false,
        data: function () { return [E.epoch, E.hf_ratio]; }, series: [{ label: "HF ratio" }],
        show: function () { return C.hasValues(E.hf_ratio); } },
    ];
    return list;
  }

  function build() {
    charts.forEach(function (c) { c.u.destroy(); c.box.remove(); });
    charts = [];
    defs().forEach(function (d) {
      if (!d.show()) return;
      const made = C.make(chartsBox, { title: d.title, xLabel: d.x, series: d.series, log: d.log }, d.data());
      made.def = d;
      charts.push(made);
    });
  }

  // Redraw at most once per frame, however many events arrive.
  let pending = false;
  function redraw() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () {
      pending = false;
      const wanted = defs().filter(function (d) { return d.show(); }).length;
      if (wanted !== charts.length) { build(); }
      else { charts.forEach(function (c) { c.u.setData(c.def.data()); }); }
      progress();
      window.maelabLastDraw = Date.now();
    });
  }

  function fmtSeconds(s) {
    if (!isFinite(s) || s < 0) return "—";
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return h ? h + "h " + String(m).padStart(2, "0") + "m" : m ? m + "m " + String(r).padStart(2, "0") + "s" : r + "s";
  }

  function progress() {
    const n = S.step.length;
    const done = document.getElementById("epochs-done");
    if (done && E.epoch.length) done.textContent = String(E.epoch[E.epoch.length - 1] + 1);
    if (!n) return;
    const epoch = S.epoch[n - 1], p = S.progress[n - 1], ips = S.images_per_second[n - 1];
    document.getElementById("progress-fill").style.width = (p * 100).toFixed(1) + "%";
    document.getElementById("progress-text").textContent =
      "epoch " + (epoch + 1) + "/" + H.epochs_total + " · " + (p * 100).toFixed(0) + "%";
    document.getElementById("ips").textContent = ips ? ips.toFixed(0) + " img/s" : "— img/s";
    const active = H.status === "running";
    if (ips && active) {
      const epochLeft = (1 - p) * H.images_per_epoch / ips;
      const runLeft = epochLeft + Math.max(0, H.epochs_total - epoch - 1) * H.images_per_epoch / ips;
      document.getElementById("eta").textContent = fmtSeconds(epochLeft) + " (epoch), " + fmtSeconds(runLeft) + " (run)";
    } else {
      document.getElementById("eta").textContent = "—";
    }
  }

  // Reconstructions: an epoch slider over the epochs that have images.
  const slider = document.getElementById("recon-epoch");
  function reconEpochs() {
    const set = {};
    recons.forEach(function (r) { if (r.epoch != null) set[r.epoch] = true; });
    return Object.keys(set).map(Number).sort(function (a, b) { return a - b; });
  }
  function showRecons(follow) {
    const epochs = reconEpochs();
    if (!epochs.length) return;
    document.getElementById("no-recons").hidden = true;
    document.getElementById("recon-picker").hidden = false;
    const atEnd = Number(slider.value) >= Number(slider.max);
    slider.max = String(epochs.length - 1);
    if (follow || atEnd) slider.value = slider.max;
    const epoch = epochs[Number(slider.value)];
    document.getElementById("recon-epoch-value").textContent = String(epoch);
    const box = document.getElementById("recon-images");
    box.replaceChildren();
    recons.filter(function (r) { return r.epoch === epoch; }).forEach(function (r) {
      const img = document.createElement("img");
      img.src = "/runs/" + H.run_id + "/artifacts/" + r.artifact_id;
      img.alt = r.name;
      img.className = "recon";
      box.appendChild(img);
    });
  }
  slider.addEventListener("input", function () { showRecons(false); });

  function setStatus(run) {
    H.status = run.status;
    const el = document.getElementById("status");
    el.textContent = run.status;
    el.className = "status status-" + run.status;
    document.getElementById("worker").textContent = run.worker || "—";
    const err = document.getElementById("run-error");
    err.textContent = run.error || "";
    err.hidden = !run.error;
    const active = run.status === "queued" || run.status === "running";
    document.getElementById("cancel-form").hidden = !active;
    document.getElementById("retry-form").hidden = !(run.status === "failed" || run.status === "cancelled");
    progress();
  }

  const EPOCH_KEYS = ["epoch", "train_loss", "train_lr", "test_loss", "test_acc1", "test_acc5",
                      "psnr", "hf_ratio", "epoch_seconds", "images_per_second"];
  const STEP_KEYS = ["step", "epoch", "progress", "train_loss", "lr", "images_per_second"];

  function connect() {
    const es = new EventSource("/runs/" + H.run_id + "/events?after=" + encodeURIComponent(H.cursor));
    es.addEventListener("epoch", function (ev) {
      const row = JSON.parse(ev.data);
      const last = E.epoch.length ? E.epoch[E.epoch.length - 1] : -1;
      if (row.epoch > last) EPOCH_KEYS.forEach(function (k) { E[k].push(row[k]); });
      window.maelabLastEpoch = { epoch: row.epoch, at: Date.now() };
      redraw();
    });
    es.addEventListener("steps", function (ev) {
      const rows = JSON.parse(ev.data);
      let last = S.step.length ? S.step[S.step.length - 1] : -1;
      rows.forEach(function (row) {
        if (row.step <= last) return;
        last = row.step;
        STEP_KEYS.forEach(function (k) { S[k].push(row[k]); });
      });
      window.maelabLastStep = { step: last, at: Date.now() };
      redraw();
    });
    es.addEventListener("recons", function (ev) {
      JSON.parse(ev.data).forEach(function (r) { recons.push(r); });
      showRecons(false);
    });
    es.addEventListener("status", function (ev) { setStatus(JSON.parse(ev.data)); });
    window.maelabEvents = es;
  }

  logBox.addEventListener("change", build);
  smoothBox.addEventListener("input", function () {
    document.getElementById("smoothing-value").textContent = smoothBox.value;
    redraw();
  });

  build();
  progress();
  showRecons(true);
  // For the browser tests and benchmarks: the data drawn, and when the first
  // draw finished (ms since navigation start).
  window.maelabRun = {
    epochs: E, steps: S, recons: recons,
    charts: function () {
      return charts.map(function (c) {
        const pts = c.u.series[1].points;
        return { title: c.def.title, data: c.u.data, distr: c.u.scales.y.distr, x: [c.u.scales.x.min, c.u.scales.x.max],
                 xTicks: c.u.axes[0]._splits, points: pts.show(c.u, 1, 0, c.u.data[0].length - 1) };
      });
    },
  };
  window.maelabDrawn = performance.now();
  connect();
})();
