// The studio page (studio.html): texts in, trainings started and watched live, generation, downloads.
//
// Everything goes through the studio's JSON API (app/studio/app.py). Live training data arrives as server-sent
// events (one EventSource on /api/runs/NAME/events: it replays the run's history, then streams), and
// generated text as a streamed fetch; the page never polls. Choices, defaults and limits come from the
// server, declared there once: GET /api/studio (models, bases, budget, upload limit, weights) and the
// OpenAPI schema of a generation request (length, temperature ... with their bounds).

const $ = (id) => document.getElementById(id);
const TRAINING = new Set(["queued", "running"]); // a run in these has a live event stream and a Stop button
const RESUMABLE = new Set(["stopped", "interrupted", "failed", "done"]);
const SHOWN_SAMPLES = 30; // evaluations whose samples stay on the page (newest first)
const STATUS_WORDS = {
  created: "Created", queued: "Queued", running: "Training", done: "Done", stopped: "Stopped",
  failed: "Failed", interrupted: "Interrupted", deleted: "Deleted",
};

const state = {
  studio: null, // GET /api/studio
  texts: [], // GET /api/texts
  chosen: new Set(), // text ids ticked for training
  runs: [], // GET /api/runs, newest first
  queue: [],
  selected: null, // the run in the live view, Generate and Publish
  compared: new Set(),
  genDefaults: {}, // property -> default, from the generation request's schema
};

// ---------------------------------------------------------------- small helpers

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.message ?? JSON.stringify(body.detail ?? body);
  } catch {
    return `${response.url}: ${response.status} ${response.statusText}`;
  }
}

async function api(method, url, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  if (!response.ok) throw new Error(await errorMessage(response));
  return response.status === 204 ? null : response.json();
}

const runUrl = (name, rest = "") => `/api/runs/${encodeURIComponent(name)}${rest}`;
const number = (n) => (n == null ? "–" : n.toLocaleString("en-US"));
const finite = (v) => typeof v === "number" && Number.isFinite(v);

function formatBytes(n) {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(1)} GB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(n >= 10 * 2 ** 20 ? 0 : 1)} MB`;
  return `${Math.max(1, Math.round(n / 1024))} KB`;
}

// 75 -> "1:15", 3725 -> "1:02:05"
function clock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const pad = (n) => String(n).padStart(2, "0");
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return (h ? `${h}:${pad(m)}` : String(m)) + `:${pad(s % 60)}`;
}

function showErrors(box, messages) {
  box.replaceChildren(...messages.map((m) => el("p", { text: m })));
}

// ---------------------------------------------------------------- 1. text

async function refreshTexts() {
  state.texts = await api("GET", "/api/texts");
  const known = new Set([...state.studio.builtin_texts, ...state.texts.map((t) => t.id)]);
  for (const id of state.chosen) if (!known.has(id)) state.chosen.delete(id);
  renderTexts();
}

function renderTexts() {
  const items = [
    ...state.studio.builtin_texts.map((id) => ({ id, name: id, builtin: true })),
    ...state.texts,
  ];
  $("texts").replaceChildren(...items.map((text) => {
    const box = el("input", { type: "checkbox", id: `use-${text.id}` });
    box.checked = state.chosen.has(text.id);
    box.addEventListener("change", () => {
      if (box.checked) state.chosen.add(text.id);
      else state.chosen.delete(text.id);
    });
    const stats = text.builtin
      ? "built in: Tiny Shakespeare, 1.1 million characters of the plays"
      : [
        `${number(text.characters)} characters`, `${number(text.distinct)} distinct`, `${number(text.lines)} lines`,
        `script ${text.script}`, `read as ${text.encoding}`, formatBytes(text.bytes),
      ].join(" · ");
    const body = el("div", { class: "text-body" },
      el("label", { for: box.id, text: text.name }), el("div", { class: "stats muted", text: stats }));
    const item = el("li", {}, box, body);
    if (!text.builtin) {
      const remove = el("button", { type: "button", class: "secondary small", "aria-label": `Remove ${text.name}`, text: "Remove" });
      remove.addEventListener("click", () => removeText(text));
      item.append(remove);
    }
    return item;
  }));
}

async function removeText(text) {
  try {
    await api("DELETE", `/api/texts/${encodeURIComponent(text.id)}`);
    state.chosen.delete(text.id);
    await refreshTexts();
    $("text-status").textContent = `Removed ${text.name}.`;
  } catch (error) {
    showErrors($("text-error"), [error.message]);
  }
}

// One text, the raw bytes as the body (streamed by the browser, not multipart).
async function uploadText(name, body, encoding) {
  const query = new URLSearchParams({ name, encoding });
  const response = await fetch(`/api/texts?${query}`, { method: "POST", body });
  if (!response.ok) throw new Error(await errorMessage(response));
  return response.json();
}

// Upload texts one after another; each refused one gets its one-line reason in the alert box.
async function addTexts(items) {
  const errors = [];
  const added = [];
  showErrors($("text-error"), []);
  for (const { name, body, encoding } of items) {
    if (body.size > state.studio.max_upload) {
      errors.push(`${name}: larger than the studio's upload limit of ${formatBytes(state.studio.max_upload)} (textweaver studio --max-upload)`);
      continue;
    }
    $("text-status").textContent = `Uploading ${name} (${formatBytes(body.size)})…`;
    try {
      added.push(await uploadText(name, body, encoding));
    } catch (error) {
      errors.push(error.message);
    }
  }
  if (added.length && !state.builtinTicked) for (const id of state.studio.builtin_texts) state.chosen.delete(id);
  for (const text of added) state.chosen.add(text.id);
  await refreshTexts();
  $("text-status").textContent = added.length ? `Added ${added.map((t) => t.name).join(", ")}.` : "";
  showErrors($("text-error"), errors);
  return added.length > 0;
}

