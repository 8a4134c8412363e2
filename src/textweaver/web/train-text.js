// The visitor's text for fine-tuning in the page (used by train.js, in its worker): a File read in 1 MB slices
// and decoded as strict UTF-8, or pasted text; encoded to token ids with the model's tokenizer (tokenizer.js;
// unknown characters become id 0, <unk>) and split into a training part and a validation tail.

const SLICE_BYTES = 1 << 20;

export class TextError extends Error {}

// The ids of `source` (a File/Blob, or a string): {ids, unknown, tokens}; onProgress(bytesRead, totalBytes)
// after each slice. A file that is not UTF-8 throws a TextError naming the byte offset of the first bad byte.
export async function encodeSource(source, tokenizer, onProgress = () => {}) {
  const ids = new IdBuilder(tokenizer.vocab.length);
  const splitter = new Splitter(tokenizer);
  if (typeof source === "string") {
    splitter.push(source, true, ids);
    return ids.result();
  }
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let tail = new Uint8Array(0); // the last bytes of the previous slice: a character may start there
  for (let start = 0; start < source.size; start += SLICE_BYTES) {
    const bytes = new Uint8Array(await source.slice(start, start + SLICE_BYTES).arrayBuffer());
    let text;
    try {
      text = decoder.decode(bytes, { stream: true });
    } catch {
      throw notUtf8(tail, bytes, start, false);
    }
    splitter.push(text, false, ids);
    tail = lastBytes(tail, bytes, 3);
    onProgress(Math.min(start + SLICE_BYTES, source.size), source.size);
  }
  let rest;
  try {
    rest = decoder.decode(); // throws if the file ends inside a character
  } catch {
    throw notUtf8(tail, new Uint8Array(0), source.size, true);
  }
  splitter.push(rest, true, ids);
  return ids.result();
}

// The last `n` bytes of `before` followed by `bytes`.
function lastBytes(before, bytes, n) {
  if (bytes.length >= n) return bytes.slice(bytes.length - n);
  const both = new Uint8Array(before.length + bytes.length);
  both.set(before);
  both.set(bytes, before.length);
  return both.slice(-n);
}

function notUtf8(tail, bytes, start, atEnd) {
  const region = lastBytes(tail, bytes, tail.length + bytes.length);
  let from = 0; // the tail's first character start (before it: the end of a character the decoder accepted)
  while (from < tail.length && (region[from] & 0xc0) === 0x80) from += 1;
  const at = firstInvalidUtf8(region, from, atEnd);
  const offset = at < 0 ? start : start - tail.length + at;
  const byte = at < 0 ? "" : ` (0x${region[at].toString(16).toUpperCase().padStart(2, "0")})`;
  return new TextError(
    `This file is not UTF-8 text: no valid character starts at byte offset ${offset}${byte}. `
    + "Save it as UTF-8 and choose it again.",
  );
}

// The index of the first byte that starts an invalid UTF-8 sequence in bytes[from:] (the WHATWG decoder's rules,
// as Python's UnicodeDecodeError.start reports it), or -1; a sequence cut off by the end is invalid if `atEnd`.
export function firstInvalidUtf8(bytes, from = 0, atEnd = true) {
  let i = from;
  while (i < bytes.length) {
    const b = bytes[i];
    let need, lo = 0x80, hi = 0xbf;
    if (b < 0x80) need = 0;
    else if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      if (b === 0xe0) lo = 0xa0;
      if (b === 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      if (b === 0xf0) lo = 0x90;
      if (b === 0xf4) hi = 0x8f;
    } else return i;
    for (let k = 1; k <= need; k++) {
      if (i + k >= bytes.length) return atEnd ? i : -1;
      const c = bytes[i + k];
      if (k === 1 ? c < lo || c > hi : (c & 0xc0) !== 0x80) return i;
    }
    i += need + 1;
  }
  return -1;
}

// Splits decoded text into tokens slice by slice: the last token of a slice is held back until the next one
// (a word, or a run of spaces, may go on there).
class Splitter {
  constructor(tokenizer) {
    this.tokenizer = tokenizer;
    this.carry = "";
  }

  push(text, final, ids) {
    const tokens = this.tokenizer.split(this.carry + this.tokenizer.preprocess(text));
    this.carry = final || tokens.length === 0 ? "" : tokens.pop();
    for (const token of tokens) ids.push(this.tokenizer.index.get(token) ?? 0);
  }
}

// A growing array of ids (16 bits where the vocabulary fits).
class IdBuilder {
  constructor(vocabSize) {
    this.Type = vocabSize <= 65536 ? Uint16Array : Int32Array;
    this.chunks = [];
    this.current = new this.Type(1 << 16);
    this.length = 0;
    this.unknown = 0;
  }

  push(id) {
    if (this.length === this.current.length) {
      this.chunks.push(this.current);
      this.current = new this.Type(this.current.length * 2);
      this.length = 0;
    }
    this.current[this.length++] = id;
    if (id === 0) this.unknown += 1;
  }

  result() {
    const parts = [...this.chunks, this.current.subarray(0, this.length)];
    const ids = new this.Type(parts.reduce((n, part) => n + part.length, 0));
    let at = 0;
    for (const part of parts) {
      ids.set(part, at);
      at += part.length;
    }
    return { ids, unknown: this.unknown, tokens: ids.length };
  }
}

// The training ids and the validation tail: the last `fraction` of the text, but at least one window per stream
// (batch x (context + 1) tokens and one more), and the training part must hold as many. Throws a TextError when
// the text is too short for both.
export function splitIds(ids, { batch, context, val_fraction: fraction }, unit) {
  const least = batch * (context + 1) + 1;
  if (ids.length < 2 * least) {
    throw new TextError(
      `Your text is too short: ${ids.length.toLocaleString("en-US")} ${unit}; fine-tuning needs at least `
      + `${(2 * least).toLocaleString("en-US")} (a part to train on and a part to check it with).`,
    );
  }
  const nVal = Math.min(ids.length - least, Math.max(Math.ceil(ids.length * fraction), least));
  return { train: ids.subarray(0, ids.length - nVal), val: ids.subarray(ids.length - nVal) };
}
