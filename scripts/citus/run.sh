#!/usr/bin/env bash
# Runs the whole store and the management API on Citus: builds and installs Citus from a
# source tree, starts a coordinator and two workers, runs the example proxy against the
# coordinator, distributes both tables by conversation id, drives every endpoint through
# the proxy, checks the stored rows, and reports which SQL statements Citus refused.
#
#   scripts/citus/run.sh CITUS_SOURCE_TREE [--duration SECONDS] [--clients N] [--rebuild]
#                        [--url-options 'statement-cache-capacity=0']
#   scripts/citus/run.sh CITUS_SOURCE_TREE --build-only [--rebuild]
#   scripts/citus/run.sh --stop
#
# Runs as root on Debian with PostgreSQL 15. See README.md beside this file.
set -euo pipefail

PG_MAJOR=15
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$PG_BIN/pg_config
COORD_PORT=${CITUS_COORD_PORT:-55432}
WORKER1_PORT=${CITUS_WORKER1_PORT:-55433}
WORKER2_PORT=${CITUS_WORKER2_PORT:-55434}
PROXY_PORT=${CITUS_PROXY_PORT:-58080}
CLUSTERS=(citus_coord citus_w1 citus_w2)
PORTS=("$COORD_PORT" "$WORKER1_PORT" "$WORKER2_PORT")
APP_NAME=tower-conversations-proxy
# Debian packages that building Citus needs.
BUILD_PACKAGES=(build-essential postgresql-server-dev-$PG_MAJOR libkrb5-dev libzstd-dev
    liblz4-dev libssl-dev libselinux1-dev libxslt1-dev libpam0g-dev libreadline-dev)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=${CITUS_WORK_DIR:-/var/tmp/tower-conversations-citus}

usage() {
    sed -n '2,/^[^#]/{/^#/p}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

say() { printf '\n== %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

mode=run
source_tree=
duration=10
clients=16
rebuild=0
url_options=
while (($#)); do
    case $1 in
        --stop) mode=stop ;;
        --build-only) mode=build ;;
        --rebuild) rebuild=1 ;;
        --duration) duration=${2:?--duration needs a value}; shift ;;
        --clients) clients=${2:?--clients needs a value}; shift ;;
        --url-options) url_options=${2:?--url-options needs a value}; shift ;;
        -h | --help) usage 0 ;;
        -*) printf 'unknown option %s\n\n' "$1" >&2; usage 2 ;;
        *) [[ -z $source_tree ]] || usage 2; source_tree=$1 ;;
    esac
    shift
done
[[ $(id -u) == 0 ]] || die "run as root: the clusters are made with pg_createcluster"

psql_on() { # PORT SQL...: one psql call as postgres over loopback, stopping at the first error
    local port=$1; shift
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"
}

cluster_exists() { pg_lsclusters -h "$PG_MAJOR" "$1" >/dev/null 2>&1; }

drop_clusters() {
    local name
    for name in "${CLUSTERS[@]}"; do
        cluster_exists "$name" || echo "no cluster $PG_MAJOR/$name"
        if cluster_exists "$name"; then
            pg_dropcluster --stop "$PG_MAJOR" "$name"
            echo "dropped cluster $PG_MAJOR/$name"
        fi
    done
}

# ---------------------------------------------------------------- building Citus
citus_version_of_tree() {
    sed -n "s/^PACKAGE_VERSION='\(.*\)'$/\1/p" "$1/configure"
}

installed_citus_version() {
    local library
    library="$("$PG_CONFIG" --pkglibdir)/citus.so"
    [[ -f $library && -f "$("$PG_CONFIG" --sharedir)/extension/citus.control" ]] || return 0
    # The library carries the string citus_version() answers: "Citus 12.1.12 on ...".
    grep -aom1 'Citus [0-9][0-9.]* on ' "$library" | sed 's/^Citus \(.*\) on $/\1/' || true
}

