-- Replay horizons: the store's head when a projection last started from nothing (its first
-- start, or a rebuild). Events at or below it are replayed, and live-only handlers do not run
-- for them. Null when the projection has none; deleted with the checkpoint row.
--
-- `__SCHEMA__.` is replaced by the configured schema (`"name".`) or removed (search_path).
ALTER TABLE __SCHEMA__.projection_checkpoints
    ADD COLUMN replay_until bigint
        CONSTRAINT projection_checkpoints_replay_until_check
        CHECK (replay_until >= 0);
