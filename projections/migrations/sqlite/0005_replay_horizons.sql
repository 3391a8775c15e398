-- Replay horizons: the store's head when a projection last started from nothing (its first
-- start, or a rebuild). Events at or below it are replayed, and live-only handlers do not run
-- for them. Null when the projection has none; deleted with the checkpoint row.
ALTER TABLE projection_checkpoints
    ADD COLUMN replay_until INTEGER CHECK (replay_until >= 0);
