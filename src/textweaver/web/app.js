// The page: one UI for both back ends, chosen by config.json's "mode":
//   "onnx"   - the exported model runs in this browser (worker.js with onnxruntime-web);
//   "server" - `textweaver serve` runs the Python model behind the JSON API (/api/...); its config.json
//              also carries the server's "limits", which replace sampling.js's own.
// A static export with the training files (config.json's "train") also shows the Train panel (train-panel.js).

import { LIMITS } from "./sampling.js";
import { $, api, appendFollowing, copyText, formatBytes, readEscapes, streamEvents } from "./shared/util.js";

const ui = {
  load: $("load"), progress: $("load-progress"), loadStatus: $("load-status"),
  prompt: $("prompt"), reset: $("reset"), length: $("length"), temperature: $("temperature"), greedy: $("greedy"),
  topK: $("top-k"), topP: $("top-p"), seed: $("seed"),
  repetitionPenalty: $("repetition-penalty"), stopString: $("stop-string"),
  generate: $("generate"), stop: $("stop"), copy: $("copy"), rate: $("rate"), status: $("status"),
  outputPrompt: $("output-prompt"), outputText: $("output-text"), output: $("output"),
};

// Runs the model in a Web Worker, so generating never blocks the page.
class BrowserBackend {
  constructor(config) {
    this.config = config;
    this.worker = new Worker("worker.js", { type: "module" });
    this.worker.onmessage = ({ data }) => this.onMessage?.(data);
    this.worker.onerror = (event) => this.onMessage?.({ type: "error", message: event.message || "worker failed" });
    this.prompts = api("GET", "prompts.json").catch(() => []);
  }

  async randomPrompt() {
    const prompts = await this.prompts;
    return prompts.length ? prompts[Math.floor(Math.random() * prompts.length)] : "\n";
  }

  load(onProgress) {
    return this.call({ type: "load", config: this.config }, (m) => m.type === "progress" && onProgress(m.loaded, m.total), "loaded");
  }

  generate(params, onText) {
    return this.call({ type: "generate", ...params }, (m) => m.type === "text" && onText(m.text, m.tokens, m.seconds), "done");
  }

  // Generate with fine-tuned weights (an ArrayBuffer in weights.bin's layout, train-store.js), or again with the
  // exported ones (null).
  useWeights(weights) {
    return this.call({ type: "weights", config: this.config, weights }, () => {}, "weights");
  }

  stop() {
    this.worker.postMessage({ type: "stop" });
  }

  // One call at a time: a call waits for the one before it to end (new weights wait for a generation).
  call(message, onUpdate, finalType) {
    const run = () => new Promise((resolve, reject) => {
      this.onMessage = (m) => {
        if (m.type === finalType) resolve(m);
        else if (m.type === "error") reject(new Error(m.message));
        else onUpdate(m);
      };
      this.worker.postMessage(message);
    });
    this.queue = (this.queue ?? Promise.resolve()).then(run, run);
    return this.queue;
  }
}

// Talks to `textweaver serve`: text streams back as server-sent events.
class ServerBackend {
  async randomPrompt() {
    return (await api("GET", "api/prompt")).prompt;
  }

  async load(onProgress) {
    onProgress(0, 1);
    const info = await api("GET", "api/info");
    onProgress(1, 1);
    return { info };
  }

  async generate(params, onText) {
    this.abort = new AbortController();
    const body = {
      prompt: params.prompt, length: params.length, temperature: params.temperature, top_k: params.topK,
      top_p: params.topP, repetition_penalty: params.repetitionPenalty, stop: params.stop, seed: params.seed,
    };
    const start = performance.now();
    let tokens = 0;
    try {
      for await (const event of streamEvents("api/generate/stream", body, this.abort.signal)) {
        if (event.type === "error") throw new Error(event.data.message);
        if (event.type === "done") return { ...event.data, stopped: false };
        if (event.type === "message") {
          tokens += 1;
          onText(event.data.text, tokens, (performance.now() - start) / 1000);
        }
      }
      return { tokens, seconds: (performance.now() - start) / 1000, stopped: false };
    } catch (error) {
      if (error.name === "AbortError") return { tokens, seconds: (performance.now() - start) / 1000, stopped: true };
      throw error;
    }
  }

  stop() {
    this.abort?.abort();
  }
}

function setBusy(busy) {
  ui.generate.disabled = busy;
  ui.stop.disabled = !busy;
  ui.copy.disabled = busy || !(ui.outputPrompt.textContent + ui.outputText.textContent);
}

