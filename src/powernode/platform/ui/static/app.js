// powernode console: the whole interaction layer (no framework, nothing vendored).
// Bulk selection on every list, and live fleet events over server-sent events.
"use strict";

// The rows a bulk form acts on: its checkboxes, inside it or tied to it by form=.
function selected(form) {
  return Array.from(form.elements).filter(
    (e) => e instanceof HTMLInputElement && e.type === "checkbox" && e.checked && !e.dataset.selectAll
  ).length;
}

function countSelected(form) {
  const n = selected(form);
  const out = form.querySelector("[data-selected-count]");
  if (out) out.textContent = n ? n + " selected" : "";
}

document.addEventListener("change", (ev) => {
  const box = ev.target;
  if (!(box instanceof HTMLInputElement) || box.type !== "checkbox") return;
  const table = box.closest("table");
  if (box.dataset.selectAll && table) {
    for (const b of table.querySelectorAll(`tbody input[name="${box.dataset.selectAll}"]`)) {
      b.checked = box.checked;
    }
  }
  const form = box.form;
  if (form) countSelected(form);
});

document.addEventListener("submit", (ev) => {
  const button = ev.submitter;
  if (button && button.hasAttribute("data-bulk")) {
    const form = button.form;
    const n = selected(form);
    if (n === 0) { ev.preventDefault(); alert("Select at least one row."); return; }
    if (button.dataset.confirm && !confirm(button.dataset.confirm)) ev.preventDefault();
  }
});

function liveEvents() {
  const table = document.querySelector("table[data-stream]");
  if (!table || !window.EventSource) return;
  const status = document.querySelector("[data-live-status]");
  const source = new EventSource(table.dataset.stream);
  source.addEventListener("open", () => { if (status) status.textContent = "live"; });
  source.addEventListener("error", () => { if (status) status.textContent = "reconnecting"; });
  source.addEventListener("fleet", (msg) => {
    const e = JSON.parse(msg.data);
    const row = document.createElement("tr");
    row.className = e.severity;
    for (const value of [e.at, e.kind, e.severity, e.instance, e.payload]) {
      const cell = document.createElement("td");
      cell.textContent = value;  // text, never HTML: event payloads come from nodes
      row.appendChild(cell);
    }
    row.dataset.eventId = e.id;
    table.tBodies[0].prepend(row);
  });
}

document.addEventListener("DOMContentLoaded", liveEvents);
