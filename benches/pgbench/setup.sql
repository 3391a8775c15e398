-- The baseline tables of the append benchmark (benches/pgbench/run.sh), in schema
-- projections_pgbench. The two designs are the crate's own migrations, applied by run.sh to
-- the schemas projections_pgbench_counter (0001..0005) and projections_pgbench_seq (0001..0006).
DROP SCHEMA IF EXISTS projections_pgbench CASCADE;
CREATE SCHEMA projections_pgbench;
SET search_path = projections_pgbench;

-- The columns every design stores (as projection_events).
CREATE TABLE event_columns (
    position          bigint      PRIMARY KEY CHECK (position > 0),
    event_id          uuid        NOT NULL UNIQUE,
    aggregate_id      uuid        NOT NULL,
    aggregate_type    text        NOT NULL,
    aggregate_version bigint      NOT NULL CHECK (aggregate_version > 0),
    event_type        text        NOT NULL,
    event_version     integer     NOT NULL,
    payload           jsonb       NOT NULL,
    metadata          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    tenant_id         uuid,
    actor_id          text,
    correlation_id    uuid        NOT NULL,
    causation_id      uuid,
    occurred_at       timestamptz NOT NULL,
    stored_at         timestamptz NOT NULL DEFAULT now(),
    txid              xid8        NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (aggregate_id, aggregate_version)
);
CREATE INDEX ON event_columns (event_type, position);
CREATE INDEX ON event_columns (txid);

-- The baseline: a plain insert into a table with a sequence, same columns, no constraint but
-- the primary key.
CREATE TABLE plain_events (
    position          bigserial   PRIMARY KEY,
    event_id          uuid        NOT NULL,
    aggregate_id      uuid        NOT NULL,
    aggregate_type    text        NOT NULL,
    aggregate_version bigint      NOT NULL,
    event_type        text        NOT NULL,
    event_version     integer     NOT NULL,
    payload           jsonb       NOT NULL,
    metadata          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    tenant_id         uuid,
    actor_id          text,
    correlation_id    uuid        NOT NULL,
    causation_id      uuid,
    occurred_at       timestamptz NOT NULL,
    stored_at         timestamptz NOT NULL DEFAULT now()
);
-- The baseline with the store's indexes: a plain insert into a table with the same columns,
-- constraints and indexes as the event table, positions from a sequence, nothing else.
CREATE TABLE indexed_events (LIKE event_columns INCLUDING ALL);
CREATE SEQUENCE indexed_events_position_seq AS bigint CACHE 1;
ALTER TABLE indexed_events
    ALTER COLUMN position SET DEFAULT nextval('indexed_events_position_seq');
DROP INDEX indexed_events_txid_idx;

DROP TABLE event_columns;

-- Event ids. `ordered`, as EventMetadata::new makes them: time-ordered (UUID version 7, the
-- milliseconds since the epoch in the first 48 bits, random bits after), so the event-id index
-- grows at its end; `random`, as before (version 4). run.sh points event_id() at one of them
-- (IDS=ordered by default, IDS=random).
CREATE FUNCTION ordered_event_id() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(set_byte(overlay(uuid_send(gen_random_uuid())
               PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                                 FROM 3)
               FROM 1 FOR 6), 6, (get_byte(uuid_send(gen_random_uuid()), 6) & 15) | 112), 'hex')::uuid
$$;
CREATE FUNCTION random_event_id() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT gen_random_uuid()
$$;

