// What every section of the studio shares: the page's state, the run statuses, and small DOM and number helpers.

export const TRAINING = new Set(["queued", "running"]); // a run in these has a live event stream and a Stop button
export const RESUMABLE = new Set(["stopped", "interrupted", "failed", "done"]);
export const STATUS_WORDS = {
  created: "Created", queued: "Queued", running: "Training", done: "Done", stopped: "Stopped",
  failed: "Failed", interrupted: "Interrupted", deleted: "Deleted",
};

export const state = {
  studio: null, // GET /api/studio
  texts: [], // GET /api/texts
  chosen: new Set(), // text ids ticked for training
  runs: [], // GET /api/runs, newest first
  queue: [],
  selected: null, // the run in the live view, Generate and Publish
  compared: new Set(),
  genDefaults: {}, // property -> default, from the generation request's schema
  builtinTicked: false, // the reader ticked a built-in text themselves: an upload then leaves it ticked
  downloading: false, // an export or report is on its way: the download buttons wait
};

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

// A <select>'s options from [[group label or "", [[value, text], ...]], ...]; the current choice stays if offered.
export function fillSelect(select, groups) {
  const current = select.value;
  select.replaceChildren(...groups.map(([label, options]) => {
    const nodes = options.map(([value, text]) => el("option", { value, text }));
    return label ? el("optgroup", { label }, ...nodes) : nodes[0];
  }));
  if ([...select.options].some((o) => o.value === current)) select.value = current;
}

export function showErrors(box, messages) {
  box.replaceChildren(...messages.map((m) => el("p", { text: m })));
}

export const runUrl = (name, rest = "") => `/api/runs/${encodeURIComponent(name)}${rest}`;
export const number = (n) => (n == null ? "–" : n.toLocaleString("en-US"));
export const finite = (v) => typeof v === "number" && Number.isFinite(v);

// 75 -> "1:15", 3725 -> "1:02:05"
export function clock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const pad = (n) => String(n).padStart(2, "0");
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return (h ? `${h}:${pad(m)}` : String(m)) + `:${pad(s % 60)}`;
}
