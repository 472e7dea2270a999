/* Annotation screen: vote with buttons or keys (1/2/3, ←/↓/→), skip, undo.
 *
 * Each action posts the form with fetch and swaps in the next item that the server
 * sends back with its answer, so the next item appears at once. While a request is in
 * flight every button is disabled and further keys are ignored; the server's one-live-
 * vote-per-item constraint refuses a second vote whatever happens here. Without
 * JavaScript the same forms post and redirect.
 */
(function () {
  "use strict";
  const root = document.getElementById("annotate");
  if (!root) return;
  const flash = document.getElementById("annot-flash");
  const KEYS = { "1": "left", ArrowLeft: "left", "2": "tie", ArrowDown: "tie", "3": "right", ArrowRight: "right" };
  let busy = false;

  function setBusy(on) {
    busy = on;
    root.classList.toggle("busy", on);
    root.querySelectorAll("button").forEach((b) => {
      if (on) {
        b.dataset.wasDisabled = b.disabled ? "1" : "";
        b.disabled = true;
      } else {
        b.disabled = b.dataset.wasDisabled === "1";
      }
    });
  }

  function say(message) {
    flash.textContent = message || "";
    flash.hidden = !message;
  }

  async function send(form, fields) {
    if (busy) return;
    const body = new FormData(form);
    Object.entries(fields || {}).forEach(([k, v]) => body.set(k, v));
    setBusy(true);
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body,
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (!response.ok) throw new Error(`the server answered ${response.status}`);
      const data = await response.json();
      root.innerHTML = data.html; // fresh buttons, enabled
      busy = false;
      root.classList.remove("busy");
      history.replaceState(null, "", data.url);
      say(data.error || "");
      window.scrollTo({ top: 0 });
    } catch (err) {
      setBusy(false);
      say(`Not saved (${err.message}). Check your connection and try again.`);
    }
  }

  root.addEventListener("submit", (event) => {
    const form = event.target;
    if (!["vote-form", "skip-form", "undo-form"].includes(form.id)) return;
    event.preventDefault();
    const button = event.submitter;
    send(form, button && button.name ? { [button.name]: button.value } : null);
  });

  document.addEventListener("keydown", (event) => {
    if (event.repeat || event.altKey || event.ctrlKey || event.metaKey) return;
    if (event.target.closest && event.target.closest("textarea, input, select")) return;
    const choice = KEYS[event.key];
    if (!choice) return;
    const form = root.querySelector("#vote-form");
    if (!form) return;
    event.preventDefault();
    if (busy) return;
    const button = form.querySelector(`button[value="${choice}"]`);
    if (button) button.classList.add("pressed");
    send(form, { choice });
  });
})();
