#!/usr/bin/env bash
# docs/openapi.yaml against the running example proxy, with schemathesis (pinned in
# tests/schemathesis/requirements.txt), on SQLite and on PostgreSQL: every check on
# (tests/schemathesis/schemathesis.toml), valid keys of two owners, a store seeded over
# HTTP with conversations that hold messages and tool calls. Prints how many requests
# it made and the share answered 2xx; fails on any failure schemathesis reports, and
# when fewer than SCHEMATHESIS_MIN_2XX (default 0.2) of the answers were 2xx.
#
# Usage: bash scripts/schemathesis.sh [sqlite|postgres]...   (default: both)
# Environment: DATABASE_URL (a PostgreSQL server's URL; a fresh database is made on it),
# SCHEMATHESIS_MAX_EXAMPLES (default 30 per operation and phase), SCHEMATHESIS_SEED
# (default 1, so that a run is reproducible; set another to explore).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
work=$root/target/schemathesis
venv=$root/target/schemathesis-venv
max_examples=${SCHEMATHESIS_MAX_EXAMPLES:-30}
seed=${SCHEMATHESIS_SEED:-1}
min_2xx=${SCHEMATHESIS_MIN_2XX:-0.2}
postgres_url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q -r tests/schemathesis/requirements.txt

cargo build -q --example proxy
proxy_binary=$root/target/debug/examples/proxy

proxy_pid=
database=
cleanup() {
    if [ -n "$proxy_pid" ]; then
        kill "$proxy_pid" 2>/dev/null || true
        wait "$proxy_pid" 2>/dev/null || true
        proxy_pid=
    fi
    if [ -n "$database" ]; then
        psql "$postgres_url" -qc "DROP DATABASE IF EXISTS \"$database\"" || true
        database=
    fi
}
trap cleanup EXIT

# The proxy's keys, each an owner: the one the run acts as and seeds with, the peer that
# must see none of its conversations, and the one erasure acts as.
owner_key=sk-schemathesis-owner
peer_key=sk-schemathesis-peer
eraser_key=sk-schemathesis-eraser

# Starts the proxy on a port the system picks and sets base_url once it listens.
start_proxy() {
    local dir=$1 database_url=$2
    printf '%s\n' "$owner_key" "$peer_key" "$eraser_key" >"$dir/keys"
    env -u DATABASE_URL -u API_KEYS_FILE -u UPSTREAM_URL -u ALLOW_ANONYMOUS -u LISTEN_ADDR \
        "$proxy_binary" --listen 127.0.0.1:0 --database-url "$database_url" \
        --api-keys "$dir/keys" 2>"$dir/proxy.log" &
    proxy_pid=$!
    base_url=
    for _ in $(seq 1 300); do
        base_url=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$dir/proxy.log" | head -1)
        [ -n "$base_url" ] && return 0
        kill -0 "$proxy_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "the proxy did not start:" >&2
    cat "$dir/proxy.log" >&2
    return 1
}

run_backend() {
    local backend=$1 dir=$work/$1 database_url
    rm -rf "$dir"
    mkdir -p "$dir"
    case $backend in
        sqlite) database_url=sqlite://$dir/conversations.db ;;
        postgres)
            # tc_test_ so that .ci/run drops it should a killed run leave it behind.
            database=tc_test_schemathesis_$$
            psql "$postgres_url" -qc "CREATE DATABASE \"$database\""
            database_url=${postgres_url%/*}/$database
            ;;
        *) echo "unknown backend $backend (sqlite or postgres)" >&2; return 2 ;;
    esac
    start_proxy "$dir" "$database_url"
    "$venv/bin/python" tests/schemathesis/seed.py "$base_url" "$owner_key" "$dir"
    cp tests/schemathesis/schemathesis.toml "$dir/"
    # Web Fuzzing Commons' auth file: how schemathesis authenticates each identity.
    cat >"$dir/auth.json" <<EOF
{"auth": [
  {"name": "owner", "fixedHeaders": [{"name": "Authorization", "value": "Bearer $owner_key"}]},
  {"name": "peer", "fixedHeaders": [{"name": "Authorization", "value": "Bearer $peer_key"}]}
]}
EOF
    local status=0
    (
        cd "$dir"
        SCHEMATHESIS_BASE_URL=$base_url SCHEMATHESIS_ERASER_KEY=$eraser_key \
            "$venv/bin/schemathesis" --config-file "$dir/schemathesis.toml" \
            run "$root/docs/openapi.yaml" --max-examples "$max_examples" \
            --seed "$seed" --generation-database none --no-color \
            --report har --report-har-path "$dir/requests.har"
    ) || status=$?
    "$venv/bin/python" tests/schemathesis/summary.py "$dir/requests.har" "$backend" "$min_2xx" ||
        status=1
    if [ "$status" -ne 0 ]; then
        echo "schemathesis on $backend failed; the proxy's log is $dir/proxy.log" >&2
    fi
    cleanup
    return "$status"
}

backends=("$@")
if [ ${#backends[@]} -eq 0 ]; then
    backends=(sqlite postgres)
fi
failed=0
for backend in "${backends[@]}"; do
    run_backend "$backend" || failed=1
done
exit "$failed"
