// Live updates for the console's pages, in plain JavaScript. Numbers and
// labels from the progress stream are set with textContent, never as HTML;
// fragments fetched from the console (server-rendered and escaped) replace
// their section whole.
(function () {
  "use strict";

  function setText(id, text) {
    var el = document.getElementById(id);
    if (el) el.textContent = text;
  }

  // Replaces a section with the fragment its data-live names.
  function refresh(el) {
    return fetch(el.dataset.live, { cache: "no-store", credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) { el.innerHTML = html; })
      .catch(function () { /* the next change tries again */ });
  }

  // One run: the bar, the state and the counts move with each update; the
  // timeline is fetched again; once the run is over the page is reloaded
  // for its final lists.
  function followRun(root) {
    if (root.dataset.over === "true") return;
    var source = new EventSource(root.dataset.progress);
    var timeline = document.getElementById("timeline");
    source.addEventListener("progress", function (e) {
      var live = JSON.parse(e.data);
      if (!live.seen) return;
      if (root.dataset.seen !== "true") { source.close(); location.reload(); return; }
      var bar = document.getElementById("progress");
      // Never backwards, even against the value the page was rendered with.
      if (bar) bar.value = Math.max(bar.value, live.progress.percent);
      if (bar) setText("progress-percent", bar.value + "%");
      setText("progress-label", live.progress.label);
      setText("took", live.took);
      var state = document.getElementById("state");
      if (state) {
        state.textContent = live.state;
        state.className = "state " + live.state.toLowerCase();
      }
      live.counts.forEach(function (c) {
        var el = document.querySelector('[data-count="' + c.key + '"]');
        if (el) el.textContent = c.value;
      });
      if (timeline) refresh(timeline);
      if (live.over) {
        source.close();
        setTimeout(function () { location.reload(); }, 300);
      }
    });
  }

  // A list: fetched again whenever the events stream moves.
  function followChanges(el) {
    var source = new EventSource(el.dataset.changes);
    source.addEventListener("changed", function () { refresh(el); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var run = document.getElementById("run");
    if (run) followRun(run);
    document.querySelectorAll("[data-changes]").forEach(followChanges);
  });
})();
