// The studio page (studio.html): texts in, trainings started and watched live, generation, downloads.
//
// Everything goes through the studio's JSON API (app/studio/app.py). Live training data arrives as server-sent
// events (one EventSource on /api/runs/NAME/events: it replays the run's history, then streams), and
// generated text as a streamed fetch; the page never polls. Choices, defaults and limits come from the
// server, declared there once: GET /api/studio (models, bases, budget, upload limit, weights) and the
// OpenAPI schema of a generation request (length, temperature ... with their bounds).
//
// One module per section of the page, each importing only those before it in this list: ../shared/util.js,
// common.js, texts.js, live.js, train.js, runs.js, generate.js, publish.js, then this one. Where an earlier
// section must update a later one (a started run shows in the run list), it is handed the later one's function.

import { $, api, formatBytes } from "../shared/util.js";
import { TRAINING, fillSelect, showErrors, state } from "./common.js";
import { setUpGenerate } from "./generate.js";
import { setUpLive } from "./live.js";
import { setUpPublish } from "./publish.js";
import { refreshRuns, select, showRun } from "./runs.js";
import { setUpText } from "./texts.js";
import { setUpTrain } from "./train.js";

async function main() {
  state.studio = await api("GET", "/api/studio");
  $("version").textContent = state.studio.version;
  $("max-upload").textContent = formatBytes(state.studio.max_upload, { binary: true });
  $("budget").value = state.studio.budget;
  fillSelect($("model"), state.studio.models.map((m) => ["", [[m, m]]]));
  fillSelect($("quantize"), state.studio.quantize.map((q) => ["", [[q, q]]]));

  await setUpText();
  setUpTrain(showRun);
  setUpLive();
  setUpPublish();
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
