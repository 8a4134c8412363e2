#!/usr/bin/env bash
# Refresh the vendored onnxruntime-web from the npm registry, keeping only the files the page needs:
# the ES-module bundle of the WebAssembly back end (glue code included) and its .wasm binary.
#
#   scripts/update_onnxruntime_web.sh            # re-fetch the pinned version (first line of VERSION)
#   scripts/update_onnxruntime_web.sh 1.31.0     # move the pin to another version
#
# Needs node/npm. After a version change: textweaver export a run with --format web and run
# `pytest tests/test_browser.py` before committing.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=src/textweaver/web/vendor/onnxruntime-web
VERSION=${1:-$(head -n 1 "$DEST/VERSION")}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

(cd "$TMP" && npm pack --silent "onnxruntime-web@$VERSION" >/dev/null && tar xzf onnxruntime-web-*.tgz)
PKG=$TMP/package
GOT=$(node -p "require('$PKG/package.json').version")
[ "$GOT" = "$VERSION" ] || { echo "npm gave onnxruntime-web $GOT, not $VERSION" >&2; exit 1; }

rm -rf "$DEST"
mkdir -p "$DEST"
# .mjs saved as .js: every static server (python -m http.server included) sends .js as JavaScript.
cp "$PKG/dist/ort.wasm.bundle.min.mjs" "$DEST/ort.wasm.bundle.min.js"
cp "$PKG/dist/ort-wasm-simd-threaded.wasm" "$DEST/ort-wasm-simd-threaded.wasm"

# The npm package ships no licence file; this is ONNX Runtime's LICENSE (MIT), word for word.
cat > "$DEST/LICENSE" <<'LICENSE_TEXT'
MIT License

Copyright (c) Microsoft Corporation

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
LICENSE_TEXT

{
  echo "$VERSION"
  echo
  echo "onnxruntime-web $VERSION from the npm registry (npm pack onnxruntime-web@$VERSION),"
  echo "copied by scripts/update_onnxruntime_web.sh; rerun it to refresh. Only what the page needs:"
  echo "  ort.wasm.bundle.min.js       dist/ort.wasm.bundle.min.mjs (WebAssembly back end, ES module, glue included)"
  echo "  ort-wasm-simd-threaded.wasm  dist/ort-wasm-simd-threaded.wasm (the page runs it with one thread)"
  echo "Licence: MIT, Copyright (c) Microsoft Corporation (LICENSE). The WebAssembly binary also contains"
  echo "third-party code listed in ThirdPartyNotices.txt of the microsoft/onnxruntime repository (the"
  echo "onnxruntime Python wheel ships the same file)."
  echo
  echo "sha256:"
  (cd "$DEST" && sha256sum ort.wasm.bundle.min.js ort-wasm-simd-threaded.wasm | sed 's/^/  /')
} > "$DEST/VERSION"
ls -l "$DEST"
