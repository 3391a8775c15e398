-- Appends that overlap: positions from a sequence, and a read horizon that only appends in
-- flight can hold back (see docs/adr/0010-appends-that-overlap.md).
--
-- `__SCHEMA__.` is replaced by the configured schema (`"name".`) or removed (search_path).
--
-- Until now positions came from the counter row of `projection_positions`, locked by each
-- append until it committed, so appends queued behind each other's commit; and readers
-- stopped at the oldest transaction running anywhere in the cluster. Now:
--
-- * Positions come from `projection_events_position_seq` (CACHE 1, so no session keeps a
--   block of numbers below what the sequence shows). A failed append leaves a gap.
-- * Before it takes a position, a transaction that writes events registers itself: it takes
--   a shared transaction-level advisory lock whose first key is the sequence's oid and whose
--   second key is the low 32 bits of the next value the sequence would give at that moment, a
--   lower bound of every position it will take. The lock goes away when the transaction ends.
-- * A reader reads `last_value`, then the registered bounds from `pg_locks`, and reads only
--   positions below the smallest of them (and at or below `last_value`). Every position below
--   that cut is committed or never will be.
--
-- An insert that leaves out the position gets one from `projection_next_position()`, which
-- registers the transaction first: rows written by hand are as safe as appends. A writer that
-- supplies positions itself, or calls `nextval` on the sequence directly, is not protected.

-- Existing appends hold the counter row; wait for them, then carry the counter over.
LOCK TABLE __SCHEMA__.projection_positions IN ACCESS EXCLUSIVE MODE;

CREATE SEQUENCE __SCHEMA__.projection_events_position_seq
    AS bigint MINVALUE 1 CACHE 1
    OWNED BY __SCHEMA__.projection_events.position;

SELECT setval('__SCHEMA__.projection_events_position_seq', greatest(last, 1), last > 0)
FROM (
    SELECT greatest(
        (SELECT max(position) FROM __SCHEMA__.projection_positions),
        (SELECT max(position) FROM __SCHEMA__.projection_events),
        0
    ) AS last
) carried;

DROP TABLE __SCHEMA__.projection_positions;

-- The horizon no longer looks at transaction ids.
DROP INDEX __SCHEMA__.projection_events_txid_idx;

-- The next position, for an insert that leaves it out: registers the transaction (once; the
-- setting and the lock both end with it, and both go when a savepoint around them rolls back),
-- then takes the position.
CREATE FUNCTION __SCHEMA__.projection_next_position() RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    positions constant regclass := '__SCHEMA__.projection_events_position_seq';
    marker constant text := 'projections.registered_' || positions::oid::text;
BEGIN
    IF coalesce(current_setting(marker, true), '') = '' THEN
        PERFORM pg_advisory_xact_lock_shared(
            positions::oid::bigint::bit(32)::integer,
            (s.last_value + CASE WHEN s.is_called THEN 1 ELSE 0 END)::bit(32)::integer
        )
        FROM __SCHEMA__.projection_events_position_seq s;
        PERFORM set_config(marker, 'on', true);
    END IF;
    RETURN nextval(positions);
END
$$;

ALTER TABLE __SCHEMA__.projection_events
    ALTER COLUMN position SET DEFAULT __SCHEMA__.projection_next_position();
