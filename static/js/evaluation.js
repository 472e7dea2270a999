/* Evaluation page: while answers are being generated and the tab is visible, poll the
 * status and update each system's count, bar and status; reload when generation ends. */
(function () {
  "use strict";
  const box = document.getElementById("generation");
  if (!box || box.dataset.status !== "generating") return;
  const EVERY_MS = 3000;

  async function poll() {
    if (document.hidden) return;
    const response = await fetch(box.dataset.statusUrl, { credentials: "same-origin" });
    if (!response.ok) return;
    const data = await response.json();
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
    if (data.status !== "generating") window.location.reload();
  }

  const tick = () => poll().catch(() => {});
  setInterval(tick, EVERY_MS);
  document.addEventListener("visibilitychange", tick);
})();
