// The live view (in section 2, Train): the selected run's loss chart, figures, progress, samples and status as
// its event stream (GET /api/runs/NAME/events) brings them, its Stop and Resume buttons, and which of the run's
// buttons on the page are enabled.

import { $, api } from "../shared/util.js";
import { RESUMABLE, STATUS_WORDS, TRAINING, clock, el, finite, number, runUrl, state } from "./common.js";

const SHOWN_SAMPLES = 30; // evaluations whose samples stay on the page (newest first)

const live = {
  name: null, source: null, chart: null, points: [], drawPending: false, last: null, summary: null,
  runningSince: 0, timer: 0, samples: 0, stopping: false,
  refreshRuns: async () => {}, // runs.js's, given to watch(): this module may not import runs.js, which imports it
};

export function setUpLive() {
  $("stop").addEventListener("click", stopTraining);
  $("resume").addEventListener("click", resumeTraining);
}

function liveChart() {
  if (!live.chart) live.chart = window.TextweaverChart.lossChart($("live-chart"), { title: "Loss while training" });
  return live.chart;
}

function resetLive() {
  live.points = [];
  live.last = null;
  live.samples = 0;
  drawLive();
  $("samples").replaceChildren(el("p", { class: "muted", text: "None yet: the first comes with the first evaluation." }));
  for (const id of ["live-rate", "live-step", "live-best"]) $(id).textContent = "–";
}

// Draw at most once a frame: a replayed history of many records becomes one redraw.
function drawLive() {
  if (live.drawPending) return;
  live.drawPending = true;
  requestAnimationFrame(() => {
    live.drawPending = false;
    const chart = $("live-chart");
    liveChart().setRuns(live.name ? [{ name: live.name, points: live.points }] : []);
    chart.dataset.run = live.name ?? "";
    chart.dataset.valPoints = String(live.points.filter((p) => finite(p.val_loss)).length);
  });
}

// Shows run `name` (null: none) live. refreshRuns() updates the run list after each status event, Stop and Resume.
export function watch(name, refreshRuns) {
  live.refreshRuns = refreshRuns;
  live.source?.close();
  live.source = null;
  live.name = name;
  live.summary = null;
  $("live-name").textContent = name ?? "no run yet";
  resetLive();
  showStatus(null);
  if (!name) return;
  const source = new EventSource(runUrl(name, "/events"));
  live.source = source;
  source.addEventListener("open", resetLive); // each connection replays the run's history from the start
  source.addEventListener("metrics", (event) => onMetrics(JSON.parse(event.data)));
  source.addEventListener("sample", (event) => onSample(JSON.parse(event.data)));
  source.addEventListener("status", (event) => {
    const summary = JSON.parse(event.data);
    if (!TRAINING.has(summary.status)) source.close(); // the stream ends here; Resume opens a new one
    showStatus(summary);
    live.refreshRuns().catch(() => {});
  });
  source.addEventListener("error", () => {
    if (source !== live.source || !TRAINING.has(live.summary?.status ?? "running")) return;
    $("live-status").textContent = source.readyState === EventSource.CLOSED
      ? "Lost the connection to the studio: reload the page."
      : "Lost the connection to the studio: reconnecting…";
  });
}

function onMetrics(record) {
  live.points.push(record);
  live.last = record;
  drawLive();
  if (finite(record.tokens_per_s)) $("live-rate").textContent = number(Math.round(record.tokens_per_s));
  $("live-step").textContent = number(record.step);
  const best = Math.min(...live.points.map((p) => p.val_bpc).filter(finite));
  if (Number.isFinite(best)) $("live-best").textContent = `${best.toFixed(3)} bits/char`;
  showProgress();
  updateRunControls();
}

function onSample(sample) {
  const box = $("samples");
  if (!live.samples) box.replaceChildren();
  live.samples += 1;
  const temps = Object.entries(sample.samples).map(([t, text]) =>
    el("figure", { class: "temp" }, el("span", { text: `temperature ${t}` }), el("div", { text: text })));
  const heading = el("summary", { text: `Step ${number(sample.step)} · prompt ${JSON.stringify(sample.prompt)}` });
  // the newest evaluation is open; the one it replaces folds away unless the reader opened it
  const previous = box.firstElementChild;
  if (previous?.dataset.auto) {
    previous.open = false;
    delete previous.dataset.auto;
  }
  const item = el("details", { class: "sample", "data-auto": "1" }, heading, el("div", { class: "temps" }, ...temps));
  item.open = true;
  box.prepend(item);
  while (box.children.length > SHOWN_SAMPLES) box.lastElementChild.remove();
}

