// Section 1, Text: the corpus files uploaded, dropped or pasted, and which of them (ticked) a training uses.

import { $, api, errorMessage, formatBytes } from "../shared/util.js";
import { el, number, showErrors, state } from "./common.js";

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
        `script ${text.script}`, `read as ${text.encoding}`, formatBytes(text.bytes, { binary: true }),
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
      errors.push(`${name}: larger than the studio's upload limit of ${formatBytes(state.studio.max_upload, { binary: true })} (textweaver studio --max-upload)`);
      continue;
    }
    $("text-status").textContent = `Uploading ${name} (${formatBytes(body.size, { binary: true })})…`;
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

// The upload, drop and paste controls; then the texts, all uploaded ones ticked (else the first built-in one).
export async function setUpText() {
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

  await refreshTexts();
  for (const text of state.texts) state.chosen.add(text.id);
  if (!state.chosen.size) state.chosen.add(state.studio.builtin_texts[0]);
  renderTexts();
  $("texts").addEventListener("change", (event) => {
    if (state.studio.builtin_texts.some((id) => event.target.id === `use-${id}`)) state.builtinTicked = event.target.checked;
  });
}