function setUpText() {
  const files = $("files");
  const encoding = () => $("encoding").value.trim() || "utf-8";
  files.addEventListener("change", async () => {
    await addTexts(Array.from(files.files, (file) => ({ name: file.name, body: file, encoding: encoding() })));
    files.value = ""; // the same file can be chosen again
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const dropped = Array.from(event.dataTransfer.files, (file) => ({ name: file.name, body: file, encoding: encoding() }));
    if (dropped.length) addTexts(dropped);
  });
  // a file dropped beside the zone must not replace the page
  for (const type of ["dragover", "drop"]) window.addEventListener(type, (event) => event.preventDefault());

  $("add-paste").addEventListener("click", async () => {
    const text = $("paste").value;
    if (!text.trim()) {
      showErrors($("text-error"), ["The paste box is empty: paste some text into it first."]);
      return;
    }
    const blob = new Blob([text], { type: "text/plain;charset=utf-8" });
    if (await addTexts([{ name: "pasted text", body: blob, encoding: "utf-8" }])) $("paste").value = "";
  });
}

// ---------------------------------------------------------------- 2. train

function fillSelect(select, groups) {
  const current = select.value;
  select.replaceChildren(...groups.map(([label, options]) => {
    const nodes = options.map(([value, text]) => el("option", { value, text }));
    return label ? el("optgroup", { label }, ...nodes) : nodes[0];
  }));
  if ([...select.options].some((o) => o.value === current)) select.value = current;
}

function renderStartFrom() {
  const finished = state.runs.filter((r) => r.has_model && !TRAINING.has(r.status));
  const groups = [["", [["", "auto (the base of the text's language)"], ["none", "none (random weights)"]]],
    ["Base models", state.studio.bases.map((b) => [b, b])]];
  if (finished.length) groups.push(["Your runs", finished.map((r) => [r.name, r.name])]);
  fillSelect($("init-from"), groups);
  fineTuneRule();
}

// A fine-tuned run keeps its base's model: the model choice is then auto.
function fineTuneRule() {
  const fineTune = !["", "none"].includes($("init-from").value);
  if (fineTune) $("model").value = "auto";
  $("model").disabled = fineTune;
}

