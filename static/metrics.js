// Reads of the generic metric points (any key a client logs) through the
// API, shared by the run and compare pages: a run's keys, and one key's
// points by step, paged until the end.
"use strict";
window.maelabMetrics = (function () {
  // The API's most points per read (`limit`'s upper bound).
  const PAGE = 100000;

  function getJson(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (res) {
        if (!res.ok) throw new Error(url + ": HTTP " + res.status);
        return res.json();
      });
  }

  function base(runId) { return "/api/v1/runs/" + encodeURIComponent(runId) + "/metrics"; }

  // [{key, group, points, first_step, last_step, last_value}], by group then key.
  function keys(runId) { return getJson(base(runId)); }

  // {step: [...], value: [...]} of `key` after step `after` (exclusive; -1: all).
  function points(runId, key, after) {
    const out = { step: [], value: [] };
    function page(from) {
      let url = base(runId) + "?key=" + encodeURIComponent(key) + "&limit=" + PAGE;
      if (from >= 0) url += "&after=" + from;
      return getJson(url).then(function (rows) {
        rows.forEach(function (r) { out.step.push(r.step); out.value.push(r.value); });
        return rows.length < PAGE ? out : page(rows[rows.length - 1].step);
      });
    }
    return page(after == null ? -1 : after);
  }

  return { keys: keys, points: points };
})();
