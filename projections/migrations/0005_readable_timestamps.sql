-- Timestamps the crate can read back: finite, and before 262143-01-01 00:00:00 UTC, the end of
-- chrono's `DateTime<Utc>`. PostgreSQL's `timestamptz` also holds 'infinity', '-infinity' and
-- years up to 294276, which no reader of this crate can represent. Values from Rust are always
-- in range; these checks refuse what other writers (SQL by hand, another application) could
-- store. Only the columns the crate reads are checked.
--
-- `__SCHEMA__.` is replaced by the configured schema (`"name".`) or removed (search_path).
--
-- NOT VALID: the checks apply to every row inserted or updated from now on, without scanning
-- the rows already stored (no long exclusive lock on a large event table, and no failed
-- upgrade because of one old row). An old row that breaks them reads back as an undecodable
-- event (events) or as a storage error (checkpoints, dead letters); once none is left,
-- `VALIDATE CONSTRAINT` makes a check cover every row.
ALTER TABLE __SCHEMA__.projection_events
    ADD CONSTRAINT projection_events_occurred_at_readable
        CHECK (isfinite(occurred_at) AND occurred_at < '262143-01-01 00:00:00+00') NOT VALID,
    ADD CONSTRAINT projection_events_stored_at_readable
        CHECK (isfinite(stored_at) AND stored_at < '262143-01-01 00:00:00+00') NOT VALID;

ALTER TABLE __SCHEMA__.projection_checkpoints
    ADD CONSTRAINT projection_checkpoints_last_processed_at_readable
        CHECK (isfinite(last_processed_at)
               AND last_processed_at < '262143-01-01 00:00:00+00') NOT VALID,
    ADD CONSTRAINT projection_checkpoints_halt_at_readable
        CHECK (isfinite(halt_at) AND halt_at < '262143-01-01 00:00:00+00') NOT VALID;

ALTER TABLE __SCHEMA__.projection_dead_letters
    ADD CONSTRAINT projection_dead_letters_first_failed_at_readable
        CHECK (isfinite(first_failed_at)
               AND first_failed_at < '262143-01-01 00:00:00+00') NOT VALID,
    ADD CONSTRAINT projection_dead_letters_last_failed_at_readable
        CHECK (isfinite(last_failed_at)
               AND last_failed_at < '262143-01-01 00:00:00+00') NOT VALID,
    ADD CONSTRAINT projection_dead_letters_resolved_at_readable
        CHECK (isfinite(resolved_at) AND resolved_at < '262143-01-01 00:00:00+00') NOT VALID;