async function startTraining() {
  const errors = $("train-error");
  showErrors(errors, []);
  if (!state.chosen.size) {
    showErrors(errors, ["No text ticked: upload or paste a text above, or tick builtin:shakespeare."]);
    return;
  }
  const body = { texts: [...state.chosen], budget: $("budget").value.trim(), model: $("model").value };
  if ($("init-from").value) body.init_from = $("init-from").value;
  if ($("run-name").value.trim()) body.name = $("run-name").value.trim();
  if ($("eval-every").value) body.eval_every = Number($("eval-every").value);
  $("start").disabled = true;
  try {
    const run = await api("POST", "/api/runs", body);
    $("start-status").textContent = run.status === "queued" && run.queue_position > 1
      ? `${run.name} waits in the queue (number ${run.queue_position}).`
      : `Started ${run.name}.`;
    $("run-name").value = "";
    await refreshRuns();
    select(run.name);
  } catch (error) {
    showErrors(errors, [error.message]);
  } finally {
    $("start").disabled = false;
  }
}

// ---------------------------------------------------------------- the live view

const live = {
  name: null, source: null, chart: null, points: [], drawPending: false, last: null, summary: null,
  runningSince: 0, timer: 0, samples: 0, stopping: false,
};

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

function watch(name) {
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
    refreshRuns().catch(() => {});
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

function updateRunControls() {
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
    await refreshRuns();
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
    await refreshRuns();
    watch(name);
  } catch (error) {
    $("live-status").textContent = error.message;
    updateRunControls();
  }
}

// ---------------------------------------------------------------- 3. runs

