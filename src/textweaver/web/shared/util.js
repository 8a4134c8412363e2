// The helpers the page (app.js) and the studio (studio/*.js) both use: element lookup, JSON calls and their
// one-line errors, the server-sent events of a streamed generation, the output box, the stop string's escapes,
// sizes, copying.
// Nothing here touches one UI's elements; each caller passes what it shows.

export const $ = (id) => document.getElementById(id);

// The server's one-line error (its "message"), else what FastAPI said, else the HTTP status.
export async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.message ?? JSON.stringify(body.detail ?? body);
  } catch {
    return `${response.url}: ${response.status} ${response.statusText}`;
  }
}

// A JSON request; its reply as parsed JSON (null for 204), or an Error with the server's one-line message.
export async function api(method, url, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  if (!response.ok) throw new Error(await errorMessage(response));
  return response.status === 204 ? null : response.json();
}

// One server-sent event ("event: NAME\ndata: JSON" lines): {type, data}; type "message" when unnamed.
export function parseEvent(block) {
  let type = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) type = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  return { type, data: data.length ? JSON.parse(data.join("\n")) : {} };
}

// POSTs `body` as JSON and yields the reply's server-sent events as they arrive (a streamed generation:
// "prompt", then one "message" per token, then "done" or "error"). Aborting `signal` ends it with an AbortError.
export async function* streamEvents(url, body, signal) {
  const response = await fetch(url, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), signal,
  });
  if (!response.ok) throw new Error(await errorMessage(response));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      yield parseEvent(block);
    }
  }
}

// Appends `piece` to the text node `node` inside the scrolling `box`; the newest text stays in view if the
// reader was at the bottom, and the view stays put if they scrolled up to read.
export function appendFollowing(box, node, piece) {
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  node.appendData(piece);
  if (atBottom) box.scrollTop = box.scrollHeight;
}

// The stop string as typed, with \n read as a line break, \t as a tab and \\ as one backslash.
export function readEscapes(text) {
  return text.replace(/\\([nt\\])/g, (_, c) => ({ n: "\n", t: "\t", "\\": "\\" })[c]);
}

// A size for people. The page counts downloads in decimal units (1 MB = 10^6 bytes, like `textweaver export`'s
// file list and docs/web.md); the studio counts uploads in binary ones ({binary: true}: 1 MB = 2^20 bytes, like
// --max-upload, so its 200MB limit reads "200 MB").
export function formatBytes(n, { binary = false } = {}) {
  if (!binary) return n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${Math.round(n / 1e3)} kB`;
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(1)} GB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(n >= 10 * 2 ** 20 ? 0 : 1)} MB`;
  return `${Math.max(1, Math.round(n / 1024))} KB`;
}

// Puts `text` on the clipboard; where the Clipboard API is refused (no permission, not a secure context),
// through a selected, temporary textarea.
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = Object.assign(document.createElement("textarea"), { value: text });
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
}
