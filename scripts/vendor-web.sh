#!/bin/sh
# Copy the browser builds the page and /docs use from node_modules into web/vendor/:
#   socket.io-client   the page's Socket.IO client (ES module)
#   highlight.js       code highlighting in answers (@highlightjs/cdn-assets: the ES build
#                      with the common languages, no bundler needed)
#   swagger-ui-dist    /docs, served from here so it works offline (no CDN)
# The copies are committed, so a clean clone serves the page without npm; run this after
# upgrading one of them in package.json (`npm ci` first).
set -eu
# $1: another output folder (the tests build into one and compare with web/vendor).
vendor=$(realpath "${1:-$(dirname "$0")/../web/vendor}")
cd "$(dirname "$0")/.."
need() { test -f "$1" || { echo "missing $1: run npm ci first" >&2; exit 1; }; }
version() { node -p "require('./node_modules/$1/package.json').version"; }
# Source-map comments are dropped: the maps are not shipped.
strip_map() { grep -v '^//# sourceMappingURL=' "$1" | sed 's|/\*# sourceMappingURL=.*\*/||' > "$2"; }

sio=node_modules/socket.io-client
need "$sio/dist/socket.io.esm.min.js"
strip_map "$sio/dist/socket.io.esm.min.js" "$vendor/socket.io.esm.min.js"
cp "$sio/LICENSE" "$vendor/socket.io-client.LICENSE"

hl=node_modules/@highlightjs/cdn-assets
need "$hl/es/highlight.min.js"
strip_map "$hl/es/highlight.min.js" "$vendor/highlight.min.js"
cp "$hl/LICENSE" "$vendor/highlight.js.LICENSE"

sw=node_modules/swagger-ui-dist
need "$sw/swagger-ui-bundle.js"
mkdir -p "$vendor/swagger-ui"
strip_map "$sw/swagger-ui-bundle.js" "$vendor/swagger-ui/swagger-ui-bundle.js"
strip_map "$sw/swagger-ui.css" "$vendor/swagger-ui/swagger-ui.css"
cp "$sw/LICENSE" "$vendor/swagger-ui/LICENSE"
cp "$sw/NOTICE" "$vendor/swagger-ui/NOTICE"

{
  echo "socket.io-client $(version socket.io-client)"
  echo "@highlightjs/cdn-assets $(version @highlightjs/cdn-assets)"
  echo "swagger-ui-dist $(version swagger-ui-dist)"
} > "$vendor/VERSIONS"
echo "$vendor:"; sed 's/^/  /' "$vendor/VERSIONS"
