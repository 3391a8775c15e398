-- Halts: a projection paused by an operator or stopped by a failure, kept with its checkpoint
-- so that it survives a restart. All `halt_*` columns are null while the projection runs.
--
-- `__SCHEMA__.` is replaced by the configured schema (`"name".`) or removed (search_path).
--
-- paused:  halt_reason (the operator's reason) and halt_at; nothing else.
-- stopped: halt_reason (the last error, or the operator's reason), halt_at, halt_attempts and
--          halt_failure_kind; halt_position, halt_event_id and halt_event_type when an event
--          failed (a wrong setup may stop a projection before any event).
ALTER TABLE __SCHEMA__.projection_checkpoints
    ADD COLUMN halt_state        text
        CONSTRAINT projection_checkpoints_halt_state_check
        CHECK (halt_state IN ('paused', 'stopped')),
    ADD COLUMN halt_reason       text,
    ADD COLUMN halt_at           timestamptz,
    ADD COLUMN halt_position     bigint
        CONSTRAINT projection_checkpoints_halt_position_check
        CHECK (halt_position >= 0),
    ADD COLUMN halt_event_id     uuid,
    ADD COLUMN halt_event_type   text,
    ADD COLUMN halt_attempts     integer
        CONSTRAINT projection_checkpoints_halt_attempts_check
        CHECK (halt_attempts >= 0),
    ADD COLUMN halt_failure_kind text
        CONSTRAINT projection_checkpoints_halt_failure_kind_check
        CHECK (halt_failure_kind IN ('event', 'infrastructure', 'setup')),
    ADD CONSTRAINT projection_checkpoints_halt_consistent CHECK (
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
    );
