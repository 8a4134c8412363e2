// The Train panel of an exported page whose config.json has "train" (textweaver export --format web with the
// training files): the visitor's text, a time budget, fine-tuning in a worker (train.js) with a live loss chart
// (shared/chart.js over the vendored uPlot), then Generate with the new weights, kept in this browser
// (train-store.js) until "Forget", and "Download model" as a .safetensors file `textweaver generate` reads.
//
// setUpTraining(config, {setWeights}) shows the panel; setWeights(ArrayBuffer | null) is app.js's: it makes
// Generate use those weights (null: the exported ones) once the model is loaded.

import { $, formatBytes } from "./shared/util.js";
import {
  downloadName, forgetSaved, loadSaved, offerDownload, pageKey, safetensorsBlob, saveWeights,
} from "./train-store.js";

const CHART_SCRIPTS = ["vendor/uplot/uPlot.iife.min.js", "shared/chart.js"];
const CHART_STYLE = "vendor/uplot/uPlot.min.css";
const RUN_NAME = "fine-tuning";

const ui = {
  card: $("train-card"), weights: $("train-weights"), file: $("train-file"),
  paste: $("train-paste"), text: $("train-text-status"), budget: $("train-budget"), start: $("train-start"),
  stop: $("train-stop"), chart: $("train-chart"), valLoss: $("train-val-loss"), rate: $("train-rate"),
  eta: $("train-eta"), step: $("train-step"), status: $("train-status"), download: $("train-download"),
  forget: $("train-forget"),
};

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = Object.assign(document.createElement("script"), { src });
    script.addEventListener("load", resolve);
    script.addEventListener("error", () => reject(new Error(`${src}: could not be loaded`)));
    document.head.append(script);
  });
}

async function lossChart(unit) {
  document.head.append(Object.assign(document.createElement("link"), { rel: "stylesheet", href: CHART_STYLE }));
  for (const src of CHART_SCRIPTS) await loadScript(src);
  return window.TextweaverChart.lossChart(ui.chart, { title: "Loss while fine-tuning", height: 240, yLabel: unit });
}

const clock = (seconds) => {
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
};
const when = (iso) => new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });

