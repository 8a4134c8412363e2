// Section 5, Publish: the selected run downloaded as its web page (a zip), its ONNX model, or its run report.

import { $, errorMessage, formatBytes } from "../shared/util.js";
import { el, runUrl, showErrors, state } from "./common.js";
import { updateRunControls } from "./live.js";

export function setUpPublish() {
  $("download-web").addEventListener("click", () => download("web"));
  $("download-onnx").addEventListener("click", () => download("onnx"));
  $("download-report").addEventListener("click", () => download("report"));
}

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
  const trainPanel = kind === "web" && $("train-panel").checked;
  if (trainPanel) query.set("train_panel", "true");
  const url = kind === "report" ? runUrl(name, "/report") : runUrl(name, `/download?${query}`);
  showErrors($("publish-error"), []);
  state.downloading = true;
  updateRunControls();
  $("publish-status").textContent = kind === "report" ? `Writing the report of ${name}…` : `Exporting ${name}… (${trainPanel ? "with the Train panel: up to a minute" : "a few seconds"})`;
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
      ? `Downloaded ${filename} (${formatBytes(blob.size, { binary: true })}): unzip it and serve the folder, e.g. python -m http.server.`
      : `Downloaded ${filename} (${formatBytes(blob.size, { binary: true })}).`;
  } catch (error) {
    $("publish-status").textContent = "";
    showErrors($("publish-error"), [error.message]);
  } finally {
    state.downloading = false;
    updateRunControls();
  }
}
