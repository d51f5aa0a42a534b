#!/usr/bin/env bash
# PostgreSQL's own instructions for one new two-message turn, counted by callgrind: the
# store's CREATE statement (read from src/store/postgres/mod.rs, so it is always today's)
# prepared once and executed N times by a single-user backend (`postgres --single`), in
# databases migrated by migrations/postgres/*.sql, each execution its own committed
# transaction. Per turn = the difference between runs of 100 and 400 executions, / 300.
# Instruction counts repeat to a fraction of a percent whatever else the machine does,
# where CPU time on a shared machine moves by 2x.
#
#   bash scripts/postgres/turn_instructions.sh
#
# Rows: the schema as migrated; the same with the foreign key and CHECK constraints that
# migration 0005 dropped put back; the same statement into tables with no key, index or
# constraint (its search vector still computed); and the floor: the same rows with no
# search vector into those bare tables. Needs PostgreSQL 15's server binaries and
# valgrind; runs a throwaway cluster under target/ as the postgres user (PostgreSQL
# refuses to run as root). Takes about 5 minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
work="$PWD/target/turn-instructions"
rm -rf "$work"
mkdir -p "$work"
chmod 777 "$work"
as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -c "$*"; else bash -c "$*"; fi; }

as_postgres "'$bin/initdb' -D '$work/data' -A trust >/dev/null"
port=55490
as_postgres "'$bin/pg_ctl' -D '$work/data' -o '-p $port -k $work -c autovacuum=off' -l '$work/log' -w start >/dev/null"
psql_in() { psql -q -h "$work" -p "$port" -U postgres -v ON_ERROR_STOP=1 -d "$@"; }

for db in migrated constrained bare floor; do psql_in postgres -c "CREATE DATABASE $db"; done
for db in migrated constrained; do
    for migration in migrations/postgres/*.sql; do psql_in "$db" -f "$migration" >/dev/null; done
done
psql_in constrained <<'SQL'
ALTER TABLE messages ADD FOREIGN KEY (conversation_id) REFERENCES conversations (id) ON DELETE CASCADE;
ALTER TABLE messages ADD CHECK (sequence_number >= 0);
ALTER TABLE messages ADD CHECK (jsonb_typeof(metadata) = 'object');
ALTER TABLE conversations ADD CHECK (message_count >= 0);
ALTER TABLE conversations ADD CHECK (jsonb_typeof(metadata) = 'object');
ALTER TABLE conversations ADD CHECK (next_sequence >= message_count);
SQL
for db in bare floor; do
    psql_in "$db" <<'SQL'
CREATE TABLE conversations (id uuid, owner text, title text, created_at timestamptz,
    updated_at timestamptz, message_count bigint, next_sequence bigint, metadata jsonb);
CREATE TABLE messages (conversation_id uuid, sequence_number bigint, role text, message json,
    content_search tsvector, reasoning text, reasoning_events jsonb, metadata jsonb,
    created_at timestamptz);
SQL
done
as_postgres "'$bin/pg_ctl' -D '$work/data' -w stop >/dev/null"

# The statement as the store sends it, and the parameters of a short turn as bound.
create="$(awk '/^const CREATE: &str = "$/ {on = 1; next} on && /^[^"]*";$/ {sub(/";$/, ""); print; exit} on {print}' src/store/postgres/mod.rs)"
[ -n "$create" ] || { echo "CREATE not found in src/store/postgres/mod.rs" >&2; exit 1; }
user='{"role":"user","content":"Hello there, could you tell me about the weather in Paris today?"}'
assistant='{"role":"assistant","content":"Paris is mild today: around 14 degrees with light clouds in the morning and sun after noon. A light jacket is enough; rain is not expected before the weekend, when a front from the Atlantic brings showers and cooler air."}'
# Parameters become literals in the prepared statement: an EXECUTE with arguments would
# parse their text at every execution, which the protocol's binary Bind does not.
values=(gen_random_uuid\(\) "'owner-a'" "'Hello there'" 2 "'{}'::jsonb" "ARRAY['user','assistant']"
    "ARRAY['$user','$assistant']" "ARRAY[NULL,NULL]::text[]" "ARRAY[NULL,NULL]::text[]"
    "ARRAY[NULL,NULL]::jsonb[]" "ARRAY['{}','{}']::jsonb[]")
bind() { # STATEMENT -> the statement with $11 .. $1 replaced by the values above
    local statement="$1" n
    for ((n = ${#values[@]}; n >= 1; n--)); do statement="${statement//\$$n/${values[n - 1]}}"; done
    printf '%s' "$statement"
}
search_vector="to_tsvector('simple', coalesce(batch.text, batch.message::json ->> 'content'))"
floor_statement="${create//"$search_vector"/NULL}"
[ "$floor_statement" != "$create" ] || { echo "the search vector's expression was not found" >&2; exit 1; }

input() { # STATEMENT COUNT
    printf 'PREPARE turn AS %s;\n\n' "$(bind "$1")"
    for _ in $(seq "$2"); do printf 'EXECUTE turn;\n\n'; done
}
count() { # DATABASE STATEMENT COUNT -> instructions of the whole run
    input "$2" "$3" >"$work/in.sql"
    chmod 644 "$work/in.sql"
    as_postgres "valgrind --tool=callgrind --callgrind-out-file='$work/callgrind.out' '$bin/postgres' --single -D '$work/data' -j -c autovacuum=off $1 <'$work/in.sql' >'$work/out.txt' 2>'$work/err.txt'"
    if grep -q ERROR "$work/out.txt" "$work/err.txt"; then
        grep -h ERROR "$work/out.txt" "$work/err.txt" >&2
        exit 1
    fi
    awk '/^(summary|totals):/ {print $2; exit}' "$work/callgrind.out"
}
per_turn() { # DATABASE STATEMENT
    local few many
    few="$(count "$1" "$2" 100)"
    many="$(count "$1" "$2" 400)"
    echo $(((many - few) / 300))
}

now="$(per_turn migrated "$create")"
constrained="$(per_turn constrained "$create")"
bare="$(per_turn bare "$create")"
floor="$(per_turn floor "$floor_statement")"
echo "| new turn, 2 messages, 300 characters | instructions | / floor |"
echo "|---|--:|--:|"
for row in "store now:$now" "with 0005's key and checks back:$constrained" "bare tables, search vector computed:$bare" "floor: bare tables, no search vector:$floor"; do
    printf '| %s | %s | %s |\n' "${row%%:*}" "${row##*:}" "$(awk -v a="${row##*:}" -v b="$floor" 'BEGIN {printf "%.2f", a / b}')"
done
rm -rf "$work"
