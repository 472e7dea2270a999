/* Evaluation page: while answers are being generated or a judge run is queued or
 * running, and the tab is visible, poll the status and update each system's count, bar
 * and status, and each judge run's progress; reload when something finishes, so the
 * new table (or the failure) shows. */
(function () {
  "use strict";
  const box = document.getElementById("generation");
  if (!box || !box.dataset.live) return;
  const EVERY_MS = 3000;
  const shownRuns = new Map(
    Array.from(document.querySelectorAll("[data-testid=judge-run]")).map((el) => [
      el.dataset.run,
      el.querySelector("[data-testid=judge-status]").textContent.trim(),
    ]),
  );

  function showSystems(data) {
    data.systems.forEach((s) => {
      const row = box.querySelector(`tr[data-system="${s.id}"]`);
      if (!row) return;
      const shown = s.status === "running" ? Math.max(s.answers, s.progress) : s.answers;
      row.querySelector(".answers-cell .num").textContent = shown;
      const pct = data.num_prompts ? Math.min(100, (100 * shown) / data.num_prompts) : 0;
      row.querySelector(".answers-cell .bar span").style.width = `${pct}%`;
      const badge = row.querySelector(".status");
      badge.textContent = s.status_label;
      badge.className = `status ${s.status}`;
    });
  }

  function showRuns(runs) {
    let changed = false;
    runs.forEach((run) => {
      const el = document.querySelector(`[data-testid=judge-run][data-run="${run.id}"]`);
      if (!el) {
        changed = true; // a run started (e.g. automatically): show it
        return;
      }
      const badge = el.querySelector("[data-testid=judge-status]");
      if (shownRuns.get(String(run.id)) !== run.status_label) {
        if (run.status === "succeeded" || run.status === "failed") changed = true;
        badge.textContent = run.status_label;
        badge.className = `status ${run.status}`;
        shownRuns.set(String(run.id), run.status_label);
      }
      const progress = el.querySelector("[data-testid=judge-progress]");
      if (progress && run.progress) {
        progress.querySelector(".line").textContent = run.progress;
        const pct = run.total ? Math.min(100, (100 * run.done) / run.total) : 0;
        progress.querySelector(".bar span").style.width = `${pct}%`;
      }
    });
    return changed;
  }

  async function poll() {
    if (document.hidden) return;
    const response = await fetch(box.dataset.statusUrl, { credentials: "same-origin" });
    if (!response.ok) return;
    const data = await response.json();
    showSystems(data);
    const runsChanged = showRuns(data.judge_runs);
    if (runsChanged || data.status !== box.dataset.status || !data.live) {
      window.location.reload();
    }
  }

  const tick = () => poll().catch(() => {});
  setInterval(tick, EVERY_MS);
  document.addEventListener("visibilitychange", tick);
})();
