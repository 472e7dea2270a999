/* Results page: while the tab is visible, ask every few seconds whether votes arrived
 * (the server answers 204 when nothing changed) and swap in the new results block. */
(function () {
  "use strict";
  const live = document.getElementById("results-live");
  if (!live) return;
  const EVERY_MS = 5000;

  async function poll() {
    if (document.hidden) return;
    const block = live.querySelector("[data-version]");
    const version = block ? block.dataset.version : "";
    const url = `${live.dataset.pollUrl}&v=${encodeURIComponent(version)}`;
    const response = await fetch(url, { credentials: "same-origin" });
    if (response.status === 200) live.innerHTML = await response.text();
  }

  const tick = () => poll().catch(() => {});
  setInterval(tick, EVERY_MS);
  document.addEventListener("visibilitychange", tick);
})();
