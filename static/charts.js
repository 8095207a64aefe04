// Small helpers around the vendored uPlot: one place that builds a chart
// from columns, so the run and compare pages draw alike.
"use strict";
window.maelabCharts = (function () {
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

  // Exponential moving average, like TensorBoard's smoothing slider.
  function ema(values, alpha) {
    if (!alpha) return values;
    const out = new Array(values.length);
    let last = null;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v == null || !isFinite(v)) { out[i] = v; continue; }
      last = last == null ? v : alpha * last + (1 - alpha) * v;
      out[i] = last;
    }
    return out;
  }

  // Tick steps for whole-number axes (epochs, steps): no 0.2-epoch ticks.
  const WHOLE_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000,
                       1e4, 2e4, 2.5e4, 5e4, 1e5, 2e5, 2.5e5, 5e5, 1e6, 2e6, 5e6, 1e7];

  // A line needs two points: with fewer than three, mark them.
  function fewPoints(u) {
    return u.data[0].length < 3;
  }

  function hasValues(arr) {
    for (let i = 0; i < arr.length; i++) if (arr[i] != null) return true;
    return false;
  }

  // opts: {title, xLabel, series: [{label, color?, width?, dash?}], log}
  function make(container, opts, data) {
    const box = document.createElement("div");
    box.className = "chart";
    box.dataset.title = opts.title;
    container.appendChild(box);
    const width = Math.max(320, Math.min(container.clientWidth || 640, 640) - 8);
    const series = [{ label: opts.xLabel || "x" }].concat(opts.series.map(function (s, i) {
      return {
        label: s.label,
        stroke: s.color || COLORS[i % COLORS.length],
        width: s.width || 1.5,
        dash: s.dash,
        spanGaps: true,
        points: { show: fewPoints },
        value: function (u, v) { return v == null ? "—" : (Math.abs(v) < 1e-3 && v !== 0 ? v.toExponential(3) : v.toPrecision(5)); },
      };
    }));
    const xAxis = { label: opts.xLabel || "" };
    if (opts.xLabel === "epoch" || opts.xLabel === "step") xAxis.incrs = WHOLE_INCRS;
    const u = new uPlot({
      title: opts.title,
      width: width,
      height: 240,
      series: series,
      scales: { x: { time: false }, y: { distr: opts.log ? 3 : 1 } },
      // uPlot's default tick labels round small values (learning rates) to 0.
      axes: [xAxis, { size: 64, values: function (u, ticks) { return ticks.map(tickLabel); } }],
      cursor: { drag: { x: true, y: false } },
      legend: { live: true },
      hooks: { setData: [widenSingleX] },
    }, data, box);
    return { u: u, box: box };
  }

  // uPlot spreads a single x value (one epoch so far) over 0-100, which puts
  // the point at the axis's left edge; one unit either side centres it.
  function widenSingleX(u) {
    const x = u.data[0];
    if (x && x.length > 0 && x[0] != null && x[0] === x[x.length - 1]) {
      u.setScale("x", { min: x[0] - 1, max: x[0] + 1 });
    }
  }

  function tickLabel(v) {
    if (v == null) return "";
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-2 || a >= 1e5) ? v.toExponential(1) : String(+v.toPrecision(4));
  }

  return { make: make, ema: ema, hasValues: hasValues, widenSingleX: widenSingleX, WHOLE_INCRS: WHOLE_INCRS,
           COLORS: COLORS };
})();
