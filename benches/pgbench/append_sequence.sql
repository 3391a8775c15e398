-- One append through the sequence design (migration 0006, the statement of
-- PostgresEventStore::append): a new aggregate (expected version: no stream), :batch events.
-- The append registers itself with a shared advisory lock whose key holds a lower bound of
-- the positions it will take, then takes positions from the sequence; readers stop before
-- the lowest registered bound. The store announces the append after the commit, in a
-- statement of its own shared by appends in quick succession: not part of this script.
\set agg random(1, 9223372036854775807)
WITH input AS (
    SELECT gen_random_uuid() AS event_id, 'Order' AS aggregate_type,
           'order.placed' AS event_type, 1 AS event_version,
           '{"order_id":"x","amount":1250,"lines":3}' AS payload, '{}' AS metadata,
           NULL::uuid AS tenant_id, NULL::text AS actor_id, gen_random_uuid() AS correlation_id,
           NULL::uuid AS causation_id, now() AS occurred_at, g AS ordinal
    FROM generate_series(1, :batch) g
),
current_version AS (
    SELECT coalesce(max(aggregate_version), 0) AS version
    FROM projections_pgbench.sequence_events WHERE aggregate_id = md5(:agg::text)::uuid
),
checked AS (SELECT version FROM current_version WHERE version = 0),
registered AS (
    SELECT pg_advisory_xact_lock_shared(
               'projections_pgbench.sequence_events_position_seq'::regclass::oid::bigint::bit(32)::integer,
               (s.last_value + CASE WHEN s.is_called THEN 1 ELSE 0 END)::bit(32)::integer
           ) IS NULL AS unlocked
    FROM projections_pgbench.sequence_events_position_seq s
    WHERE EXISTS (SELECT FROM checked)
),
allocated AS (
    SELECT position, row_number() OVER (ORDER BY position) AS ordinal
    FROM (SELECT nextval('projections_pgbench.sequence_events_position_seq') AS position
          FROM registered CROSS JOIN generate_series(1, :batch)
          WHERE NOT registered.unlocked) taken
),
inserted AS (
    INSERT INTO projections_pgbench.sequence_events (
        position, event_id, aggregate_id, aggregate_type, aggregate_version, event_type,
        event_version, payload, metadata, tenant_id, actor_id, correlation_id, causation_id,
        occurred_at)
    SELECT a.position, e.event_id, md5(:agg::text)::uuid, e.aggregate_type,
           checked.version + e.ordinal, e.event_type, e.event_version, e.payload::jsonb,
           e.metadata::jsonb, e.tenant_id, e.actor_id, e.correlation_id, e.causation_id,
           e.occurred_at
    FROM checked CROSS JOIN input e JOIN allocated a ON a.ordinal = e.ordinal
    RETURNING position
)
SELECT (SELECT min(position) FROM inserted), (SELECT count(*) FROM inserted);
