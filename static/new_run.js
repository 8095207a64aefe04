// New-run form: choosing a kind, model or preset reloads the form with that
// choice's defaults; choosing a pretrain run lists its checkpoint epochs.
"use strict";
(function () {
  const form = document.getElementById("new-run");
  if (!form) return;
  ["kind", "model", "preset"].forEach(function (name) {
    const el = form.elements[name];
    if (!el) return;
    el.addEventListener("change", function () {
      const q = new URLSearchParams();
      ["kind", "model", "preset"].forEach(function (n) { q.set(n, form.elements[n].value); });
      location.assign("/runs/new?" + q.toString());
    });
  });
  const parent = form.elements["parent_run"];
  const list = document.getElementById("parent-epochs");
  function epochs() {
    list.replaceChildren();
    const span = document.querySelector('#parent-data [data-run="' + CSS.escape(parent.value) + '"]');
    if (!span || !span.dataset.epochs) return;
    span.dataset.epochs.split(",").forEach(function (e) {
      const o = document.createElement("option");
      o.value = e;
      list.appendChild(o);
    });
  }
  if (parent) { parent.addEventListener("change", epochs); epochs(); }
})();