export async function setUpTraining(config, { setWeights }) {
  const char = config.level === "char";
  const unit = char ? "characters" : "tokens";
  $("train-unit").textContent = char ? "nats per character" : "nats per token";
  ui.card.hidden = false;
  const key = pageKey(config);
  const worker = new Worker("train.js", { type: "module" });
  const chart = await lossChart(char ? "nats/char" : "nats/token");
  const state = { points: [], tuned: null, ready: false, training: false, source: "" };

  const setState = (name) => { ui.card.dataset.state = name; };
  const showWeights = () => {
    const t = state.tuned;
    const kept = t?.saved ? `saved in this browser on ${when(t.saved)}` : "not saved in this browser";
    ui.weights.textContent = t
      ? `This page uses your fine-tuned weights (${kept}; ${t.steps.toLocaleString()} steps; validation loss `
        + `${t.valLoss.toFixed(3)}). Forget returns to the exported weights.`
      : "This page uses the exported weights.";
    ui.download.disabled = ui.forget.disabled = !t || state.training;
  };
  const inputsEnabled = (on) => {
    for (const input of [ui.file, ui.paste, ui.budget]) input.disabled = !on;
    ui.start.disabled = !on || !state.ready;
  };
  const use = async (tuned) => {
    state.tuned = tuned;
    showWeights();
    await setWeights(tuned?.weights ?? null);
  };

  try {
    const saved = await loadSaved(key);
    if (saved) await use(saved);
  } catch (error) {
    ui.status.textContent = `Saved fine-tuned weights could not be read from this browser: ${error.message}`;
  }
  showWeights();
  setState("idle");

  const read = (source, name) => {
    state.ready = false;
    state.source = name;
    inputsEnabled(true);
    ui.text.textContent = `Reading ${name}…`;
    setState("reading");
    worker.postMessage({ type: "read", config, source });
  };
  ui.file.addEventListener("change", () => {
    const file = ui.file.files[0];
    if (file) read(file, file.name);
  });
  ui.card.addEventListener("dragover", (event) => {
    if (state.training || !event.dataTransfer?.types.includes("Files")) return;
    event.preventDefault();
    ui.card.classList.add("drop-target");
  });
  ui.card.addEventListener("dragleave", () => ui.card.classList.remove("drop-target"));
  ui.card.addEventListener("drop", (event) => {
    ui.card.classList.remove("drop-target");
    const file = event.dataTransfer?.files[0];
    if (!file || state.training) return;
    event.preventDefault();
    read(file, file.name);
  });
  let pasteTimer = 0;
  ui.paste.addEventListener("input", () => {
    clearTimeout(pasteTimer);
    pasteTimer = setTimeout(() => {
      if (ui.paste.value) read(ui.paste.value, "the pasted text");
    }, 400);
  });

  const progress = (m) => {
    ui.valLoss.textContent = m.valLoss.toFixed(3);
    ui.step.textContent = m.step.toLocaleString();
    ui.rate.textContent = m.tokensPerSecond ? Math.round(m.tokensPerSecond).toLocaleString() : "–";
    ui.eta.textContent = clock(m.eta);
    const valLoss = m.evaluated ? m.valLoss : null;
    state.points.push({ elapsed_s: m.elapsed, step: m.step, train_loss: m.loss, val_loss: valLoss });
    chart.setRuns([{ name: RUN_NAME, points: state.points }]);
  };

  const ended = () => {
    inputsEnabled(true);
    ui.stop.disabled = true;
    showWeights();
    setState("done");
  };
  const finish = async (m) => {
    state.training = false;
    const ran = `${m.stopped ? "Stopped" : "Done"}: ${m.steps.toLocaleString()} steps in ${clock(m.seconds)}`;
    if (m.steps === 0) {
      ui.status.textContent = "Stopped before the first step: the weights are unchanged.";
      ended();
      return;
    }
    ui.valLoss.textContent = m.valLoss.toFixed(3); // the kept weights'
    if (m.weights === null) {
      ui.status.textContent = `${ran}; the validation loss never fell below its ${m.firstValLoss.toFixed(3)} at the `
        + `start (${m.lastValLoss.toFixed(3)} at the end), so the weights are unchanged.`;
      ended();
      return;
    }
    const steps = (state.tuned?.steps ?? 0) + m.bestStep; // training continues from the weights the page uses
    const tuned = { weights: m.weights, saved: new Date().toISOString(), steps, valLoss: m.valLoss };
    let kept = "kept in this browser";
    try {
      await saveWeights(key, tuned);
    } catch (error) {
      tuned.saved = null;
      kept = `not kept in this browser (${error.message})`;
    }
    const earlier = m.bestStep < m.steps
      ? ` (step ${m.bestStep.toLocaleString()}'s weights, the best seen; the last gave ${m.lastValLoss.toFixed(3)})`
      : "";
    ui.status.textContent = `${ran}; validation loss ${m.firstValLoss.toFixed(3)} → ${m.valLoss.toFixed(3)}`
      + `${earlier}. Generate now uses the fine-tuned weights (${kept}).`;
    try {
      await use(tuned);
    } catch (error) {
      ui.status.textContent = `The fine-tuned weights could not be loaded for generation: ${error.message}`;
    }
    ended();
  };

  worker.onmessage = ({ data: m }) => {
    if (m.type === "reading") {
      ui.text.textContent = `Reading ${state.source}: ${formatBytes(m.loaded)} of ${formatBytes(m.total)}…`;
    } else if (m.type === "read") {
      state.ready = true;
      const what = m.unknown
        ? `${m.unknown.toLocaleString()} ${unit} not in the model's vocabulary (read as unknown)`
        : `every one of them is in the model's vocabulary`;
      ui.text.textContent = `${state.source}: ${m.tokens.toLocaleString()} ${unit} (${m.trainTokens.toLocaleString()} `
        + `to train on, the last ${m.valTokens.toLocaleString()} to check with); ${what}.`;
      inputsEnabled(true);
      setState("ready");
    } else if (m.type === "status") ui.status.textContent = m.text;
    else if (m.type === "progress") progress(m);
    else if (m.type === "done") finish(m).catch((error) => { ui.status.textContent = `Error: ${error.message}`; });
    else if (m.type === "error") {
      if (state.training) {
        state.training = false;
        ui.status.textContent = m.message;
        ui.stop.disabled = true;
        showWeights();
        setState("error");
      } else {
        state.ready = false;
        ui.text.textContent = m.message;
        setState("unreadable");
      }
      inputsEnabled(true);
    }
  };
  worker.onerror = (event) => {
    event.preventDefault();
    ui.status.textContent = `Training failed: ${event.message || "the training worker stopped"}`;
    state.training = false;
    inputsEnabled(true);
    ui.stop.disabled = true;
    setState("error");
  };

  ui.start.addEventListener("click", () => {
    if (!state.ready || state.training) return;
    state.training = true;
    state.points = [];
    chart.setRuns([{ name: RUN_NAME, points: [] }]);
    for (const el of [ui.valLoss, ui.rate, ui.eta]) el.textContent = "–";
    ui.step.textContent = "0";
    inputsEnabled(false);
    ui.stop.disabled = false;
    showWeights();
    setState("training");
    const budgetSeconds = Number(ui.budget.value) * 60;
    worker.postMessage({ type: "train", config, budgetSeconds, weights: state.tuned?.weights ?? null });
  });
  ui.stop.addEventListener("click", () => {
    ui.stop.disabled = true;
    ui.status.textContent = "Stopping…";
    worker.postMessage({ type: "stop" });
  });

  ui.download.addEventListener("click", async () => {
    if (!state.tuned) return;
    try {
      if (!config.train.files.run) throw new Error("this page was exported without train/run.json: export it again");
      const files = [config.train.files.run, "tokenizer.json", "prompts.json"];
      const [run, tokenizer, prompts] = await Promise.all(files.map(async (url) => {
        const response = await fetch(url);
        if (!response.ok) throw new Error(`${url}: ${response.status} ${response.statusText}`);
        return response.text();
      }));
      // what run/checkpoint.py reads back as a checkpoint: its config.json, tokenizer.json and prompts.json
      const metadata = {
        format: "textweaver-page-model", "config.json": run, "tokenizer.json": tokenizer, "prompts.json": prompts,
      };
      const blob = safetensorsBlob(config.train.parameters, state.tuned.weights, metadata);
      offerDownload(blob, downloadName(config.title));
    } catch (error) {
      ui.status.textContent = `The model could not be downloaded: ${error.message}`;
    }
  });
  ui.forget.addEventListener("click", async () => {
    try {
      await forgetSaved(key);
      await use(null);
      ui.status.textContent = "Forgotten: this browser no longer keeps the fine-tuned weights; "
        + "Generate uses the exported ones.";
    } catch (error) {
      ui.status.textContent = `Could not forget the fine-tuned weights: ${error.message}`;
    }
  });
}
