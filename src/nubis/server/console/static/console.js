// nubis console: small progressive enhancements (the pages read fine without JS).
"use strict";
(function () {
  document.documentElement.classList.add("js");

  function ago(seconds) {
    const s = Math.abs(seconds);
    if (s >= 86400) return Math.floor(s / 86400) + " d";
    if (s >= 3600) return Math.floor(s / 3600) + " h";
    if (s >= 60) return Math.floor(s / 60) + " min";
    return Math.floor(s) + " s";
  }

  // <time datetime=…>3 min ago</time>: keep the relative words current.
  function refreshTimes(root) {
    const now = Date.now();
    (root || document).querySelectorAll("time[datetime]").forEach(function (el) {
      const at = Date.parse(el.getAttribute("datetime"));
      if (isNaN(at)) return;
      const delta = (now - at) / 1000;
      el.textContent = delta >= 0 ? ago(delta) + " ago" : "in " + ago(delta);
    });
  }

  // <select data-autosubmit>: submit its form on change (the form has a button without JS).
  document.addEventListener("change", function (event) {
    const el = event.target;
    if (el.matches && el.matches("select[data-autosubmit]") && el.form) el.form.requestSubmit();
  });

  // Log panes that follow: stay at the bottom unless the reader scrolled up.
  function followLogs(pane) {
    const atBottom = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 40;
    if (atBottom || !pane.dataset.scrolled) pane.scrollTop = pane.scrollHeight;
  }
  document.addEventListener("scroll", function (event) {
    const pane = event.target;
    if (pane.classList && pane.classList.contains("logs")) {
      pane.dataset.scrolled = pane.scrollHeight - pane.scrollTop - pane.clientHeight > 40 ? "1" : "";
    }
  }, true);
  document.addEventListener("htmx:sseMessage", function (event) {
    const pane = event.target.closest ? event.target.closest(".logs") : null;
    if (pane) followLogs(pane);
    refreshTimes(event.target);
  });

  window.nubisConsole = { refreshTimes: refreshTimes, followLogs: followLogs };
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".logs").forEach(followLogs);
    setInterval(refreshTimes, 15000);
  });
})();
