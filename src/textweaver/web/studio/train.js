// Section 2, Train: the training form (texts ticked in section 1, budget, model, start from, run name) and its
// Start button. The live view of the run it starts is live.js.

import { $, api } from "../shared/util.js";
import { TRAINING, fillSelect, showErrors, state } from "./common.js";

// showRun(name): runs.js's (refresh the run list, show the run), which this module may not import.
export function setUpTrain(showRun) {
  $("init-from").addEventListener("change", fineTuneRule);
  $("start").addEventListener("click", () => startTraining(showRun));
}

// The "Start from" choices: auto, none, the base models and the runs that have finished with a model.
export function renderStartFrom() {
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

async function startTraining(showRun) {
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
    await showRun(run.name);
  } catch (error) {
    showErrors(errors, [error.message]);
  } finally {
    $("start").disabled = false;
  }
}