async function refreshRuns() {
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

function select(name) {
  state.selected = name;
  for (const id of ["gen-run", "pub-run"]) $(id).textContent = name ?? "no run";
  for (const row of $("runs").tBodies[0].rows) {
    if (row.querySelector("button.link")?.textContent === name) row.setAttribute("aria-current", "true");
    else row.removeAttribute("aria-current");
  }
  watch(name);
  updateRunControls();
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

// ---------------------------------------------------------------- 4. generate

// The bounds and default of one property of a JSON schema (a nullable one is an anyOf).
function schemaOf(property) {
  const parts = property?.anyOf ?? [property ?? {}];
  const typed = parts.find((p) => p.type && p.type !== "null") ?? {};
  return { ...typed, default: property?.default };
}

async function setUpGenerate() {
  const spec = await api("GET", "/openapi.json");
  const properties = spec.components.schemas.StreamParams.properties;
  const limit = (name) => schemaOf(properties[name]);
  const length = limit("length");
  const temperature = limit("temperature");
  Object.assign($("length"), { min: length.minimum, max: length.maximum, value: length.default });
  Object.assign($("temperature"), { min: temperature.minimum, max: temperature.maximum, value: temperature.default });
  if (limit("prompt").maxLength) $("prompt").maxLength = limit("prompt").maxLength;
  state.genDefaults = Object.fromEntries(Object.entries(properties).map(([k, v]) => [k, v.default ?? null]));
  // repetition penalty and stop string: shown when this studio's generation accepts them
  const penalty = limit("repetition_penalty");
  $("penalty-control").hidden = !properties.repetition_penalty;
  $("penalty").value = penalty.default ?? 1; // its bounds (far apart) are checked by the server
  $("stop-string-control").hidden = !properties.stop;
  if (limit("stop").maxLength) $("stop-string").maxLength = limit("stop").maxLength;

  const outputs = [[$("length"), "length-value", 0], [$("temperature"), "temperature-value", 2], [$("top-p"), "top-p-value", 2]];
  for (const [input, output, digits] of outputs) {
    const show = () => {
      const value = Number(input.value);
      $(output).textContent = input.id === "temperature" && value === 0 ? "0 (greedy)" : value.toFixed(digits);
    };
    input.addEventListener("input", show);
    show();
  }
}

function generationBody() {
  const body = { length: Number($("length").value), temperature: Number($("temperature").value) };
  if ($("prompt").value) body.prompt = $("prompt").value;
  const topK = Number.parseInt($("top-k").value, 10);
  if (topK > 0) body.top_k = topK;
  const topP = Number($("top-p").value);
  if (topP < 1) body.top_p = topP;
  if ($("seed").value !== "") body.seed = Number.parseInt($("seed").value, 10);
  // sent only when set, so the page also works with a server that does not know them
  const penalty = Number($("penalty").value);
  if (!$("penalty-control").hidden && $("penalty").value !== "" && penalty !== state.genDefaults.repetition_penalty) {
    body.repetition_penalty = penalty;
  }
  if (!$("stop-string-control").hidden && $("stop-string").value) body.stop = readEscapes($("stop-string").value);
  return body;
}

// The stop string as typed, with \n read as a line break, \t as a tab and \\ as one backslash
// (as the exported page reads it).
function readEscapes(text) {
  return text.replace(/\\([nt\\])/g, (_, c) => ({ n: "\n", t: "\t", "\\": "\\" })[c]);
}

function parseEvent(block) {
  let type = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) type = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  return { type, data: data.length ? JSON.parse(data.join("\n")) : {} };
}

let generation = null; // the AbortController of the generation streaming now

async function generate() {
  const name = state.selected;
  const status = $("gen-status");
  const output = $("output");
  const text = document.createTextNode("");
  $("output-prompt").textContent = "";
  $("output-text").replaceChildren(text);
  $("rate").textContent = "–";
  status.textContent = "Generating… (the first one loads the model)";
  document.body.dataset.generating = "true";
  generation = new AbortController();
  setGenerating(true);
  const start = performance.now();
  let tokens = 0;
  const seconds = () => (performance.now() - start) / 1000;
  const body = generationBody();
  try {
    const response = await fetch(runUrl(name, "/generate/stream"), {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify(body), signal: generation.signal,
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let done = null;
    while (!done) {
      const { done: ended, value } = await reader.read();
      if (ended) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event.type === "error") throw new Error(event.data.message);
        if (event.type === "prompt") $("output-prompt").textContent = event.data.text;
        if (event.type === "done") done = event.data;
        if (event.type === "message") {
          tokens += 1;
          const atBottom = output.scrollHeight - output.scrollTop - output.clientHeight < 40;
          text.appendData(event.data.text);
          if (atBottom) output.scrollTop = output.scrollHeight;
          $("rate").textContent = number(Math.round(tokens / Math.max(seconds(), 1e-3)));
        }
      }
    }
    const result = done ?? { tokens, seconds: seconds() };
    if (result.seconds > 0) $("rate").textContent = number(Math.round(result.tokens / result.seconds));
    const atStop = body.stop !== undefined && result.tokens < body.length ? ", ended at the stop string" : "";
    status.textContent = `Done: ${number(result.tokens)} tokens in ${result.seconds.toFixed(2)} s${atStop}.`;
  } catch (error) {
    status.textContent = error.name === "AbortError"
      ? `Stopped: ${number(tokens)} tokens in ${seconds().toFixed(2)} s.`
      : `Error: ${error.message}`;
  } finally {
    generation = null;
    document.body.dataset.generating = "false";
    setGenerating(false);
  }
}

function setGenerating(busy) {
  $("stop-generating").disabled = !busy;
  $("copy").disabled = busy || !($("output-prompt").textContent + $("output-text").textContent);
  updateRunControls();
}

async function copyOutput() {
  const text = $("output-prompt").textContent + $("output-text").textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = el("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  $("gen-status").textContent = "Copied to the clipboard.";
}

// ---------------------------------------------------------------- 5. publish

// The file name of a download (RFC 6266): filename* (RFC 5987: charset'language'percent-encoded UTF-8,
// how 西游记-1.onnx arrives) when there is one, else the plain filename, quoted or not; null if neither.
function dispositionFilename(header) {
  const extended = /(?:^|;)\s*filename\*\s*=\s*utf-8'[^']*'([^;\s]+)/i.exec(header);
  if (extended) {
    try {
      return decodeURIComponent(extended[1]);
    } catch {
      // malformed percent-encoding: fall back to the plain name
    }
  }
  const plain = /(?:^|;)\s*filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))/i.exec(header);
  if (!plain) return null;
  return plain[1] !== undefined ? plain[1].replace(/\\(.)/g, "$1") : plain[2];
}

