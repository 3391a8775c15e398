-- The event store: one row per event, with a global position.
--
-- SQLite has a single writer: an append runs in one `BEGIN IMMEDIATE` transaction, takes
-- positions after the largest one stored and commits before the next append can start. So
-- positions are consecutive from 1, a rolled-back append leaves no gap, and positions become
-- visible in order (no read horizon is needed, unlike PostgreSQL).
--
-- Ids are hyphenated UUID text; JSON is text; times are integer microseconds since
-- 1970-01-01 00:00:00 UTC (the precision of an event's `occurred_at`, exactly).
CREATE TABLE projection_events (
    position          INTEGER PRIMARY KEY CHECK (position > 0),
    event_id          TEXT    NOT NULL UNIQUE,
    aggregate_id      TEXT    NOT NULL,
    aggregate_type    TEXT    NOT NULL,
    aggregate_version INTEGER NOT NULL CHECK (aggregate_version > 0),
    event_type        TEXT    NOT NULL,
    event_version     INTEGER NOT NULL,
    payload           TEXT    NOT NULL,
    metadata          TEXT    NOT NULL DEFAULT '{}',
    tenant_id         TEXT,
    actor_id          TEXT,
    correlation_id    TEXT    NOT NULL,
    causation_id      TEXT,
    occurred_at       INTEGER NOT NULL,
    stored_at         INTEGER NOT NULL,
    UNIQUE (aggregate_id, aggregate_version)
) STRICT;

-- Lag queries: events of some types after a position.
CREATE INDEX projection_events_type_position_idx ON projection_events (event_type, position);
