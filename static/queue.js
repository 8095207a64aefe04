// The queue page, kept live: the page's stream (GET /queue/events) says when
// a run changed status or a worker sent its heartbeat figures, started or
// stopped; the page is then read again and its tables swapped in (the server
// formats them; nothing is repeated here). Events that arrive while a read is
// under way, or within a second of the last one, are answered by one read.
"use strict";
(function () {
  if (!document.getElementById("workers")) return;
  const MIN_GAP_MS = 1000;
  const TABLES = ["#queued", "#running", "#workers"];
  let busy = false, again = false, last = 0;

  function swap(html) {
    const fresh = new DOMParser().parseFromString(html, "text/html");
    TABLES.forEach(function (sel) {
      const body = fresh.querySelector(sel + " tbody");
      const now = document.querySelector(sel + " tbody");
      if (body && now) now.replaceWith(body);
    });
    // The counts beside the "Waiting" and "Running" headings.
    const counts = fresh.querySelectorAll("h2 small");
    document.querySelectorAll("h2 small").forEach(function (el, i) {
      if (counts[i]) el.textContent = counts[i].textContent;
    });
  }

  function read() {
    busy = true;
    last = Date.now();
    fetch(window.location.pathname, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (res) {
        if (!res.ok) throw new Error("HTTP " + res.status);
        return res.text();
      })
      .then(swap)
      .catch(function (e) { console.warn("queue refresh:", e); })
      .then(function () {
        busy = false;
        api.reads += 1;
        if (again) { again = false; changed(); }
      });
  }

  function changed() {
    if (busy) { again = true; return; }
    const wait = last + MIN_GAP_MS - Date.now();
    if (wait > 0) {
      busy = true;
      setTimeout(function () { busy = false; read(); }, wait);
      return;
    }
    read();
  }

  // For the browser tests: how many times the page read itself again.
  const api = { reads: 0 };
  window.maelabQueue = api;
  const es = new EventSource("/queue/events");
  es.addEventListener("changed", changed);
})();
