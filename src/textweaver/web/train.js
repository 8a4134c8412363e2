// Fine-tunes the exported model in the visitor's browser, in a Web Worker so the page stays responsive.
// train/step.onnx is one whole training step (forward, backward, clipping, AdamW: export/train_step.py) and
// train/loss.onnx its forward half; both take the weights as inputs, so this worker keeps weights, Adam's
// moments and the recurrent state in memory and feeds each step the last step's outputs.
//
// Batches are data/batches.py's StreamWindows (truncated backpropagation through time): the ids split into
// `batch` contiguous streams, window k of stream r starting at r*L + k*context, the state carried from one
// window to the next and reset to zeros when the streams wrap around. The rate is training/schedule.py's
// learning_rate with progress measured by time over the visitor's budget.
//
// Messages in:  {type: "read", config, source: File | string}, {type: "stop"},
//               {type: "train", config, budgetSeconds, weights: ArrayBuffer | null (null: the exported ones)}
// Messages out: {type: "reading", loaded, total}, {type: "read", tokens, unknown, trainTokens, valTokens},
//               {type: "status", text}, {type: "progress", step, elapsed, loss, tokensPerSecond, eta, valLoss},
//               {type: "done", weights: ArrayBuffer | null (null: no step beat the starting weights), steps,
//                bestStep (the step whose weights are kept), seconds, valLoss (theirs), lastValLoss, firstValLoss,
//                stopped},
//               {type: "error", message}

import * as ort from "./vendor/onnxruntime-web/ort.wasm.bundle.min.js";
import { Tokenizer } from "./tokenizer.js";
import { TextError, encodeSource, splitIds } from "./train-text.js";
import { widen } from "./train-store.js";

const RUNTIME = "vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm";
const EVAL_EVERY_S = 15; // a validation loss this often while training, and at the end
const MAX_VAL_WINDOWS = 16; // windows per stream of the validation tail an evaluation reads
const POST_EVERY_MS = 250; // progress to the page at most this often

let data = null; // {train, val}: the visitor's ids
let runtime = null; // {step, loss, weights}: the sessions and the exported weights (train/weights.f16, widened)
let stopRequested = false;

self.onmessage = async ({ data: message }) => {
  try {
    if (message.type === "read") await read(message);
    else if (message.type === "train") await train(message);
    else if (message.type === "stop") stopRequested = true;
  } catch (error) {
    const text = error instanceof TextError ? error.message : `Training failed: ${error?.message ?? error}`;
    self.postMessage({ type: "error", message: text.replace(/\s*\n\s*/g, " ") });
  }
};

async function read({ config, source }) {
  data = null;
  const tokenizer = new Tokenizer(await (await fetchOk("tokenizer.json")).json());
  const { ids, unknown } = await encodeSource(source, tokenizer, (loaded, total) => {
    self.postMessage({ type: "reading", loaded, total });
  });
  const unit = tokenizer.level === "char" ? "characters" : "tokens";
  data = splitIds(ids, config.train, unit);
  self.postMessage({
    type: "read", tokens: ids.length, unknown, trainTokens: data.train.length, valTokens: data.val.length,
  });
}

