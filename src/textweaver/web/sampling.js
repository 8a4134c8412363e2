// Choosing the next token, mirroring src/textweaver/generation/sampling.py: temperature (0 = greedy), top-k,
// top-p, repetition penalty. Id 0 (<unk>) is never chosen, so output only holds vocabulary tokens.

// generation/sampling.py's bounds of the repetition penalty (beyond them the logits overflow) and its window.
export const LIMITS = { min_repetition_penalty: 1e-6, max_repetition_penalty: 1e6, repetition_window: 64 };

// The logits as sampling._penalised leaves them: <unk> removed, and the tokens in `recent` (the last
// LIMITS.repetition_window ids, prompt included) made less likely: a positive logit divided by the
// penalty, a negative one multiplied by it.
export function penalised(logits, repetitionPenalty = 1, recent = []) {
  const out = Float64Array.from(logits);
  if (out.length > 1) out[0] = -Infinity;
  if (repetitionPenalty !== 1) {
    for (const id of new Set(recent)) out[id] = out[id] > 0 ? out[id] / repetitionPenalty : out[id] * repetitionPenalty;
  }
  return out;
}

// The weights sampling draws from (rows need not sum to 1), as sampling.probabilities computes them.
export function probabilities(logits, { temperature, topK = null, topP = null, repetitionPenalty = 1 }, recent = []) {
  const V = logits.length;
  const scaled = penalised(logits, repetitionPenalty, recent).map((x) => x / temperature);
  if (topK !== null && topK < V) {
    const kth = Array.from(scaled).sort((a, b) => b - a)[topK - 1];
    for (let i = 0; i < V; i++) if (scaled[i] < kth) scaled[i] = -Infinity;
  }
  let max = -Infinity;
  for (const x of scaled) if (x > max) max = x;
  const probs = new Float64Array(V);
  let sum = 0;
  for (let i = 0; i < V; i++) sum += probs[i] = Math.exp(scaled[i] - max);
  for (let i = 0; i < V; i++) probs[i] /= sum;
  if (topP !== null && topP < 1) {
    const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a]);
    let before = 0; // mass of the tokens ranked above
    for (const i of order) {
      const p = probs[i];
      if (before >= topP) probs[i] = 0;
      before += p;
    }
  }
  return probs;
}

// One token id drawn from logits; random() returns a float in [0, 1); recent: the ids the
// repetition penalty looks at.
export function sample(logits, options, random, recent = []) {
  if (options.temperature === 0) {
    const scores = penalised(logits, options.repetitionPenalty, recent);
    let best = scores.length > 1 ? 1 : 0;
    for (let i = best + 1; i < scores.length; i++) if (scores[i] > scores[best]) best = i;
    return best;
  }
  const probs = probabilities(logits, options, recent);
  let total = 0;
  for (const p of probs) total += p;
  let r = random() * total;
  let last = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] <= 0) continue;
    last = i;
    r -= probs[i];
    if (r < 0) return i;
  }
  return last; // rounding left a sliver: the last allowed token
}

// A small seeded generator (mulberry32 over a 32-bit hash of the seed): the same seed repeats a text.
export function seededRandom(seed) {
  let a = Number(BigInt.asUintN(32, BigInt(seed) ^ (BigInt(seed) >> 32n))) ^ 0x9e3779b9;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
