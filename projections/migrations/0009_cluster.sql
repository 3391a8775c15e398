-- Several nodes sharing projections: who is alive, who owns what, and the fencing tokens
-- that keep a node that lost ownership from ever committing again (ADR 0015).
--
-- `__SCHEMA__.` is replaced by the configured schema (`"name".`) or removed (search_path).

-- A node announces itself and renews `expires_at` every heartbeat; a node whose row has
-- expired is gone, and its leases are free to take once they expire too.
CREATE TABLE __SCHEMA__.projection_nodes (
    node_id      text        PRIMARY KEY,
    incarnation  uuid        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    host         text,
    pid          integer
);

-- One lease per projection (or partition): its owner renews `expires_at` every heartbeat.
-- Renewals touch only this table, so they never wait for a batch in flight.
CREATE TABLE __SCHEMA__.projection_leases (
    lease_name  text        PRIMARY KEY,
    owner       text,
    token       bigint      NOT NULL DEFAULT 0,
    acquired_at timestamptz,
    expires_at  timestamptz,
    released_at timestamptz
);

-- The fencing token of each lease, as the owner's batches check it: every transactional batch
-- reads its row `FOR SHARE` in the batch's transaction, and a takeover updates the row, so a
-- takeover waits for a batch in flight and a batch after a takeover sees the new token.
CREATE TABLE __SCHEMA__.projection_fences (
    lease_name text   PRIMARY KEY,
    owner      text   NOT NULL,
    token      bigint NOT NULL
);
