// What the Train panel (train-panel.js) keeps and gives away: fine-tuned weights saved in this browser's
// IndexedDB, keyed by the page (its address and its model), and the .safetensors file "Download model" writes.
//
// The weights are one ArrayBuffer in train/weights.bin's layout: each trainable tensor, float32 little-endian,
// at its config.json "parameters" offset.

const DATABASE = "textweaver-page";
const STORE = "fine-tuned";

// One key per page and model: the same page exported again with another model does not pick up old weights.
export function pageKey(config) {
  const path = location.pathname.replace(/index\.html$/, "");
  const shapes = config.train.parameters.map((p) => [p.name, p.shape]);
  return JSON.stringify([location.origin + path, config.model, shapes]);
}

function openDatabase() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DATABASE, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error ?? new Error("IndexedDB refused"));
    request.onblocked = () => reject(new Error("IndexedDB is blocked by another tab of this page"));
  });
}

// Runs `action(store)` in one transaction; resolves with the request's result once the transaction is done.
async function transaction(mode, action) {
  const db = await openDatabase();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = action(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error ?? new Error("IndexedDB transaction failed"));
      tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
    });
  } finally {
    db.close();
  }
}

// {weights, saved, steps, valLoss, firstValLoss} or null.
export async function loadSaved(key) {
  const record = await transaction("readonly", (store) => store.get(key));
  return record && record.weights instanceof ArrayBuffer ? record : null;
}

export function saveWeights(key, record) {
  return transaction("readwrite", (store) => store.put(record, key));
}

export function forgetSaved(key) {
  return transaction("readwrite", (store) => store.delete(key));
}

// The weights as a .safetensors file: an 8-byte little-endian header length, the JSON header (padded with
// spaces to a multiple of 8 bytes), then the tensors' float32 data in layout order. `metadata`: strings only.
export function safetensorsBlob(layout, weights, metadata) {
  const header = { __metadata__: metadata };
  for (const p of layout) header[p.name] = { dtype: "F32", shape: p.shape, data_offsets: [p.offset, p.offset + p.bytes] };
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = new Uint8Array(Math.ceil(json.length / 8) * 8).fill(0x20);
  padded.set(json);
  const length = new DataView(new ArrayBuffer(8));
  length.setBigUint64(0, BigInt(padded.length), true);
  return new Blob([length.buffer, padded, weights], { type: "application/octet-stream" });
}

// "<title>-fine-tuned.safetensors" with only letters, digits, '.', '_' and '-' from the title.
export function downloadName(title) {
  const stem = String(title ?? "").normalize("NFC").replace(/[^\p{L}\p{N}._-]+/gu, "-").replace(/^[-.]+|-+$/g, "");
  return `${stem.slice(0, 80) || "model"}-fine-tuned.safetensors`;
}

// Saves `blob` as a download named `name`.
export function offerDownload(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = Object.assign(document.createElement("a"), { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