async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: ${response.status} ${response.statusText}`);
  return response;
}

async function bytesOf(url) {
  return new Uint8Array(await (await fetchOk(url)).arrayBuffer());
}

async function start(train) {
  if (runtime) return runtime;
  self.postMessage({ type: "status", text: "Downloading the training files…" });
  const [wasm, step, loss, weights] = await Promise.all(
    [RUNTIME, train.files.step, train.files.loss, train.files.weights].map(bytesOf),
  );
  ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, which a plain static server lacks
  ort.env.wasm.wasmBinary = wasm;
  const options = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
  runtime = {
    step: await ort.InferenceSession.create(step, options),
    loss: await ort.InferenceSession.create(loss, options),
    weights: widen(weights),
  };
  return runtime;
}

// training/schedule.py's learning_rate: linear warmup over the first steps, then a cosine from the peak to
// peak * min_ratio as the time budget is used up.
export function learningRate(step, progress, { peak, warmup_steps: warmup, min_ratio: minRatio }) {
  if (step < warmup) return (peak * (step + 1)) / warmup;
  const p = Math.min(Math.max(progress, 0), 1);
  const floor = peak * minRatio;
  return floor + 0.5 * (peak - floor) * (1 + Math.cos(Math.PI * p));
}

// data/batches.py's StreamWindows over `ids`: {ids, targets} int64 tensors (batch, context) and whether the
// state starts again from zeros.
class Windows {
  constructor(ids, batch, context) {
    Object.assign(this, { ids, batch, context, pos: 0 });
    this.streamLength = Math.floor((ids.length - 1) / batch);
    this.perPass = Math.floor((this.streamLength - 1) / context);
  }

  next() {
    const { ids, batch: B, context: T } = this;
    const reset = this.pos === 0;
    const x = new BigInt64Array(B * T);
    const y = new BigInt64Array(B * T);
    for (let r = 0; r < B; r++) {
      const base = r * this.streamLength + this.pos;
      for (let t = 0; t < T; t++) {
        x[r * T + t] = BigInt(ids[base + t]);
        y[r * T + t] = BigInt(ids[base + t + 1]);
      }
    }
    this.pos += T;
    if (this.pos + T + 1 > this.streamLength) this.pos = 0;
    return { ids: new ort.Tensor("int64", x, [B, T]), targets: new ort.Tensor("int64", y, [B, T]), reset };
  }
}

function zeroState(config) {
  const { n_layer: layers, n_embd: width } = config.model;
  const dims = [layers, config.train.batch, width];
  const zeros = () => new ort.Tensor("float32", new Float32Array(layers * config.train.batch * width), dims);
  return Object.fromEntries(config.train.state.map((name) => [name, zeros()]));
}

const scalar = (value) => new ort.Tensor("float32", Float32Array.of(value), []);

// The mean validation loss over (at most MAX_VAL_WINDOWS) consecutive windows of the tail, state carried.
async function validationLoss(session, config, params) {
  const windows = new Windows(data.val, config.train.batch, config.train.context);
  const count = Math.min(MAX_VAL_WINDOWS, windows.perPass);
  let state = zeroState(config);
  let total = 0;
  for (let k = 0; k < count; k++) {
    const { ids, targets } = windows.next();
    const out = await session.run({ ids, targets, ...params, ...state });
    total += out.loss.data[0];
    state = Object.fromEntries(config.train.state.map((name) => [name, out[`${name}_out`]]));
  }
  return total / count;
}

async function train({ config, budgetSeconds, weights }) {
  if (!data) throw new TextError("Choose a text first.");
  stopRequested = false;
  const { step: stepSession, loss: lossSession, weights: exported } = await start(config.train);
  const layout = config.train.parameters;
  const buffer = weights ?? exported;
  const size = layout.reduce((n, p) => Math.max(n, p.offset + p.bytes), 0);
  if (buffer.byteLength !== size) throw new Error(`the weights hold ${buffer.byteLength} bytes, not ${size}`);
  const params = {};
  const moments = {};
  for (const p of layout) {
    const values = new Float32Array(buffer.slice(p.offset, p.offset + p.bytes));
    params[`p.${p.name}`] = new ort.Tensor("float32", values, p.shape);
    for (const m of ["m", "v"]) {
      moments[`${m}.${p.name}`] = new ort.Tensor("float32", new Float32Array(values.length), p.shape); // Adam's, at zero
    }
  }

  self.postMessage({ type: "status", text: "Measuring the validation loss before training…" });
  const firstValLoss = await validationLoss(lossSession, config, params);
  let valLoss = firstValLoss;
  // the weights with the lowest validation loss so far, the starting ones first: what training keeps, as Python
  // keeps best/ (the tensors of a step are new objects each time, so holding them costs one set of weights)
  let best = { valLoss, step: 0, params: { ...params } };
  const evaluate = async () => {
    valLoss = await validationLoss(lossSession, config, params);
    if (valLoss < best.valLoss) best = { valLoss, step, params: { ...params } };
  };
  const { batch, context, schedule } = config.train;
  let [step, stepSeconds, lossSum, lossCount] = [0, 0, 0, 0];
  let started = performance.now();
  // the mean training loss since the last message, the speed of the steps alone, the time left
  const post = (extra = {}) => {
    const elapsed = (performance.now() - started) / 1000;
    self.postMessage({
      type: "progress", step, elapsed, loss: lossCount ? lossSum / lossCount : null, valLoss,
      tokensPerSecond: stepSeconds > 0 ? (step * batch * context) / stepSeconds : 0,
      eta: Math.max(0, budgetSeconds - elapsed), ...extra,
    });
    [lossSum, lossCount] = [0, 0];
  };
  post({ evaluated: true }); // the exported (or earlier fine-tuned) model's loss on the visitor's tail
  self.postMessage({ type: "status", text: "Training…" });

  const windows = new Windows(data.train, batch, context);
  let state = zeroState(config);
  started = performance.now();
  let lastPost = started;
  let lastEval = started;
  for (;;) {
    const now = performance.now();
    const elapsed = (now - started) / 1000;
    if (stopRequested || elapsed >= budgetSeconds) break;
    const { ids, targets, reset } = windows.next();
    if (reset) state = zeroState(config);
    const lr = learningRate(step, elapsed / budgetSeconds, schedule);
    const feeds = { ids, targets, lr: scalar(lr), step: scalar(step + 1), ...params, ...moments, ...state };
    const out = await stepSession.run(feeds); // step counts from 1: Adam's bias correction
    const loss = out.loss.data[0];
    if (!Number.isFinite(loss)) throw new Error("the loss is no longer a number; the exported weights are unchanged");
    for (const name of Object.keys(params)) params[name] = out[`${name}.out`];
    for (const name of Object.keys(moments)) moments[name] = out[`${name}.out`];
    state = Object.fromEntries(config.train.state.map((name) => [name, out[`${name}_out`]]));
    step += 1;
    stepSeconds += (performance.now() - now) / 1000;
    lossSum += loss;
    lossCount += 1;
    if (performance.now() - lastEval > EVAL_EVERY_S * 1000) {
      await evaluate();
      post({ evaluated: true });
      lastEval = lastPost = performance.now();
    } else if (performance.now() - lastPost > POST_EVERY_MS) {
      post();
      lastPost = performance.now();
    }
    await nextTask(); // the steps only await microtasks: let a waiting "stop" message in
  }
  const seconds = (performance.now() - started) / 1000;
  self.postMessage({ type: "status", text: "Measuring the validation loss…" });
  await evaluate();
  post({ evaluated: true, eta: 0 });

  // the best weights, in the float32 buffer's layout (each tensor at its offset); null: none beat the start
  const result = best.step ? new ArrayBuffer(size) : null;
  if (result) {
    for (const p of layout) new Float32Array(result, p.offset, p.bytes / 4).set(best.params[`p.${p.name}`].data);
  }
  self.postMessage({
    type: "done", weights: result, steps: step, bestStep: best.step, seconds, valLoss: best.valLoss,
    lastValLoss: valLoss, firstValLoss, stopped: stopRequested,
  }, result ? [result] : []);
}

// Resolves after the tasks queued so far (a MessageChannel round trip: no 4 ms timer clamp).
function nextTask() {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => resolve();
    channel.port2.postMessage(null);
  });
}