function showStatus(summary) {
  const line = $("live-status");
  const before = live.summary?.status;
  live.summary = summary;
  if (summary?.status !== "running") live.stopping = false;
  clearInterval(live.timer);
  if (!summary) {
    line.textContent = live.name ? "Connecting…" : "Start a training, or pick a run below.";
    line.dataset.status = "";
    showProgress();
    updateRunControls();
    return;
  }
  const { status, message } = summary;
  if (status === "running" && before !== "running") live.runningSince = Date.now();
  line.dataset.status = status;
  const word = STATUS_WORDS[status] ?? status;
  let text = word;
  if (status === "queued") text = `Queued: number ${summary.queue_position ?? "?"} in the queue (one training at a time).`;
  else if (status === "running") text = `Training ${summary.model === "auto" ? "(model auto)" : summary.model} on ${summary.corpus.join(", ")}.`;
  else if (message) text = message.toLowerCase().startsWith(status) ? message[0].toUpperCase() + message.slice(1) : `${word}: ${message}`;
  else if (status === "done") text = "Done: the time budget is used up.";
  line.textContent = text;
  // the progress bar moves between evaluations on the page's own clock (no request is made)
  if (status === "running") live.timer = setInterval(showProgress, 1000);
  showProgress();
  updateRunControls();
}

// Training time so far: the last record's, plus the time since it (or since the run started, if later).
function elapsedNow() {
  const summary = live.summary;
  let elapsed = live.last?.elapsed_s ?? summary?.elapsed_s ?? 0;
  if (summary?.status === "running") {
    const since = live.last && live.last.time * 1000 > live.runningSince ? live.last.time * 1000 : live.runningSince;
    elapsed += Math.max(0, Date.now() - since) / 1000;
  }
  return Math.min(elapsed, summary?.budget_s ?? elapsed);
}

function showProgress() {
  const summary = live.summary;
  const bar = $("live-progress");
  if (!summary || !finite(summary.budget_s)) {
    bar.value = 0;
    $("live-time").textContent = "";
    return;
  }
  const elapsed = elapsedNow();
  bar.max = summary.budget_s;
  bar.value = elapsed;
  let text = `${clock(elapsed)} of ${clock(summary.budget_s)}`;
  if (summary.status === "running") text += ` · about ${clock(summary.budget_s - elapsed)} left`;
  else if (summary.status === "queued") text += " · waiting for its turn";
  $("live-time").textContent = text;
}

export function updateRunControls() {
  const status = live.summary?.status;
  $("stop").disabled = !TRAINING.has(status) || live.stopping;
  $("resume").disabled = !RESUMABLE.has(status);
  const run = state.runs.find((r) => r.name === state.selected);
  const hasModel = Boolean(live.summary?.has_model || run?.has_model || live.points.length);
  const generating = document.body.dataset.generating === "true";
  $("generate").disabled = !hasModel || generating;
  $("download-web").disabled = !hasModel || state.downloading;
  $("download-onnx").disabled = !hasModel || state.downloading;
  $("download-report").disabled = !state.selected || state.downloading;
}

async function stopTraining() {
  const name = live.name;
  live.stopping = true; // until the status event says it has stopped
  updateRunControls();
  try {
    await api("POST", runUrl(name, "/stop"));
    if (live.summary?.status === "running") $("live-status").textContent = "Stopping: saving a checkpoint…";
    await live.refreshRuns();
  } catch (error) {
    live.stopping = false;
    $("live-status").textContent = error.message;
    updateRunControls();
  }
}

async function resumeTraining() {
  const name = live.name;
  $("resume").disabled = true;
  // a finished run used its budget: it continues up to the Time budget field (the run's new total)
  const body = live.summary?.status === "done" ? { budget: $("budget").value.trim() } : undefined;
  try {
    await api("POST", runUrl(name, "/resume"), body);
    await live.refreshRuns();
    watch(name, live.refreshRuns);
  } catch (error) {
    $("live-status").textContent = error.message;
    updateRunControls();
  }
}
