/* Live training charts for the job page and the comparison page.
 *
 * STYLE.md, "Live pages without an SPA": the page is server-rendered; this script asks
 * metrics.json for the points after the last step it has and appends them
 * (Plotly.extendTraces), and polls only while the tab is visible. The first request of a
 * job is the full one (the server down-samples long series); later ones are incremental.
 * User text (job names, stage names) reaches the DOM through textContent only.
 */
(function () {
  "use strict";

  const root = document.querySelector("[data-monitor]");
  const configNode = document.getElementById("monitor-config");
  if (!root || !configNode || !window.Plotly) return;

  const config = JSON.parse(configNode.textContent);
  const pollMs = Number(root.dataset.pollMs) || 5000;
  const primaryId = Number(root.dataset.primary) || null;
  const PALETTE = ["#3b5bdb", "#e8590c", "#2f9e44", "#c2255c", "#7048e8", "#0c8599", "#f59f00", "#495057"];
  const DASHES = ["solid", "dash", "dot", "dashdot", "longdash"];
  const PLOT_CONFIG = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["lasso2d", "select2d", "autoScale2d"],
  };
  const named = new Set(config.charts.flatMap((c) => c.metrics));
  const state = { smoothing: 0, jobs: [], timer: null, busy: false, again: false, ended: "" };
  const charts = config.charts
    .map((c) => {
      const el = root.querySelector(`[data-chart="${c.id}"]`);
      return el && { ...c, el, plot: el.querySelector("[data-plot]"), keys: [], plotted: false, log: false };
    })
    .filter(Boolean);

  // ------------------------------------------------------------------------ the model

  function makeJob(entry) {
    return { ...entry, series: {}, stages: [], smooth: {}, lastStep: null, active: true, loaded: false };
  }

  function metricsOf(chart, job) {
    if (chart.id === "other") return Object.keys(job.series).filter((n) => !named.has(n)).sort();
    return chart.metrics.filter((m) => m in job.series);
  }

  function traceKeys(chart) {
    const keys = [];
    state.jobs.forEach((job, j) => {
      metricsOf(chart, job).forEach((metric, m) => keys.push({ job, j, metric, m }));
    });
    return keys;
  }

  // Plotly reads a few tags in names (<b>, <a>): escape, so a name is only ever text.
  function esc(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  // TensorBoard's EMA with debiasing; nulls (NaN/inf from the trainer) stay gaps.
  function smooth(values, st) {
    const w = state.smoothing;
    return values.map((y) => {
      if (y === null || !Number.isFinite(y)) return null;
      if (w === 0) return y;
      st.last = st.last * w + (1 - w) * y;
      st.n += 1;
      return st.last / (1 - Math.pow(w, st.n));
    });
  }

  function label(key) {
    return state.jobs.length > 1 ? `${key.job.name} · ${key.metric}` : key.metric;
  }

  function trace(key) {
    const points = key.job.series[key.metric];
    const st = (key.job.smooth[key.metric] = { last: 0, n: 0 });
    const compare = state.jobs.length > 1;
    return {
      type: "scatter",
      mode: points.length < 40 ? "lines+markers" : "lines",
      x: points.map((p) => p[0]),
      y: smooth(points.map((p) => p[1]), st),
      name: esc(label(key)),
      connectgaps: false,
      marker: { size: 4 },
      line: {
        width: 1.6,
        color: PALETTE[(compare ? key.j : key.m) % PALETTE.length],
        dash: compare ? DASHES[key.m % DASHES.length] : "solid",
      },
    };
  }

  function stageMarks() {
    const shapes = [];
    const annotations = [];
    const compare = state.jobs.length > 1;
    state.jobs.forEach((job, j) => {
      const color = compare ? PALETTE[j % PALETTE.length] : "#868e96";
      job.stages.forEach(([step, stage], i) => {
        const x = i === 0 ? step : step - 0.5;
        if (i > 0) {
          shapes.push({
            type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1,
            line: { color, width: 1.2, dash: "dash" },
          });
        } else if (compare) {
          return; // every run starts somewhere: label only where its stage changes
        }
        annotations.push({
          xref: "x", yref: "paper", x, y: 1, text: esc(stage), showarrow: false,
          xanchor: "left", yanchor: "bottom", yshift: compare ? -12 * j : 0,
          font: { size: 10, color },
        });
      });
    });
    return { shapes, annotations };
  }

  // A constant series (a learning rate) would get plotly's default range of ±1 around
  // its value, which reads as 0; give it a range around the value instead.
  function constantRange(chart) {
    let lo = Infinity;
    let hi = -Infinity;
    chart.keys.forEach((k) => k.job.series[k.metric].forEach((p) => {
      if (p[1] !== null) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); }
    }));
    if (lo !== hi || !Number.isFinite(lo) || lo === 0) return null;
    return lo > 0 ? [0, 2 * lo] : [2 * lo, 0];
  }

  function layout(chart) {
    chart.fixed = chart.log ? null : constantRange(chart);
    return {
      autosize: true,
      margin: { l: 52, r: 14, t: 18, b: 30 },
      hovermode: "x unified",
      hoverlabel: { namelength: -1 },
      showlegend: true,
      legend: { orientation: "h", x: 0, y: -0.16, yanchor: "top", font: { size: 11 } },
      xaxis: { zeroline: false, hoverformat: "d", gridcolor: "#eef0f3" },
      yaxis: {
        type: chart.log ? "log" : "linear", hoverformat: ".4~g", zeroline: false,
        automargin: true, gridcolor: "#eef0f3",
        ...(chart.fixed ? { range: chart.fixed, autorange: false } : { autorange: true }),
      },
      font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 11, color: "#1d2330" },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      uirevision: "keep", // a zoom survives new points
      ...stageMarks(),
    };
  }

  // ------------------------------------------------------------------------ drawing

  function render(chart) {
    chart.keys = traceKeys(chart);
    const hasData = chart.keys.some((k) => k.job.series[k.metric].length > 0);
    chart.el.classList.toggle("empty", !hasData);
    if (chart.id === "other") chart.el.hidden = !hasData;
    if (!hasData) {
      if (chart.plotted) Plotly.purge(chart.plot);
      chart.plotted = false;
      return;
    }
    Plotly.react(chart.plot, chart.keys.map(trace), layout(chart), PLOT_CONFIG);
    chart.plotted = true;
  }

  function renderAll() {
    charts.forEach(render);
  }

  function sameKeys(a, b) {
    return a.length === b.length && a.every((k, i) => k.job === b[i].job && k.metric === b[i].metric);
  }

  // New points of one job: extendTraces where the chart already has the traces; a full
  // redraw only where a series appears for the first time (e.g. rewards once the
  // adversarial stage starts).
  function append(job, payload, stagesChanged) {
    charts.forEach((chart) => {
      if (!chart.plotted || chart.fixed || !sameKeys(chart.keys, traceKeys(chart))) {
        render(chart);
        return;
      }
      const xs = [];
      const ys = [];
      const indices = [];
      chart.keys.forEach((key, i) => {
        const fresh = key.job === job && payload.series[key.metric];
        if (!fresh || !fresh.length) return;
        indices.push(i);
        xs.push(fresh.map((p) => p[0]));
        ys.push(smooth(fresh.map((p) => p[1]), job.smooth[key.metric]));
      });
      if (indices.length) Plotly.extendTraces(chart.plot, { x: xs, y: ys }, indices);
      if (stagesChanged) Plotly.relayout(chart.plot, stageMarks());
    });
  }

  // ------------------------------------------------------------------------ data

  function absorb(job, payload, full) {
    if (full) {
      job.series = payload.series;
      job.stages = payload.stages;
    } else {
      Object.entries(payload.series).forEach(([name, points]) => {
        const mine = job.series[name] || (job.series[name] = []);
        for (const p of points) mine.push(p);
      });
    }
    let stagesChanged = false;
    if (!full) {
      payload.stages.forEach(([step, stage]) => {
        const last = job.stages[job.stages.length - 1];
        if (!last || last[1] !== stage) {
          job.stages.push([step, stage]);
          stagesChanged = true;
        }
      });
    }
    if (payload.last_step !== null && payload.last_step >= 0) job.lastStep = payload.last_step;
    job.active = Boolean(payload.job && payload.job.active);
    job.loaded = true;
    // A page left open for days would hold every point; start again from the
    // down-sampled series once any trace grows well past the server's limit.
    if (Object.values(job.series).some((s) => s.length > 3 * config.limit)) job.loaded = false;
    return stagesChanged;
  }

  async function fetchJob(job) {
    const full = !job.loaded || job.lastStep === null;
    const query = new URLSearchParams();
    if (!full) query.set("after_step", job.lastStep);
    if (job.id === primaryId && logBox) query.set("log", logBox.dataset.digest || "");
    const url = String(query) ? `${job.url}?${query}` : job.url;
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!response.ok) {
      if (response.status < 500) job.active = false; // gone or forbidden: stop asking
      throw new Error(`${job.name}: HTTP ${response.status}`);
    }
    const payload = await response.json();
    const wasActive = job.active;
    const hadPoints = Object.keys(payload.series).length > 0;
    const stagesChanged = absorb(job, payload, full);
    if (full) renderAll();
    else if (hadPoints || stagesChanged) append(job, payload, stagesChanged);
    showJob(payload);
    if (job.id === primaryId && payload.log) showLog(payload.log);
    if (job.id === primaryId && wasActive && !job.active && !full) {
      state.ended = `The job has ended (${payload.job.status_display}): reload the page for its checkpoints.`;
    }
  }

  // ------------------------------------------------------------------------ live facts

  function setText(selector, text) {
    root.ownerDocument.querySelectorAll(selector).forEach((el) => { el.textContent = text; });
  }

  function showJob(payload) {
    const job = payload.job;
    if (!job) return;
    document.querySelectorAll(`[data-job-status="${job.id}"]`).forEach((el) => {
      el.textContent = job.status_display;
      el.className = `status ${job.status}`;
    });
    document.querySelectorAll(`[data-health="${job.id}"]`).forEach((el) => showHealth(el, payload.health || []));
    if (job.id !== primaryId) return;
    setText("[data-live=stage]", job.stage || "—");
    // Training steps; the collecting stage's teacher answers have their own line.
    setText("[data-live=step]", job.total_steps ? `${job.step} / ${job.total_steps}` : String(job.step));
    setText("[data-live=eta]", job.eta || "");
    showBar("[data-live=progress]", job.progress);
    const answers = job.answers;
    document.querySelectorAll("[data-live=answers-row]").forEach((el) => { el.hidden = !answers; });
    setText("[data-live=answers]", answers ? answers.line : "");
    showBar("[data-live=answers-progress]", answers ? answers.progress : null);
  }

  function showBar(selector, percent) {
    document.querySelectorAll(selector).forEach((el) => {
      el.hidden = percent === null;
      const bar = el.querySelector("span");
      if (bar && percent !== null) bar.style.width = `${percent}%`;
    });
  }

  // The log box opens at its end and follows new lines, unless the reader scrolled up:
  // then their position stays until they scroll back to the bottom.
  const logBox = document.querySelector("pre[data-live-log]");
  const log = { follow: true };

  function atBottom(el) {
    return el.scrollHeight - el.scrollTop - el.clientHeight < 8;
  }

  function toEnd() {
    if (logBox && log.follow) logBox.scrollTop = logBox.scrollHeight;
  }

  function showLog(update) {
    if (!logBox || update.text === undefined) return;
    logBox.dataset.digest = update.digest;
    logBox.textContent = update.text;
    logBox.hidden = !update.text;
    document.querySelectorAll("[data-log-empty]").forEach((el) => { el.hidden = Boolean(update.text); });
    toEnd();
  }

  if (logBox) {
    logBox.addEventListener("scroll", () => { log.follow = atBottom(logBox); }, { passive: true });
    toEnd();
  }

  function showHealth(container, alarms) {
    const banners = alarms.map((a) => {
      const div = document.createElement("div");
      div.className = `alarm ${a.severity}`;
      div.setAttribute("role", "alert");
      div.dataset.code = a.code;
      const title = document.createElement("strong");
      title.textContent = a.title;
      const detail = document.createElement("span");
      detail.textContent = ` ${a.detail}`;
      div.append(title, detail);
      return div;
    });
    container.replaceChildren(...banners);
  }

  function note(text) {
    root.querySelectorAll("[data-live-note]").forEach((el) => { el.textContent = text; });
  }

  // ------------------------------------------------------------------------ polling

  async function poll() {
    if (state.busy) {
      state.again = true; // e.g. a run overlaid while a poll is on its way
      return;
    }
    state.busy = true;
    clearTimeout(state.timer);
    try {
      for (const job of state.jobs) {
        if (!job.loaded || job.active) await fetchJob(job);
      }
      note(state.ended || "");
    } catch (err) {
      note(`Could not refresh (${err.message}); trying again.`);
    } finally {
      state.busy = false;
      if (state.again) {
        state.again = false;
        setTimeout(poll, 0);
      } else {
        schedule();
      }
    }
  }

  function schedule() {
    clearTimeout(state.timer);
    state.timer = null;
    if (document.visibilityState !== "visible") return;
    if (!state.jobs.some((j) => j.active || !j.loaded)) return;
    state.timer = setTimeout(poll, pollMs);
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") poll();
    else clearTimeout(state.timer);
  });

  // ------------------------------------------------------------------------ controls

  const slider = root.querySelector("[data-smoothing]");
  if (slider) {
    let pending = false;
    slider.addEventListener("input", () => {
      state.smoothing = Math.min(0.999, Math.max(0, Number(slider.value) || 0));
      root.querySelectorAll("[data-smoothing-value]").forEach((el) => { el.textContent = state.smoothing.toFixed(2); });
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; renderAll(); });
    });
  }

  charts.forEach((chart) => {
    const logButton = chart.el.querySelector("[data-log]");
    if (logButton) {
      logButton.addEventListener("click", () => {
        chart.log = !chart.log;
        logButton.setAttribute("aria-pressed", String(chart.log));
        if (chart.plotted) render(chart);
      });
    }
    const fullButton = chart.el.querySelector("[data-full]");
    if (fullButton) fullButton.addEventListener("click", () => toggleFull(chart));
  });

  function toggleFull(chart, force) {
    const on = force === undefined ? !chart.el.classList.contains("full") : force;
    chart.el.classList.toggle("full", on);
    document.body.classList.toggle("has-full-chart", on);
    const button = chart.el.querySelector("[data-full]");
    if (button) {
      button.setAttribute("aria-pressed", String(on));
      button.title = on ? "Back to the page (Esc)" : "Full screen";
    }
    if (chart.plotted) Plotly.Plots.resize(chart.plot);
  }

  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    charts.filter((c) => c.el.classList.contains("full")).forEach((c) => toggleFull(c, false));
  });

  // Overlaying other runs of the team (the job page): their traces join the charts, and
  // the comparison link follows, so the view can be shared.
  const overlay = root.querySelector("[data-overlay]");
  const chips = root.querySelector("[data-overlaid]");
  const compareLink = root.querySelector("[data-compare-link]");

  function updateCompareLink() {
    if (!compareLink) return;
    // Ids are numbers: the comma stays literal (?jobs=3,4), as the server writes it.
    compareLink.href = `${config.compare}?jobs=${state.jobs.map((j) => Number(j.id)).join(",")}`;
  }

  function showChips() {
    if (!chips) return;
    const items = state.jobs.slice(1).map((job) => {
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.dataset.job = job.id;
      const swatch = document.createElement("i");
      swatch.style.background = PALETTE[state.jobs.indexOf(job) % PALETTE.length];
      const name = document.createElement("span");
      name.textContent = job.name;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "link";
      remove.textContent = "×";
      remove.title = "Remove from the charts";
      remove.addEventListener("click", () => {
        state.jobs = state.jobs.filter((j) => j !== job);
        showChips();
        updateCompareLink();
        renderAll();
      });
      chip.append(swatch, name, remove);
      return chip;
    });
    chips.replaceChildren(...items);
  }

  if (overlay) {
    overlay.addEventListener("change", () => {
      const id = Number(overlay.value);
      overlay.value = "";
      const entry = config.candidates.find((c) => c.id === id);
      if (!entry || state.jobs.some((j) => j.id === id)) return;
      state.jobs.push(makeJob(entry));
      showChips();
      updateCompareLink();
      poll();
    });
  }

  state.jobs = config.jobs.map(makeJob);
  poll();
})();
