-- The event store: one row per event, with a global position.
--
-- `__SCHEMA__.` is replaced by the configured schema (`"name".`) or removed (search_path).
--
-- Positions are handed out from the single row of `projection_positions`, which an append
-- updates in its own transaction: appends therefore take positions one after another, a
-- rolled-back append gives its positions back (no gaps), and positions become visible in
-- order.
--
-- `txid` is the 64-bit id of the inserting transaction. Readers stop before the first row
-- whose transaction is not older than the oldest transaction still running
-- (`txid >= pg_snapshot_xmin(pg_current_snapshot())`), so they never pass a position that an
-- unfinished transaction could still fill.
CREATE TABLE __SCHEMA__.projection_positions (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    position  bigint  NOT NULL CHECK (position >= 0)
);
INSERT INTO __SCHEMA__.projection_positions (position) VALUES (0);

CREATE TABLE __SCHEMA__.projection_events (
    position          bigint      PRIMARY KEY CHECK (position > 0),
    event_id          uuid        NOT NULL,
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
    CONSTRAINT projection_events_event_id_key UNIQUE (event_id),
    CONSTRAINT projection_events_stream_version_key UNIQUE (aggregate_id, aggregate_version)
);

-- Lag queries: events of some types after a position.
CREATE INDEX projection_events_type_position_idx
    ON __SCHEMA__.projection_events (event_type, position);

-- Finding the first row that readers must not pass yet: rows of recent transactions.
CREATE INDEX projection_events_txid_idx
    ON __SCHEMA__.projection_events (txid);