async function main() {
  const config = await api("GET", "config.json");
  document.title = `${config.title} · textweaver`;
  $("title").textContent = config.title;
  $("description").textContent = config.description;
  $("length-unit").textContent = config.level === "char" ? "characters" : "tokens";
  ui.length.max = String(config.max_length ?? 2000);
  const limits = { ...LIMITS, ...config.limits };
  ui.repetitionPenalty.max = String(limits.max_repetition_penalty);
  $("repetition-window").textContent = String(limits.repetition_window);
  if (limits.max_temperature) ui.temperature.max = String(limits.max_temperature);
  if (limits.max_prompt_chars) ui.prompt.maxLength = limits.max_prompt_chars;
  if (limits.max_stop_chars) ui.stopString.maxLength = limits.max_stop_chars;
  $("footer").textContent = config.mode === "onnx"
    ? "The model runs in this browser (onnxruntime-web, WebAssembly). The page makes no request outside its own origin and works offline once loaded."
    : "The model runs on this textweaver server. The page makes no request outside its own origin.";

  const backend = config.mode === "onnx" ? new BrowserBackend(config) : new ServerBackend();
  let loaded = false;
  let tuned = null; // fine-tuned weights from the Train panel: Generate uses them once the model is loaded
  let started = false; // the worker has the model: new weights go to it at once (after any running call)
  if (config.mode === "onnx" && config.train) {
    const setWeights = async (weights) => {
      tuned = weights;
      if (started) await backend.useWeights(weights);
    };
    import("./train-panel.js").then(({ setUpTraining }) => setUpTraining(config, { setWeights })).catch((error) => {
      $("train-card").hidden = false;
      $("train-status").textContent = `Training in this page could not start: ${error.message}`;
    });
  }

  for (const [input, output, digits] of [[ui.length, "length-value", 0], [ui.temperature, "temperature-value", 2], [ui.topP, "top-p-value", 2]]) {
    const show = () => { $(output).textContent = Number(input.value).toFixed(digits); };
    input.addEventListener("input", show);
    show();
  }
  ui.greedy.addEventListener("change", () => {
    ui.temperature.disabled = ui.greedy.checked;
    $("temperature-value").textContent = ui.greedy.checked ? "0 (greedy)" : Number(ui.temperature.value).toFixed(2);
  });

  const resetPrompt = async () => {
    const current = ui.prompt.value;
    let next = current;
    for (let i = 0; i < 5 && next === current; i++) next = await backend.randomPrompt();
    ui.prompt.value = next;
  };
  ui.reset.addEventListener("click", () => resetPrompt().catch((e) => { ui.status.textContent = `Error: ${e.message}`; }));
  resetPrompt().catch((e) => { ui.status.textContent = `Error: ${e.message}`; });

  ui.load.addEventListener("click", async () => {
    ui.load.disabled = true;
    ui.loadStatus.textContent = "Loading…";
    const start = performance.now();
    try {
      const result = await backend.load((done, total) => {
        ui.progress.value = total ? done / total : 0;
        if (total > 1) ui.loadStatus.textContent = `Downloading ${formatBytes(done)} of ${formatBytes(total)}…`;
      });
      started = true;
      if (tuned) await backend.useWeights(tuned);
      ui.progress.value = 1;
      const seconds = ((performance.now() - start) / 1000).toFixed(1);
      ui.loadStatus.textContent = result.bytes
        ? `Ready: ${formatBytes(result.bytes)} loaded in ${seconds} s (model ${formatBytes(result.modelBytes)}).`
          + (tuned ? " Generate uses your fine-tuned weights." : "")
        : `Ready: connected to the server in ${seconds} s (${result.info.model}, ${result.info.parameters.toLocaleString()} parameters).`;
      loaded = true;
      document.body.dataset.loaded = "true";
      setBusy(false);
    } catch (error) {
      ui.loadStatus.textContent = `Could not load the model: ${error.message}`;
      ui.load.disabled = false;
    }
  });

  ui.generate.addEventListener("click", async () => {
    if (!loaded) return;
    if (!ui.prompt.value) await resetPrompt();
    const topK = Number.parseInt(ui.topK.value, 10);
    const topP = Number(ui.topP.value);
    const seed = ui.seed.value === "" ? null : Number.parseInt(ui.seed.value, 10);
    const penalty = ui.repetitionPenalty.value === "" ? 1 : Number(ui.repetitionPenalty.value);
    const [minPenalty, maxPenalty] = [limits.min_repetition_penalty, limits.max_repetition_penalty];
    if (!(penalty >= minPenalty && penalty <= maxPenalty)) {
      ui.status.textContent = `Error: the repetition penalty must be between ${minPenalty} and ${maxPenalty} (1 = off).`;
      return;
    }
    const params = {
      prompt: ui.prompt.value, length: Number(ui.length.value),
      temperature: ui.greedy.checked ? 0 : Number(ui.temperature.value),
      topK: topK > 0 ? topK : null, topP: topP < 1 ? topP : null, repetitionPenalty: penalty,
      stop: readEscapes(ui.stopString.value) || null, seed,
    };
    ui.outputPrompt.textContent = params.prompt;
    ui.outputText.textContent = "";
    const text = document.createTextNode("");
    ui.outputText.append(text);
    ui.rate.textContent = "–";
    ui.status.textContent = "Generating…";
    document.body.dataset.generating = "true";
    setBusy(true);
    try {
      const result = await backend.generate(params, (piece, tokens, seconds) => {
        appendFollowing(ui.output, text, piece);
        if (seconds > 0) ui.rate.textContent = Math.round(tokens / seconds).toLocaleString();
      });
      if (result.seconds > 0) ui.rate.textContent = Math.round(result.tokens / result.seconds).toLocaleString();
      const atStop = params.stop !== null && !result.stopped && result.tokens < params.length;
      ui.status.textContent = `${result.stopped ? "Stopped" : "Done"}: ${result.tokens} tokens in `
        + `${result.seconds.toFixed(2)} s${atStop ? ", ended at the stop string" : ""}.`;
    } catch (error) {
      ui.status.textContent = `Error: ${error.message}`;
    } finally {
      document.body.dataset.generating = "false";
      setBusy(false);
    }
  });

  ui.stop.addEventListener("click", () => backend.stop());

  ui.copy.addEventListener("click", async () => {
    await copyText(ui.outputPrompt.textContent + ui.outputText.textContent);
    ui.status.textContent = "Copied to the clipboard.";
  });
}

main().catch((error) => {
  ui.loadStatus.textContent = `The page could not start: ${error.message}`;
});
