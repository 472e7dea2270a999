/* The small behaviours of server-rendered pages, in one file so that the pages need no
 * inline script (the Content-Security-Policy forbids them). Each part runs only on the
 * page that has its element. */
// After every deferred script (plotly among them) has run.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";

  // Forms that ask first: <form data-confirm="Delete this prompt set?">.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (e) {
      if (!window.confirm(form.dataset.confirm)) e.preventDefault();
    });
  });

  // The sweep form's "Update the steps and the cost" submits by GET: keep the CSRF token
  // out of the URL.
  const sweepForm = document.querySelector("[data-testid=sweep-form]");
  if (sweepForm) {
    const token = sweepForm.querySelector("[name=csrfmiddlewaretoken]");
    sweepForm.addEventListener("submit", function (e) {
      token.disabled = Boolean(e.submitter && e.submitter.formMethod === "get");
    });
    window.addEventListener("pageshow", function () { token.disabled = false; });
  }

  // The evaluation form: "Max new tokens" follows the largest max_response_tokens of the
  // jobs (and checkpoints' jobs) ticked, until the user types a value of their own.
  const tokenData = document.getElementById("response-tokens");
  const tokens = document.getElementById("id_max_new_tokens");
  if (tokenData && tokens) {
    const known = JSON.parse(tokenData.textContent);
    const form = tokens.form;
    let follow = known.follow;
    tokens.addEventListener("input", function () { follow = false; });
    form.addEventListener("change", function (e) {
      if (!follow || (e.target.name !== "jobs" && e.target.name !== "checkpoints")) return;
      const chosen = [];
      form.querySelectorAll("input[name=jobs]:checked").forEach(function (box) {
        chosen.push(known.jobs[box.value]);
      });
      form.querySelectorAll("select[name=checkpoints] option:checked").forEach(function (option) {
        chosen.push(known.checkpoints[option.value]);
      });
      const values = chosen.filter(Number.isFinite);
      tokens.value = values.length ? Math.max.apply(null, values) : known.fallback;
    });
  }

  // The campaign form: "Annotators per item" is at most the number of people ticked,
  // and 2 (or fewer people) until the user sets it. The server checks it too.
  const overlap = document.querySelector("[data-testid=campaign-form] input[name=overlap]");
  if (overlap) {
    const people = overlap.form.querySelectorAll("input[name=annotators]");
    let chosenByUser = false;
    overlap.addEventListener("input", function () { chosenByUser = true; });
    const cap = function (initial) {
      const n = Array.from(people).filter(function (box) { return box.checked; }).length;
      overlap.max = String(Math.max(1, n));
      if (initial) return; // a value the server rendered (and may have refused) stays
      const wanted = chosenByUser ? Number(overlap.value) || 1 : 2;
      overlap.value = String(Math.max(1, Math.min(wanted, n)));
    };
    people.forEach(function (box) { box.addEventListener("change", function () { cap(false); }); });
    cap(true);
  }

  // A teacher's "Test connection": while the test is pending, ask for its result every
  // second (only while the page is visible).
  const box = document.getElementById("connection");
  if (box && box.dataset.status === "pending") {
    const badge = box.querySelector("[data-testid=test-status]");
    const detail = box.querySelector("[data-testid=test-detail]");
    const css = { ok: "succeeded", error: "failed", pending: "training" };
    let polls = 0;
    const show = function (s) {
      badge.className = "status " + (css[s.status] || "");
      badge.textContent = s.status === "ok" ? "OK" : s.status === "error" ? "Error" : "not tested";
      detail.textContent = s.status === "ok"
        ? "answered in " + s.latency_ms + " ms" + (s.dialect_found ? "; " + s.dialect_found : "")
        : s.status === "error" ? s.error_kind_label + ": " + s.error : "";
    };
    const poll = function () {
      if (document.hidden) { setTimeout(poll, 1000); return; }
      fetch(box.dataset.statusUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
        .then(function (s) {
          if (s.status !== "pending") { show(s); return; }
          // No worker reads the test's queue: say so now, and keep asking.
          detail.textContent = s.waiting || "asking the teacher…";
          if (++polls < 120) { setTimeout(poll, 1000); return; }
          detail.textContent = "no answer after 2 minutes: is a worker running? Try again.";
        })
        .catch(function () { setTimeout(poll, 3000); });
    };
    setTimeout(poll, 1000);
  }

  // An upload being imported by a worker: follow it, then open the prompt set or show the
  // problems.
  const upload = document.getElementById("upload");
  if (upload && upload.dataset.ended === "0") {
    const label = upload.querySelector("[data-testid=upload-status]");
    const progress = upload.querySelector("[data-testid=upload-progress]");
    const result = upload.querySelector("[data-testid=upload-result]");
    const follow = function () {
      if (document.hidden) { setTimeout(follow, 1000); return; }
      fetch(upload.dataset.statusUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
        .then(function (s) {
          label.textContent = s.status_label;
          if (!s.ended) {
            progress.textContent = s.records_read.toLocaleString() + " records checked";
            setTimeout(follow, 1000);
            return;
          }
          if (s.prompt_set_url) { window.location = s.prompt_set_url; return; }
          label.className = "status failed";
          progress.textContent = "";
          const bar = upload.querySelector("progress");
          if (bar) bar.remove();
          result.replaceChildren();
          const error = document.createElement("p");
          error.className = "field-error";
          error.setAttribute("role", "alert");
          error.textContent = s.error;
          result.append(error);
          if (s.problems.length) {
            const list = document.createElement("ul");
            list.className = "problems";
            list.dataset.testid = "upload-problems";
            s.problems.forEach(function (p) {
              const item = document.createElement("li");
              item.textContent = p;
              list.append(item);
            });
            result.append(list);
          }
        })
        .catch(function () { setTimeout(follow, 3000); });
    };
    setTimeout(follow, 500);
  }

  // A prompt set's length histograms.
  const histograms = document.getElementById("histograms");
  if (histograms && window.Plotly) {
    const data = JSON.parse(histograms.textContent);
    for (const [key, h] of Object.entries(data)) {
      const el = document.getElementById("hist-" + key);
      if (!el) continue;
      if (!h.count) { el.innerHTML = '<p class="empty muted">No data.</p>'; continue; }
      const x = h.counts.map(function (_, i) {
        return i < h.counts.length - 1 ? `${i * h.bin_width}–${(i + 1) * h.bin_width}` : `≥ ${i * h.bin_width}`;
      });
      Plotly.newPlot(el, [{ type: "bar", x: x, y: h.counts, marker: { color: "#3b5bdb" } }],
        { title: { text: `${el.dataset.title}: median ${h.median}, p95 ${h.p95}, max ${h.max}`, font: { size: 13 } },
          margin: { t: 36, r: 10, b: 60, l: 40 }, height: 260, xaxis: { tickangle: -45 } },
        { displayModeBar: false, responsive: true });
    }
  }

  // The judge report's n-gram overlap chart.
  const ngram = document.getElementById("ngram-chart-data");
  if (ngram && window.Plotly) {
    const lines = JSON.parse(ngram.textContent);
    Plotly.newPlot("ngram-chart",
      lines.map(function (l) { return { x: l.x, y: l.y, name: l.name, type: "scatter", mode: "lines+markers" }; }),
      { xaxis: { title: { text: "n" }, dtick: 1 }, yaxis: { title: { text: "n-gram F1 vs teacher" } }, margin: { t: 20 } },
      { displayModeBar: false, responsive: true });
  }
});
