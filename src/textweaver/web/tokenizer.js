// Text <-> token ids in the browser, mirroring src/textweaver/data/tokenizer.py. Id 0 is <unk>.

// Python's \w+|[^\w\s]|\s+ with Unicode \w (letters, numbers, underscore).
const WORD = /[\p{L}\p{N}_]+|[^\p{L}\p{N}_\s]|\s+/gu;
export const UNK_TEXT = "\ufffd";

export class Tokenizer {
  constructor({ level, vocab, lowercase = false, normalize = null }) {
    this.level = level;
    this.vocab = vocab;
    this.lowercase = lowercase;
    this.normalize = normalize;
    this.index = new Map(vocab.map((token, id) => [token, id]));
  }

  // The opt-in normalisation the corpus had: Unicode form first, then lower case.
  preprocess(text) {
    if (this.normalize) text = text.normalize(this.normalize);
    return this.lowercase ? text.toLowerCase() : text;
  }

  // Characters are code points (Array.from splits surrogate pairs correctly, like Python's list(text)).
  split(text) {
    return this.level === "char" ? Array.from(text) : (text.match(WORD) ?? []);
  }

  encode(text) {
    return this.split(this.preprocess(text)).map((token) => this.index.get(token) ?? 0);
  }

  token(id) {
    return id === 0 ? UNK_TEXT : this.vocab[id];
  }
}
