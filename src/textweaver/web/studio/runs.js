// Section 3, Runs: the table of runs (show, compare, rename, delete), the queue, and the chart that compares
// the ticked runs' losses.

import { $, api } from "../shared/util.js";
import { clock, el, finite, number, runUrl, showErrors, state } from "./common.js";
import { updateRunControls, watch } from "./live.js";
import { renderStartFrom } from "./train.js";

export async function refreshRuns() {
  const data = await api("GET", "/api/runs");
  state.runs = data.runs;
  state.queue = data.queue;
  const names = new Set(state.runs.map((r) => r.name));
  for (const name of state.compared) if (!names.has(name)) state.compared.delete(name);
  renderRuns(data);
  renderStartFrom();
  updateRunControls();
}

function renderRuns({ running, queue }) {
  const rows = state.runs.map((run) => {
    const compare = el("input", { type: "checkbox", "aria-label": `Compare ${run.name}` });
    compare.checked = state.compared.has(run.name);
    compare.addEventListener("change", () => {
      if (compare.checked) state.compared.add(run.name);
      else state.compared.delete(run.name);
      drawCompare();
    });
    const show = el("button", { type: "button", class: "link", title: "Show in the live view, Generate and Publish", text: run.name });
    show.addEventListener("click", () => select(run.name));
    const rename = el("button", { type: "button", class: "secondary small", "aria-label": `Rename ${run.name}`, text: "Rename" });
    rename.addEventListener("click", () => renameRun(run.name));
    const remove = el("button", { type: "button", class: "secondary small", "aria-label": `Delete ${run.name}`, text: "Delete" });
    remove.addEventListener("click", () => deleteRun(run.name));
    const position = queue.indexOf(run.name);
    const status = position >= 0 ? `queued (number ${position + 1})` : run.status;
    const cell = (label, ...content) => el("td", { "data-label": label }, ...content);
    const row = el("tr", {},
      cell("Compare", compare), cell("Run", show), el("td", { "data-label": "Corpus", class: "corpus", text: run.corpus.join(", ") }),
      cell("Model", run.model),
      el("td", { "data-label": "Best bits/char", class: "num", text: finite(run.best_val_bpc) ? run.best_val_bpc.toFixed(3) : "–" }),
      el("td", { "data-label": "Trained", class: "num", text: `${clock(run.elapsed_s)} · ${number(run.steps)} steps` }),
      el("td", { "data-label": "Status", class: `status-${run.status}`, title: run.message, text: status }),
      cell("Actions", el("div", { class: "actions" }, rename, remove)));
    if (run.name === state.selected) row.setAttribute("aria-current", "true");
    return row;
  });
  $("runs").tBodies[0].replaceChildren(...rows);
  $("runs").hidden = rows.length === 0;
  $("runs-empty").hidden = rows.length > 0;
  const waiting = queue.length ? ` · waiting: ${queue.join(", ")}` : "";
  $("queue").textContent = running.length || queue.length
    ? `Training now: ${running.join(", ") || "none"}${waiting}. One training runs at a time; the others wait their turn.`
    : "";
}

// Shows run `name` (null: none) in the live view, Generate and Publish.
export function select(name) {
  state.selected = name;
  for (const id of ["gen-run", "pub-run"]) $(id).textContent = name ?? "no run";
  for (const row of $("runs").tBodies[0].rows) {
    if (row.querySelector("button.link")?.textContent === name) row.setAttribute("aria-current", "true");
    else row.removeAttribute("aria-current");
  }
  watch(name, refreshRuns);
  updateRunControls();
}

// A run just started: list it and show it.
export async function showRun(name) {
  await refreshRuns();
  select(name);
}

let compareChart = null;
let compareTicket = 0; // only the latest drawing may set the chart (ticking boxes quickly overlaps fetches)

async function drawCompare() {
  const ticket = ++compareTicket;
  const names = state.runs.map((r) => r.name).filter((n) => state.compared.has(n));
  $("compare").hidden = names.length === 0;
  if (!names.length) {
    compareChart?.destroy();
    compareChart = null;
    return;
  }
  try {
    const runs = await Promise.all(names.map(async (name) => ({ name, points: await api("GET", runUrl(name, "/metrics")) })));
    if (ticket !== compareTicket) return;
    compareChart ??= window.TextweaverChart.lossChart($("compare-chart"));
    compareChart.setRuns(runs);
  } catch (error) {
    showErrors($("runs-error"), [error.message]);
  }
}

async function renameRun(name) {
  const next = window.prompt(`New name for run ${name} (letters, digits, '.', '_', '-'):`, name)?.trim();
  if (!next || next === name) return;
  showErrors($("runs-error"), []);
  try {
    await api("PATCH", runUrl(name), { name: next });
    if (state.compared.delete(name)) state.compared.add(next);
    await refreshRuns();
    if (state.selected === name) select(next);
    drawCompare();
  } catch (error) {
    showErrors($("runs-error"), [error.message]);
  }
}

async function deleteRun(name) {
  if (!window.confirm(`Delete run ${name} and all its files (checkpoints, metrics, samples)? This cannot be undone.`)) return;
  showErrors($("runs-error"), []);
  try {
    await api("DELETE", runUrl(name));
    await refreshRuns();
    if (state.selected === name) select(state.runs[0]?.name ?? null);
    drawCompare();
  } catch (error) {
    showErrors($("runs-error"), [error.message]);
  }
}
