-- Checkpoints: how far each projection has got, as a global position.
--
-- `__SCHEMA__.` is replaced by the configured schema (`"name".`) or removed (search_path).
CREATE TABLE __SCHEMA__.projection_checkpoints (
    projection_name   text        PRIMARY KEY,
    position          bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    last_event_id     uuid,
    last_event_type   text,
    last_processed_at timestamptz,
    events_processed  bigint      NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