install_build_packages() {
    local missing=() package
    for package in "${BUILD_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$package")
    done
    if ((${#missing[@]})); then
        echo "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

build_citus() {
    [[ -n $source_tree ]] || usage 2
    [[ -x $source_tree/configure ]] || die "$source_tree is not a Citus source tree (no configure)"
    local version installed build started
    version=$(citus_version_of_tree "$source_tree")
    [[ -n $version ]] || die "no version in $source_tree/configure"
    installed=$(installed_citus_version)
    if [[ $installed == "$version" ]] && ((!rebuild)); then
        say "Citus $version is already installed in $("$PG_CONFIG" --pkglibdir); not building"
        return
    fi
    say "building Citus $version from $source_tree (installed: ${installed:-none})"
    install_build_packages
    # Out of tree, so the source tree stays as it was given.
    build=$work/citus-build-$version
    rm -rf "$build" && mkdir -p "$build"
    started=$SECONDS
    (
        cd "$build"
        PG_CONFIG=$PG_CONFIG nice -n 10 "$(cd "$source_tree" && pwd)/configure" --without-libcurl \
            >"$build/configure.log" 2>&1 || { tail -20 "$build/configure.log"; exit 1; }
        nice -n 10 make -j"$(nproc)" >"$build/make.log" 2>&1 || { tail -40 "$build/make.log"; exit 1; }
        make install >"$build/install.log" 2>&1 || { tail -20 "$build/install.log"; exit 1; }
    ) || die "building Citus failed (logs in $build)"
    installed=$(installed_citus_version)
    [[ $installed == "$version" ]] || die "installed Citus reports version '${installed}', not $version"
    echo "built and installed Citus $version in $((SECONDS - started)) s (logs in $build)"
}


# ---------------------------------------------------------------- the clusters
create_clusters() {
    say "creating clusters ${CLUSTERS[*]} on ports ${PORTS[*]}"
    drop_clusters
    local i name port conf
    for i in "${!CLUSTERS[@]}"; do
        name=${CLUSTERS[$i]} port=${PORTS[$i]}
        pg_createcluster "$PG_MAJOR" "$name" -p "$port" >/dev/null
        conf=/etc/postgresql/$PG_MAJOR/$name
        # Trust on loopback and the local socket only: these clusters are for this run.
        cat >"$conf/pg_hba.conf" <<HBA
local all all trust
host  all all 127.0.0.1/32 trust
host  all all ::1/128 trust
HBA
        cat >"$conf/conf.d/citus.conf" <<CONF
listen_addresses = '127.0.0.1'
shared_preload_libraries = 'citus'
max_connections = $(( i == 0 ? 200 : 300 ))
# The nodes talk over loopback.
citus.node_conninfo = 'sslmode=disable'
CONF
        if ((i == 0)); then
            # The coordinator logs, as CSV, every error and every query that Citus splits
            # into tasks on several shards, each with the statement that caused it (the
            # default log_min_error_statement, error, also covers LOG messages).
            cat >>"$conf/conf.d/citus.conf" <<CONF
logging_collector = on
log_destination = 'stderr,csvlog'
log_directory = 'log'
log_filename = 'postgresql.log'
log_min_error_statement = error
citus.multi_task_query_log_level = log
CONF
        fi
        pg_ctlcluster "$PG_MAJOR" "$name" start
    done
    for i in "${!CLUSTERS[@]}"; do
        for _ in $(seq 50); do
            pg_isready -q -h 127.0.0.1 -p "${PORTS[$i]}" && break
            sleep 0.2
        done
        psql_on "${PORTS[$i]}" -c 'CREATE EXTENSION citus'
    done
    psql_on "$COORD_PORT" -o /dev/null <<SQL
SELECT citus_set_coordinator_host('127.0.0.1', $COORD_PORT);
SELECT citus_add_node('127.0.0.1', $WORKER1_PORT);
SELECT citus_add_node('127.0.0.1', $WORKER2_PORT);
SQL
    psql_on "$COORD_PORT" -A -t -c 'SELECT citus_version()'
    psql_on "$COORD_PORT" -c \
        'SELECT nodeid, nodename, nodeport, noderole, shouldhaveshards FROM pg_dist_node ORDER BY nodeid'
}

# ---------------------------------------------------------------- the proxy
proxy_pid=

build_proxy() {
    say "building the example proxy (release)"
    local started=$SECONDS
    (cd "$repo" && nice -n 10 cargo build --release --example proxy) >"$work/cargo-build.log" 2>&1 ||
        { tail -30 "$work/cargo-build.log"; die "cargo build failed (log: $work/cargo-build.log)"; }
    proxy_bin=${CARGO_TARGET_DIR:-$repo/target}/release/examples/proxy
    [[ -x $proxy_bin ]] || die "no proxy binary at $proxy_bin"
    echo "built $proxy_bin in $((SECONDS - started)) s"
}

start_proxy() {
    # The application name tells the proxy's statements apart in the coordinator's log.
    local url="postgres://postgres@127.0.0.1:$COORD_PORT/postgres?application_name=$APP_NAME${url_options:+&$url_options}"
    if curl -s -o /dev/null "http://127.0.0.1:$PROXY_PORT/"; then
        die "something already listens on 127.0.0.1:$PROXY_PORT (set CITUS_PROXY_PORT to another port)"
    fi
    say "starting the proxy on 127.0.0.1:$PROXY_PORT against the coordinator (no upstream: the demo model)"
    echo "database URL: $url"
    "$proxy_bin" --database-url "$url" --listen "127.0.0.1:$PROXY_PORT" >"$work/proxy.log" 2>&1 &
    proxy_pid=$!
    for _ in $(seq 150); do
        kill -0 "$proxy_pid" 2>/dev/null || { cat "$work/proxy.log"; die "the proxy exited"; }
        curl -sf -o /dev/null "http://127.0.0.1:$PROXY_PORT/v1/conversations" && break
        sleep 0.2
    done
    curl -sf -o /dev/null "http://127.0.0.1:$PROXY_PORT/v1/conversations" ||
        { cat "$work/proxy.log"; die "the proxy does not answer"; }
    echo "proxy pid $proxy_pid answers; its migrations ran (log: $work/proxy.log)"
}

stop_proxy() {
    [[ -n $proxy_pid ]] || return 0
    if kill -0 "$proxy_pid" 2>/dev/null; then
        kill -TERM "$proxy_pid"
        for _ in $(seq 100); do kill -0 "$proxy_pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$proxy_pid" 2>/dev/null; then
            echo "the proxy did not stop on SIGTERM within 10 s; killing it"
            kill -KILL "$proxy_pid"
        fi
    fi
    wait "$proxy_pid" 2>/dev/null || true
    proxy_pid=
}

distribute() {
    say "distributing the tables by conversation id"
    local distributed
    distributed=$(psql_on "$COORD_PORT" -A -t -c \
        "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid IN ('conversations'::regclass, 'messages'::regclass, 'responses'::regclass)")
    if ((distributed == 3)); then
        echo "the proxy distributed the tables when it started"
    else
        # conversations first: messages is co-located with it.
        psql_on "$COORD_PORT" -o /dev/null <<'SQL'
SELECT create_distributed_table('conversations', 'id')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'conversations'::regclass);
SELECT create_distributed_table('messages', 'conversation_id', colocate_with => 'conversations')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'messages'::regclass);
SELECT create_distributed_table('responses', 'conversation_id', colocate_with => 'conversations')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'responses'::regclass);
SQL
        echo "distributed them here (the proxy had not)"
    fi
    psql_on "$COORD_PORT" <<'SQL'
SELECT table_name, citus_table_type, distribution_column, colocation_id, shard_count
FROM citus_tables ORDER BY table_name::text;
SELECT n.nodeport AS worker_port, count(*) AS shards
FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid) JOIN pg_dist_node n USING (groupid)
GROUP BY n.nodeport ORDER BY 1;
SQL
}

