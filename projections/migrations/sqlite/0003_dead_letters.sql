-- Dead letters: events a projection gave up on, one row per (event, projection).
--
-- Times are integer microseconds since 1970-01-01 00:00:00 UTC; JSON is text.
CREATE TABLE projection_dead_letters (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL,
    position        INTEGER,
    projection_name TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    event_data      TEXT    NOT NULL,
    error_message   TEXT    NOT NULL,
    error_chain     TEXT    NOT NULL DEFAULT '[]' CHECK (json_type(error_chain) = 'array'),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    first_failed_at INTEGER NOT NULL,
    last_failed_at  INTEGER NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'failed'
                            CHECK (status IN ('failed', 'retrying', 'resolved')),
    resolved_at     INTEGER,
    resolved_by     TEXT,
    UNIQUE (event_id, projection_name)
) STRICT;

-- Listing oldest first, per projection and status.
CREATE INDEX projection_dead_letters_projection_status_idx
    ON projection_dead_letters (projection_name, status, first_failed_at);
CREATE INDEX projection_dead_letters_status_idx
    ON projection_dead_letters (status, first_failed_at);
