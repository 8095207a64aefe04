// The run page's logged metrics: every key a client logged beyond the MAE
// epoch columns (charted above by run.js), one chart per group (the part of
// the key before the first `/`), one series per key, read from the API.
// Live: each `epoch` event of the page's stream (run.js's EventSource) reads
// the keys again and only the points after the last step drawn, as does each
// `points` event (an ingest batch of only other keys, which writes no epoch).
"use strict";
(function () {
  const section = document.getElementById("metric-groups");
  const M = window.maelabMetrics, C = window.maelabCharts;
  if (!section || !M || !C) return;
  const G = JSON.parse(section.dataset.generic);
  const box = document.getElementById("generic-charts");
  const logBox = document.getElementById("log-scale");
  const smoothBox = document.getElementById("smoothing");
  const skip = {};
  G.epoch_keys.forEach(function (k) { skip[k] = true; });

  const known = {};   // key -> {group, step: [], value: []}
  const groups = [];  // [{name, keys: [], el, chart, log}] in the order first seen

  function group(name) {
    let g = groups.find(function (x) { return x.name === name; });
    if (g) return g;
    let el = Array.prototype.find.call(box.querySelectorAll(".metric-group"),
      function (e) { return e.dataset.group === name; });
    if (!el) {
      el = document.createElement("div");
      el.className = "metric-group";
      el.dataset.group = name;
      box.appendChild(el);
    }
    g = { name: name, keys: [], el: el, chart: null, log: false };
    groups.push(g);
    return g;
  }

  function values(v) {
    const out = C.ema(v, parseFloat(smoothBox.value) || 0);
    return logBox.checked ? out.map(function (x) { return x > 0 ? x : null; }) : out;
  }

  function data(g) {
    const tables = g.keys.map(function (k) { return [known[k].step, values(known[k].value)]; });
    return tables.length === 1 ? tables[0] : uPlot.join(tables);
  }

  function draw(g) {
    const c = g.chart;
    if (c && c.keys === g.keys.length && g.log === logBox.checked) {
      c.u.setData(data(g));
      return;
    }
    if (c) { c.u.destroy(); c.box.remove(); }
    g.el.querySelectorAll(".metric-placeholder").forEach(function (p) { p.remove(); });
    g.log = logBox.checked;
    const made = C.make(g.el, { title: g.name, xLabel: "step", log: g.log,
                                series: g.keys.map(function (k) { return { label: k }; }) }, data(g));
    made.keys = g.keys.length;
    g.chart = made;
  }

  // Read what is new of `k` (a key info from the API); true when it changed.
  function update(k) {
    const have = known[k.key];
    const n = have.step.length;
    const last = n ? have.step[n - 1] : -1;
    if (n >= k.points && k.last_step <= last) return Promise.resolve(false);
    function all() {
      return M.points(G.run_id, k.key, -1).then(function (p) {
        have.step = p.step; have.value = p.value;
        return true;
      });
    }
    // A late point before the last step drawn: read the key again.
    if (k.last_step <= last) return all();
    // Else only the points after the last step drawn.
    return M.points(G.run_id, k.key, last).then(function (p) {
      p.step.forEach(function (s, i) {
        if (s > last) { have.step.push(s); have.value.push(p.value[i]); }
      });
      return have.step.length < k.points ? all() : true;
    });
  }

  let busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    M.keys(G.run_id).then(function (list) {
      const changed = {};
      const reads = list.filter(function (k) { return !skip[k.key]; }).map(function (k) {
        if (!known[k.key]) {
          known[k.key] = { group: k.group, step: [], value: [] };
          group(k.group).keys.push(k.key);
          changed[k.group] = true;
        }
        return update(k).then(function (yes) { if (yes) changed[k.group] = true; });
      });
      return Promise.all(reads).then(function () {
        groups.forEach(function (g) { if (changed[g.name]) draw(g); });
        if (groups.length) section.hidden = false;
      });
    }).catch(function (e) {
      console.warn("maelab: reading the logged metrics failed", e);
    }).then(function () {
      busy = false;
      api.refreshes += 1;
      api.ready = true;
      if (again) { again = false; refresh(); }
    });
  }

  const es = window.maelabEvents;
  if (es) {
    es.addEventListener("epoch", refresh);
    es.addEventListener("points", refresh);
    es.addEventListener("status", function (ev) {
      const was = G.status;
      G.status = JSON.parse(ev.data).status;
      // The run ended: what its last batch wrote.
      if (was === "running" && G.status !== "running") refresh();
    });
  }
  logBox.addEventListener("change", function () { groups.forEach(draw); });
  smoothBox.addEventListener("input", function () {
    groups.forEach(function (g) { if (g.chart) g.chart.u.setData(data(g)); });
  });

  // For the browser tests: the charts drawn and the points they hold.
  const api = {
    ready: false,
    refreshes: 0,
    charts: function () {
      return groups.filter(function (g) { return g.chart; }).map(function (g) {
        return { group: g.name, keys: g.keys.slice(), series: g.chart.u.series.length - 1,
                 data: g.chart.u.data };
      });
    },
    points: function (key) { return known[key] || null; },
    refresh: refresh,
  };
  window.maelabGenericCharts = api;
  refresh();
})();
