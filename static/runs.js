// The runs table follows the list stream: new runs appear on the first page,
// status, epochs, best top-1 and last loss move in place. No timer polling.
"use strict";
(function () {
  const table = document.getElementById("runs");
  if (!table) return;
  const body = table.tBodies[0];
  const liveInsert = table.dataset.liveInsert === "true";

  function cell(tr, col) { return tr.querySelector('[data-col="' + col + '"]'); }
  function rowOf(id) { return body.querySelector('tr[data-run-id="' + CSS.escape(id) + '"]'); }

  function newRow(run) {
    const tr = document.createElement("tr");
    tr.dataset.runId = run.run_id;
    const td = function (child) { const c = document.createElement("td"); if (child) c.appendChild(child); tr.appendChild(c); return c; };
    const box = document.createElement("input");
    box.type = "checkbox"; box.name = "run"; box.value = run.run_id;
    td(box);
    const st = document.createElement("span"); st.dataset.col = "status"; td(st);
    const a = document.createElement("a"); a.href = "/runs/" + run.run_id; a.className = "run-name";
    a.textContent = run.name; td(a);
    td().textContent = run.model;
    td().textContent = run.kind;
    td().textContent = run.preset;
    const ep = document.createElement("span"); ep.dataset.col = "epochs"; ep.textContent = String(run.epochs_done);
    const epc = td(ep); epc.appendChild(document.createTextNode("/" + run.epochs_total));
    td().dataset.col = "top1";
    td().dataset.col = "loss";
    td();
    td().dataset.col = "worker";
    body.insertBefore(tr, body.firstChild);
    return tr;
  }

  function setStatus(tr, run) {
    const st = cell(tr, "status");
    st.textContent = run.status;
    st.className = "status status-" + run.status;
    cell(tr, "worker").textContent = run.worker || "";
  }

  const es = new EventSource("/runs/events");
  es.addEventListener("run", function (ev) {
    const run = JSON.parse(ev.data);
    let tr = rowOf(run.run_id);
    if (!tr) { if (!liveInsert) return; tr = newRow(run); }
    setStatus(tr, run);
    window.maelabListEvent = Date.now();
  });
  es.addEventListener("epoch", function (ev) {
    const e = JSON.parse(ev.data);
    const tr = rowOf(e.run_id);
    if (!tr) return;
    const ep = cell(tr, "epochs");
    ep.textContent = String(Math.max(Number(ep.textContent) || 0, e.epoch + 1));
    if (e.train_loss != null) cell(tr, "loss").textContent = e.train_loss.toFixed(4);
    if (e.test_acc1 != null) {
      const top = cell(tr, "top1");
      const old = parseFloat(top.textContent);
      if (!(old >= e.test_acc1)) top.textContent = e.test_acc1.toFixed(2);
    }
    window.maelabListEvent = Date.now();
  });
  // Events may have been missed (the server's LISTEN reconnected): reload once.
  es.addEventListener("resync", function () {
    if (window.maelabListOpened && Date.now() - window.maelabListOpened > 2000) location.reload();
  });
  window.maelabListOpened = Date.now();
})();
