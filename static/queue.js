// The queue page's workers table, kept live: workers send their system
// figures (CPU, memory, GPU) with each heartbeat, which sends no page event,
// so every few seconds the page is read again and only the workers table is
// swapped in. The server formats the figures; nothing is repeated here.
"use strict";
(function () {
  const REFRESH_MS = 5000;
  function refresh() {
    if (document.hidden) return;
    fetch(window.location.pathname, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (res) {
        if (!res.ok) throw new Error("HTTP " + res.status);
        return res.text();
      })
      .then(function (html) {
        const fresh = new DOMParser().parseFromString(html, "text/html").querySelector("#workers tbody");
        const now = document.querySelector("#workers tbody");
        if (fresh && now) now.replaceWith(fresh);
      })
      .catch(function (e) { console.warn("workers refresh:", e); });
  }
  if (document.getElementById("workers")) setInterval(refresh, REFRESH_MS);
})();
