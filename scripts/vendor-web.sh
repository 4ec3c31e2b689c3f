#!/bin/sh
# Copy the browser build of socket.io-client from node_modules into web/vendor/.
# The copy is committed, so a clean clone serves the page without npm; run this
# after upgrading socket.io-client in package.json (`npm install` first).
set -eu
cd "$(dirname "$0")/.."
src=node_modules/socket.io-client
test -f "$src/dist/socket.io.esm.min.js" || { echo "run npm install first" >&2; exit 1; }
# Drop the source-map comment: the map is not shipped.
grep -v '^//# sourceMappingURL=' "$src/dist/socket.io.esm.min.js" > web/vendor/socket.io.esm.min.js
cp "$src/LICENSE" web/vendor/socket.io-client.LICENSE
version=$(node -p "require('./$src/package.json').version")
echo "socket.io-client $version" > web/vendor/VERSIONS
echo "web/vendor: socket.io-client $version"
