#!/usr/bin/env bash
# The append benchmark: appends through each position design beside plain inserts, at 1, 4
# and 16 concurrent writers, one event per append and batches of 100.
#
#   benches/pgbench/run.sh [seconds per run, default 10] [rounds, default 2]
#
# BATCHES and CLIENTS (space-separated) choose the rows, for example
# `BATCHES=1 CLIENTS=16 benches/pgbench/run.sh 10 4`; default "1 100" and "1 4 16". IDS chooses
# the event ids: `ordered` (default; time-ordered, as EventMetadata::new makes them) or
# `random` (version 4, as before).
#
# Runs against $PGURL (default postgres://postgres@127.0.0.1:5432/test), in the schema
# projections_pgbench, which it creates afresh (setup.sql). Scripts (pgbench -M prepared,
# so statements are prepared once per connection, as sqlx does):
#   append_counter.sql   the append statement of migrations 0001..0005 (counter row, NOTIFY)
#   append_sequence.sql  the append of migration 0006 (projection_append: sequence,
#                        registration)
#   plain_insert.sql     a plain INSERT into a table with a sequence, same columns, primary key
#   indexed_insert.sql   the same INSERT into a table with the event table's indexes
# Before each run the tables are truncated and a CHECKPOINT is forced; the order of the
# scripts rotates between rounds. Prints events/s per run and, per row, the ratio of each
# design to the plain insert of the same round.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_RUN=${1:-10}
ROUNDS=${2:-2}
URL=${PGURL:-postgres://postgres@127.0.0.1:5432/test}
psql -q "$URL" -f setup.sql >/dev/null 2>&1
# The event ids every script inserts: time-ordered (as the store makes them) or random.
IDS=${IDS:-ordered}
psql -q -v ON_ERROR_STOP=1 "$URL" -c "CREATE FUNCTION projections_pgbench.event_id() RETURNS uuid
    LANGUAGE sql VOLATILE AS 'SELECT projections_pgbench.${IDS}_event_id()'" >/dev/null
# The designs: the crate's migrations, as migrate_schema applies them.
migrations=../../projections/migrations
for design in counter seq; do
  schema=projections_pgbench_$design
  psql -q "$URL" -c "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema" >/dev/null 2>&1
  for file in "$migrations"/000[1-6]_*.sql; do
    case "$design:$(basename "$file")" in counter:0006_*) continue ;; esac
    sed "s/__SCHEMA__\./$schema./g" "$file" | psql -q -1 -v ON_ERROR_STOP=1 "$URL" >/dev/null
  done
done
SCRIPTS=(append_counter append_sequence plain_insert indexed_insert)
echo "batch clients round $(printf '%s ' "${SCRIPTS[@]}")"
for batch in ${BATCHES:-1 100}; do
  for clients in ${CLIENTS:-1 4 16}; do
    for round in $(seq 1 "$ROUNDS"); do
      declare -A rate=()
      for k in 0 1 2 3; do
        script=${SCRIPTS[$(( (k + round - 1) % 4 ))]}
        psql -q "$URL" -c "TRUNCATE projections_pgbench_counter.projection_events,
            projections_pgbench_seq.projection_events, projections_pgbench.plain_events,
            projections_pgbench.indexed_events;
          UPDATE projections_pgbench_counter.projection_positions SET position = 0;
          CHECKPOINT;" >/dev/null
        threads=$(( clients < 2 ? 1 : 2 ))
        tps=$(pgbench "$URL" -n -M prepared -D batch="$batch" -f "$script.sql" \
                -c "$clients" -j "$threads" -T "$SECONDS_PER_RUN" 2>/dev/null \
              | awk '/^tps = / { print $3 }')
        rate[$script]=$(awk -v t="$tps" -v b="$batch" 'BEGIN { printf "%.0f", t * b }')
      done
      line="$batch $clients $round"
      for script in "${SCRIPTS[@]}"; do line="$line ${rate[$script]}"; done
      plain=${rate[plain_insert]}
      ratios=$(awk -v c="${rate[append_counter]}" -v s="${rate[append_sequence]}" \
                   -v i="${rate[indexed_insert]}" -v p="$plain" \
               'BEGIN { printf "counter/plain %.2f sequence/plain %.2f sequence/indexed %.2f", c/p, s/p, s/i }')
      echo "$line  $ratios"
      unset rate
    done
  done
done
