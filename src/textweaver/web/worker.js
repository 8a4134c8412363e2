// Runs the exported model (model.onnx, one token per step: see src/textweaver/export/onnx.py) with
// onnxruntime-web in a Web Worker, so the page stays responsive while it generates.
//
// Messages in:  {type: "load", config}, {type: "stop"},
//               {type: "generate", prompt, length, temperature, topK, topP, repetitionPenalty, stop, seed},
//               {type: "weights", config, weights: ArrayBuffer | null} (generate with fine-tuned weights, in
//               weights.bin's layout (train-store.js), through train/generate.onnx; null: model.onnx's again)
// Messages out: {type: "progress", loaded, total}, {type: "loaded", seconds, bytes},
//               {type: "text", text, tokens, seconds}, {type: "done", tokens, seconds, stopped},
//               {type: "weights", tuned}, {type: "error", message}

import * as ort from "./vendor/onnxruntime-web/ort.wasm.bundle.min.js";
import { Tokenizer } from "./tokenizer.js";
import { LIMITS, sample, seededRandom } from "./sampling.js";

const RUNTIME = "vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm";
const FLUSH_MS = 40; // send text to the page at most this often

let stepper = null;
let tokenizer = null;
let exported = null; // model.onnx's session
let tuned = null; // train/generate.onnx's session over fine-tuned weights, or null
let generateGraph = null; // train/generate.onnx's bytes
let stopRequested = false;

self.onmessage = async ({ data }) => {
  try {
    if (data.type === "load") await load(data.config);
    else if (data.type === "generate") await generate(data);
    else if (data.type === "weights") await useWeights(data);
    else if (data.type === "stop") stopRequested = true;
  } catch (error) {
    self.postMessage({ type: "error", message: String(error?.message ?? error) });
  }
};

async function load(config) {
  const start = performance.now();
  const files = [config.model.file, RUNTIME];
  const received = files.map(() => 0);
  const sizes = files.map(() => 0);
  const report = () => {
    const sum = (xs) => xs.reduce((a, b) => a + b, 0);
    self.postMessage({ type: "progress", loaded: sum(received), total: sum(sizes) });
  };
  const [model, wasm] = await Promise.all(
    files.map((url, i) =>
      download(url, (bytes, size) => {
        [received[i], sizes[i]] = [bytes, size];
        report();
      }),
    ),
  );
  tokenizer = new Tokenizer(await (await fetch("tokenizer.json")).json());
  ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, which a plain static server lacks
  ort.env.wasm.wasmBinary = wasm; // fetched above, so the download shows progress and needs no MIME type
  const session = await ort.InferenceSession.create(model, {
    executionProviders: ["wasm"],
    graphOptimizationLevel: "all",
  });
  exported = session;
  stepper = new Stepper(session, config.model);
  const bytes = model.length + wasm.length;
  self.postMessage({ type: "loaded", seconds: (performance.now() - start) / 1000, bytes, modelBytes: model.length });
}

// generate.onnx keeps its weights outside the graph (ONNX external data, named config.train.buffer): a new
// session over the new weights replaces the generating one.
async function useWeights({ config, weights }) {
  if (!exported) throw new Error("load the model first");
  const previous = tuned;
  tuned = null;
  if (weights) {
    generateGraph ??= await download(config.train.files.generate, () => {});
    tuned = await ort.InferenceSession.create(generateGraph, {
      executionProviders: ["wasm"],
      graphOptimizationLevel: "all",
      externalData: [{ path: config.train.buffer, data: new Uint8Array(weights) }],
    });
  }
  stepper = new Stepper(tuned ?? exported, config.model);
  await previous?.release();
  self.postMessage({ type: "weights", tuned: tuned !== null });
}

