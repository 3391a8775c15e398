-- Dead letters: events a projection gave up on, one row per (event, projection).
--
-- `__SCHEMA__.` is replaced by the configured schema (`"name".`) or removed (search_path).
CREATE TABLE __SCHEMA__.projection_dead_letters (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid        NOT NULL,
    position        bigint,
    projection_name text        NOT NULL,
    event_type      text        NOT NULL,
    event_data      jsonb       NOT NULL,
    error_message   text        NOT NULL,
    error_chain     jsonb       NOT NULL DEFAULT '[]'::jsonb
                                CHECK (jsonb_typeof(error_chain) = 'array'),
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at  timestamptz NOT NULL DEFAULT now(),
    status          text        NOT NULL DEFAULT 'failed'
                                CHECK (status IN ('failed', 'retrying', 'resolved')),
    resolved_at     timestamptz,
    resolved_by     text,
    CONSTRAINT projection_dead_letters_event_projection_key UNIQUE (event_id, projection_name)
);

-- Listing oldest first, per projection and status.
CREATE INDEX projection_dead_letters_projection_status_idx
    ON __SCHEMA__.projection_dead_letters (projection_name, status, first_failed_at);
CREATE INDEX projection_dead_letters_status_idx
    ON __SCHEMA__.projection_dead_letters (status, first_failed_at);