// kind: "web" (the page as a zip), "onnx" (the model alone) or "report" (the run report)
async function download(kind) {
  const name = state.selected;
  const query = new URLSearchParams({ format: kind, quantize: kind === "web" ? $("quantize").value : "fp32" });
  const url = kind === "report" ? runUrl(name, "/report") : runUrl(name, `/download?${query}`);
  showErrors($("publish-error"), []);
  state.downloading = true;
  updateRunControls();
  $("publish-status").textContent = kind === "report" ? `Writing the report of ${name}…` : `Exporting ${name}… (a few seconds)`;
  try {
    const response = await fetch(url);
    if (!response.ok) throw new Error(await errorMessage(response));
    const blob = await response.blob();
    const filename = dispositionFilename(response.headers.get("content-disposition") ?? "") ?? `${name}-${kind}`;
    const link = el("a", { href: URL.createObjectURL(blob), download: filename });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
    $("publish-status").textContent = kind === "web"
      ? `Downloaded ${filename} (${formatBytes(blob.size)}): unzip it and serve the folder, e.g. python -m http.server.`
      : `Downloaded ${filename} (${formatBytes(blob.size)}).`;
  } catch (error) {
    $("publish-status").textContent = "";
    showErrors($("publish-error"), [error.message]);
  } finally {
    state.downloading = false;
    updateRunControls();
  }
}

// ---------------------------------------------------------------- start

async function main() {
  state.studio = await api("GET", "/api/studio");
  $("version").textContent = state.studio.version;
  $("max-upload").textContent = formatBytes(state.studio.max_upload);
  $("budget").value = state.studio.budget;
  fillSelect($("model"), state.studio.models.map((m) => ["", [[m, m]]]));
  fillSelect($("quantize"), state.studio.quantize.map((q) => ["", [[q, q]]]));

  setUpText();
  await refreshTexts();
  for (const text of state.texts) state.chosen.add(text.id);
  if (!state.chosen.size) state.chosen.add(state.studio.builtin_texts[0]);
  renderTexts();
  $("texts").addEventListener("change", (event) => {
    if (state.studio.builtin_texts.some((id) => event.target.id === `use-${id}`)) state.builtinTicked = event.target.checked;
  });

  $("init-from").addEventListener("change", fineTuneRule);
  $("start").addEventListener("click", startTraining);
  $("stop").addEventListener("click", stopTraining);
  $("resume").addEventListener("click", resumeTraining);
  $("generate").addEventListener("click", generate);
  $("stop-generating").addEventListener("click", () => generation?.abort());
  $("copy").addEventListener("click", copyOutput);
  $("reset").addEventListener("click", () => {
    $("prompt").value = "";
    $("gen-status").textContent = "The next text starts from a random sentence of the run's text.";
  });
  $("download-web").addEventListener("click", () => download("web"));
  $("download-onnx").addEventListener("click", () => download("onnx"));
  $("download-report").addEventListener("click", () => download("report"));

  await setUpGenerate();
  await refreshRuns();
  // a reloaded page goes back to the run that trains now, else the newest
  const running = state.runs.find((r) => r.status === "running") ?? state.runs.find((r) => TRAINING.has(r.status));
  select((running ?? state.runs[0])?.name ?? null);
  document.body.dataset.ready = "true";
}

main().catch((error) => {
  showErrors($("text-error"), [`The studio page could not start: ${error.message}`]);
});
