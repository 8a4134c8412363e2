// What the Train panel (train-panel.js) keeps and gives away: fine-tuned weights saved in this browser's
// IndexedDB, keyed by the page (its address and its model), and the .safetensors file "Download model" writes.
//
// The weights are one ArrayBuffer in weights.bin's layout: each trainable tensor, float32 little-endian, at its
// config.json "parameters" offset. The export ships them as train/weights.f16, float16 (half the download):
// widen() makes that buffer of it.

const DATABASE = "textweaver-page";
const STORE = "fine-tuned";

// float16 bits -> float32 value, for all 65,536 (subnormals, infinities and NaN included): made once
let halfValues = null;

function halfTable() {
  if (halfValues) return halfValues;
  halfValues = new Float32Array(65536);
  for (let bits = 0; bits < 65536; bits++) {
    const exponent = (bits >> 10) & 31;
    const fraction = bits & 1023;
    let value;
    if (exponent === 0) value = fraction * 2 ** -24;
    else if (exponent === 31) value = fraction ? NaN : Infinity;
    else value = (1 + fraction / 1024) * 2 ** (exponent - 15);
    halfValues[bits] = bits & 0x8000 ? -value : value;
  }
  return halfValues;
}

// train/weights.f16's bytes (float16, little-endian) as the float32 ArrayBuffer the step and generate.onnx read.
export function widen(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const table = halfTable();
  const values = new Float32Array(bytes.byteLength / 2);
  for (let i = 0; i < values.length; i++) values[i] = table[view.getUint16(2 * i, true)];
  return values.buffer;
}

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
