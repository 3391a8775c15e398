-- Appends that overlap: positions from a sequence, and a read horizon that only appends in
-- flight can hold back (see docs/adr/0011-appends-that-overlap.md).
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
-- `projection_append(...)` is the store's append, in one function so that its steps run in
-- order, and so that PostgreSQL plans its few simple statements once per connection rather
-- than one large statement at every call. An insert that leaves out the position gets one from
-- `projection_next_position()`, which registers the transaction first: rows written by hand
-- are as safe as appends. A writer that supplies positions itself, or calls `nextval` on the
-- sequence directly, is not protected.

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

-- The store's append: checks the expected version (NULL: any) against the statement's
-- snapshot, registers the transaction, takes one position per event in event order and inserts
-- the events with consecutive aggregate versions. `appended` is 0, and nothing is registered or
-- taken, when the version does not match; an append that committed the same versions since
-- the snapshot makes the insert fail on projection_events_stream_version_key.
CREATE FUNCTION __SCHEMA__.projection_append(
    p_aggregate_id uuid,
    p_expected_version bigint,
    p_event_ids uuid[],
    p_aggregate_types text[],
    p_event_types text[],
    p_event_versions integer[],
    p_payloads text[],
    p_metadata text[],
    p_tenant_ids uuid[],
    p_actor_ids text[],
    p_correlation_ids uuid[],
    p_causation_ids uuid[],
    p_occurred_at timestamptz[],
    OUT actual bigint,
    OUT first_position bigint,
    OUT last_position bigint,
    OUT appended bigint
)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    SELECT coalesce(max(aggregate_version), 0) INTO actual
    FROM __SCHEMA__.projection_events
    WHERE aggregate_id = p_aggregate_id;
    appended := 0;
    IF p_expected_version IS NOT NULL AND actual <> p_expected_version THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock_shared(
        '__SCHEMA__.projection_events_position_seq'::regclass::oid::bigint::bit(32)::integer,
        (s.last_value + CASE WHEN s.is_called THEN 1 ELSE 0 END)::bit(32)::integer
    )
    FROM __SCHEMA__.projection_events_position_seq s;
    WITH inserted AS (
        INSERT INTO __SCHEMA__.projection_events (
            position, event_id, aggregate_id, aggregate_type, aggregate_version, event_type,
            event_version, payload, metadata, tenant_id, actor_id, correlation_id,
            causation_id, occurred_at
        )
        SELECT nextval('__SCHEMA__.projection_events_position_seq'), e.event_id,
               p_aggregate_id, e.aggregate_type, actual + e.ordinal, e.event_type,
               e.event_version, e.payload::jsonb, e.metadata::jsonb, e.tenant_id, e.actor_id,
               e.correlation_id, e.causation_id, e.occurred_at
        FROM unnest(
            p_event_ids, p_aggregate_types, p_event_types, p_event_versions, p_payloads,
            p_metadata, p_tenant_ids, p_actor_ids, p_correlation_ids, p_causation_ids,
            p_occurred_at
        ) WITH ORDINALITY AS e(
            event_id, aggregate_type, event_type, event_version, payload, metadata, tenant_id,
            actor_id, correlation_id, causation_id, occurred_at, ordinal
        )
        -- Volatile functions of the select list run after the sort: positions follow the
        -- events' order.
        ORDER BY e.ordinal
        RETURNING position
    )
    SELECT min(position), max(position), count(*)
    INTO first_position, last_position, appended
    FROM inserted;
END
$$;