# ---------------------------------------------------------------- checks
consistency_check() {
    say "consistency check on the coordinator"
    local result
    # Joins and aggregates on the distribution column, which Citus pushes down to every
    # pair of colocated shards (it refuses a correlated subquery beside a CTE).
    result=$(psql_on "$COORD_PORT" -A -t -F ' ' <<'SQL'
SELECT count(*),
       count(*) FILTER (WHERE c.message_count <> coalesce(n.stored, 0)),
       count(*) FILTER (WHERE n.distinct_numbers <> n.stored),
       count(*) FILTER (WHERE n.first < 0 OR n.last >= c.next_sequence),
       count(*) FILTER (WHERE n.out_of_turn > 0)
FROM conversations c
LEFT JOIN (
    SELECT conversation_id, count(*) AS stored, count(DISTINCT sequence_number) AS distinct_numbers,
           min(sequence_number) AS first, max(sequence_number) AS last,
           count(*) FILTER (WHERE role <> message->>'role' OR role <>
               CASE WHEN sequence_number % 2 = 0 THEN 'user' ELSE 'assistant' END) AS out_of_turn
    FROM messages GROUP BY conversation_id
) n ON n.conversation_id = c.id;
SELECT count(*), count(*) FILTER (WHERE c.id IS NULL)
FROM messages m LEFT JOIN conversations c ON c.id = m.conversation_id;
SQL
    ) || { echo "the check's query failed"; return 1; }
    local conversations messages mismatched duplicated gapped interleaved orphaned
    { read -r conversations mismatched duplicated gapped interleaved; read -r messages orphaned; } <<<"$result"
    local failed=0
    report_check() { # COUNT WHAT
        if (($1 == 0)); then printf '  ok    %s\n' "$2"; else printf '  FAIL  %s: %s\n' "$2" "$1"; failed=1; fi
    }
    echo "  $conversations conversations, $messages messages"
    report_check "$mismatched" "conversations whose message_count differs from their rows"
    report_check "$duplicated" "conversations with a sequence number stored twice"
    report_check "$gapped" "conversations holding a number below 0 or not below their next_sequence"
    report_check "$interleaved" "conversations whose turns are interleaved (user/assistant out of step)"
    report_check "$orphaned" "messages without their conversation (deletes take them along)"
    return "$failed"
}