// The file's bytes; onProgress(received, size) after every chunk.
async function download(url, onProgress) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: ${response.status} ${response.statusText}`);
  const size = Number(response.headers.get("content-length")) || 0;
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    onProgress(received, Math.max(size, received));
  }
  const bytes = new Uint8Array(received);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return bytes;
}

async function generate({ prompt, length, temperature, topK, topP, repetitionPenalty = 1, stop = null, seed }) {
  if (!stepper) throw new Error("load the model first");
  stopRequested = false;
  const ids = tokenizer.encode(prompt);
  if (ids.length === 0) throw new Error("the prompt is empty: type some text or press reset input");
  const random = seededRandom(seed ?? Math.floor(Math.random() * 2 ** 52));
  const options = { temperature, topK, topP, repetitionPenalty };
  const recent = ids.slice(-LIMITS.repetition_window); // what the penalty sees: the prompt, then the text
  const watch = new StopWatch(stop);
  let logits = await stepper.prefill(ids);
  const start = performance.now();
  let pending = "";
  let lastFlush = start - FLUSH_MS; // the first token is shown at once, and a stop can come in after it
  let tokens = 0;
  const flush = () => {
    const seconds = (performance.now() - start) / 1000;
    self.postMessage({ type: "text", text: pending, tokens, seconds });
    pending = "";
    lastFlush = performance.now();
  };
  while (tokens < length && !stopRequested && !watch.done) {
    const token = sample(logits, options, random, recent);
    recent.push(token);
    if (recent.length > LIMITS.repetition_window) recent.shift();
    pending += watch.feed(tokenizer.token(token));
    tokens += 1;
    if (tokens < length && !watch.done) logits = await stepper.push(token);
    if (performance.now() - lastFlush > FLUSH_MS) {
      flush();
      await nextTask(); // the steps only await microtasks: let a waiting "stop" message in
    }
  }
  pending += watch.flush();
  flush();
  const seconds = (performance.now() - start) / 1000;
  self.postMessage({ type: "done", tokens, seconds, stopped: stopRequested });
}

// Cuts the text at the stop string, holding back text that may be its beginning (generation/generator.py's _StopWatch).
class StopWatch {
  constructor(stop) {
    this.stop = stop || null;
    this.pending = "";
    this.done = false;
  }

  feed(piece) {
    if (this.done) return "";
    if (this.stop === null) return piece;
    this.pending += piece;
    const at = this.pending.indexOf(this.stop);
    if (at >= 0) {
      this.done = true;
      const out = this.pending.slice(0, at);
      this.pending = "";
      return out;
    }
    let hold = Math.min(this.stop.length - 1, this.pending.length);
    while (hold > 0 && !this.stop.startsWith(this.pending.slice(-hold))) hold -= 1;
    const out = this.pending.slice(0, this.pending.length - hold);
    this.pending = this.pending.slice(out.length);
    return out;
  }

  flush() {
    const out = this.done ? "" : this.pending;
    this.pending = "";
    return out;
  }
}

// Resolves after the tasks queued so far (a MessageChannel round trip: no 4 ms timer clamp).
function nextTask() {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => resolve();
    channel.port2.postMessage(null);
  });
}

// Carries the recurrent state or the key/value cache between steps, like generation/generator.py.
class Stepper {
  constructor(session, model) {
    this.session = session;
    this.model = model;
    this.transformer = model.kind === "transformer";
    this.keep = Math.max(1, Math.floor(model.context * model.slide_keep));
    this.history = [];
    this.reset();
  }

  reset() {
    const m = this.model;
    const zeros = (dims) => new ort.Tensor("float32", new Float32Array(dims.reduce((a, b) => a * b, 1)), dims);
    if (this.transformer) {
      this.state = { past_kv: zeros([m.n_layer, 2, 1, m.n_head, 0, m.n_embd / m.n_head]) };
    } else {
      this.state = { h: zeros([m.n_layer, 1, m.n_embd]) };
      if (m.kind === "lstm") this.state.c = zeros([m.n_layer, 1, m.n_embd]);
    }
    this.cached = 0;
  }

  async step(token) {
    const tokens = new ort.Tensor("int64", BigInt64Array.of(BigInt(token)), [1, 1]);
    const out = await this.session.run({ tokens, ...this.state });
    if (this.transformer) this.state = { past_kv: out.present_kv };
    else this.state = this.model.kind === "lstm" ? { h: out.h_out, c: out.c_out } : { h: out.h_out };
    this.cached += 1;
    return out.logits.data; // Float32Array (V,)
  }

  // Reads a prompt; a transformer reads only its last `context` tokens.
  async prefill(ids) {
    this.reset();
    const start = this.transformer ? Math.max(0, ids.length - this.model.context) : 0;
    this.history = ids.slice(-this.model.context);
    let logits = null;
    for (const id of ids.slice(start)) logits = await this.step(id);
    return logits;
  }

  // One more token; a full transformer cache is rebuilt from the last 3/4 of the context.
  async push(token) {
    this.history.push(token);
    if (this.history.length > 2 * this.model.context) this.history = this.history.slice(-this.model.context);
    if (this.transformer && this.cached + 1 > this.model.context) {
      this.reset();
      let logits = null;
      for (const id of this.history.slice(-this.keep)) logits = await this.step(id);
      return logits;
    }
    return this.step(token);
  }
}
