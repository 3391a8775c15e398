-- Checkpoints: how far each projection has got, as a global position, and its halt.
--
-- Times are integer microseconds since 1970-01-01 00:00:00 UTC.
--
-- Halts: all `halt_*` columns are null while the projection runs.
-- paused:  halt_reason (the operator's reason) and halt_at; nothing else.
-- stopped: halt_reason (the last error, or the operator's reason), halt_at, halt_attempts and
--          halt_failure_kind; halt_position, halt_event_id and halt_event_type when an event
--          failed.
CREATE TABLE projection_checkpoints (
    projection_name   TEXT    PRIMARY KEY,
    position          INTEGER NOT NULL DEFAULT 0 CHECK (position >= 0),
    last_event_id     TEXT,
    last_event_type   TEXT,
    last_processed_at INTEGER,
    events_processed  INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    halt_state        TEXT    CHECK (halt_state IN ('paused', 'stopped')),
    halt_reason       TEXT,
    halt_at           INTEGER,
    halt_position     INTEGER CHECK (halt_position >= 0),
    halt_event_id     TEXT,
    halt_event_type   TEXT,
    halt_attempts     INTEGER CHECK (halt_attempts >= 0),
    halt_failure_kind TEXT    CHECK (halt_failure_kind IN ('event', 'infrastructure', 'setup')),
    CHECK (
        CASE halt_state
            WHEN 'paused' THEN
                halt_reason IS NOT NULL AND halt_at IS NOT NULL
                AND halt_position IS NULL AND halt_event_id IS NULL
                AND halt_event_type IS NULL AND halt_attempts IS NULL
                AND halt_failure_kind IS NULL
            WHEN 'stopped' THEN
                halt_reason IS NOT NULL AND halt_at IS NOT NULL
                AND halt_attempts IS NOT NULL AND halt_failure_kind IS NOT NULL
            ELSE
                halt_state IS NULL AND halt_reason IS NULL AND halt_at IS NULL
                AND halt_position IS NULL AND halt_event_id IS NULL
                AND halt_event_type IS NULL AND halt_attempts IS NULL
                AND halt_failure_kind IS NULL
        END
    )
) STRICT;