coordinator_log_report() {
    say "what the coordinator logged for the proxy's statements"
    python3 "$here/coordinator_log.py" --store "$repo/src/store" --application "$APP_NAME" \
        "/var/lib/postgresql/$PG_MAJOR/citus_coord/log/postgresql.csv"
}

# ---------------------------------------------------------------- the run
if [[ $mode == stop ]]; then
    say "dropping the Citus clusters"
    drop_clusters
    exit 0
fi
mkdir -p "$work"
build_citus
[[ $mode == build ]] && exit 0

trap stop_proxy EXIT
create_clusters
build_proxy
start_proxy
distribute

say "driving the proxy: $clients chat clients for $duration s, and the management API"
driver=0
python3 "$here/drive.py" --base "http://127.0.0.1:$PROXY_PORT" --duration "$duration" \
    --clients "$clients" --summary "$work/driver.json" || driver=$?

say "stopping the proxy"
stop_proxy
store_errors=$(grep -c 'conversation store failed' "$work/proxy.log" || true)
echo "the proxy stopped; it logged $store_errors store failure(s) (log: $work/proxy.log)"

consistency=0
consistency_check || consistency=$?
logged=0
coordinator_log_report || logged=$?

say "the store's statements, one by one, on Citus"
survey=0
(cd "$repo" && python3 "$here/statements.py" --store src/store --port "$COORD_PORT") || survey=$?

say "result"
verdict() { (($1 == 0)) && echo "ok" || echo "FAILED"; }
echo "  driver (every answer, every turn, read-back):  $(verdict "$driver")"
echo "  consistency check of the stored rows:          $(verdict "$consistency")"
echo "  errors in the coordinator's log:               $(verdict "$logged")"
echo "  statement survey:                              $(verdict "$survey")"
echo "  clusters left running: ${CLUSTERS[*]} on ports ${PORTS[*]} (drop them with: $0 --stop)"
((driver == 0 && consistency == 0 && logged == 0 && survey == 0))
