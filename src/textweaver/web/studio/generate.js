// Section 4, Generate: text from the selected run, streamed as server-sent events
// (POST /api/runs/NAME/generate/stream), with the sampling controls the server's schema declares.

import { $, api, appendFollowing, copyText, readEscapes, streamEvents } from "../shared/util.js";
import { number, runUrl, state } from "./common.js";
import { updateRunControls } from "./live.js";

// The bounds and default of one property of a JSON schema (a nullable one is an anyOf).
function schemaOf(property) {
  const parts = property?.anyOf ?? [property ?? {}];
  const typed = parts.find((p) => p.type && p.type !== "null") ?? {};
  return { ...typed, default: property?.default };
}

// The controls' bounds and defaults from the generation request's schema (GET /openapi.json), and the buttons.
export async function setUpGenerate() {
  $("generate").addEventListener("click", generate);
  $("stop-generating").addEventListener("click", () => generation?.abort());
  $("copy").addEventListener("click", copyOutput);
  $("reset").addEventListener("click", () => {
    $("prompt").value = "";
    $("gen-status").textContent = "The next text starts from a random sentence of the run's text.";
  });

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
    let done = null;
    for await (const event of streamEvents(runUrl(name, "/generate/stream"), body, generation.signal)) {
      if (event.type === "error") throw new Error(event.data.message);
      if (event.type === "prompt") $("output-prompt").textContent = event.data.text;
      if (event.type === "message") {
        tokens += 1;
        appendFollowing(output, text, event.data.text);
        $("rate").textContent = number(Math.round(tokens / Math.max(seconds(), 1e-3)));
      }
      if (event.type === "done") {
        done = event.data;
        break;
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
  await copyText($("output-prompt").textContent + $("output-text").textContent);
  $("gen-status").textContent = "Copied to the clipboard.";
}
