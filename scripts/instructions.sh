#!/bin/sh
# The layer's cost in instructions, in one command: builds the release example proxy
# and the load tool, then counts the proxy's instructions per request, per chunk and
# per turn under valgrind's callgrind (tools/load/src/instructions.rs says how).
#
#   scripts/instructions.sh                 # every row (PostgreSQL ones need DATABASE_URL's server)
#   scripts/instructions.sh stateless       # passthrough and the cases naming "stateless"
#   scripts/instructions.sh --out instructions.md
#
# Needs valgrind and objcopy (binutils). DATABASE_URL defaults to
# postgres://postgres@127.0.0.1:5432/postgres; PROXY_BIN counts another proxy binary.
set -eu
cd "$(dirname "$0")/.."
if [ -z "${PROXY_BIN:-}" ]; then
    cargo build --release --example proxy
fi
cargo build --release -p load
exec target/release/load --instructions "$@"
