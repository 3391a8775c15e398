-- One append through the counter design (the statement of migrations 0001..0005): a new
-- aggregate (expected version: no stream), :batch events, announced with pg_notify.
\set agg random(1, 9223372036854775807)
WITH input AS (
    SELECT projections_pgbench.event_id() AS event_id, 'Order' AS aggregate_type,
           'order.placed' AS event_type, 1 AS event_version,
           '{"order_id":"x","amount":1250,"lines":3}' AS payload, '{}' AS metadata,
           NULL::uuid AS tenant_id, NULL::text AS actor_id, gen_random_uuid() AS correlation_id,
           NULL::uuid AS causation_id, now() AS occurred_at, g AS ordinal
    FROM generate_series(1, :batch) g
),
current_version AS (
    SELECT coalesce(max(aggregate_version), 0) AS version
    FROM projections_pgbench_counter.projection_events WHERE aggregate_id = md5(:agg::text)::uuid
),
checked AS (SELECT version FROM current_version WHERE version = 0),
allocated AS (
    UPDATE projections_pgbench_counter.projection_positions SET position = position + :batch
    WHERE EXISTS (SELECT FROM checked)
    RETURNING position - :batch AS base
),
inserted AS (
    INSERT INTO projections_pgbench_counter.projection_events (
        position, event_id, aggregate_id, aggregate_type, aggregate_version, event_type,
        event_version, payload, metadata, tenant_id, actor_id, correlation_id, causation_id,
        occurred_at)
    SELECT allocated.base + e.ordinal, e.event_id, md5(:agg::text)::uuid, e.aggregate_type,
           checked.version + e.ordinal, e.event_type, e.event_version, e.payload::jsonb,
           e.metadata::jsonb, e.tenant_id, e.actor_id, e.correlation_id, e.causation_id,
           e.occurred_at
    FROM allocated CROSS JOIN checked CROSS JOIN input e
    RETURNING position
),
notified AS (
    SELECT pg_notify('projection_events_appended', 'projections_pgbench_counter:' || max(position)::text) FROM inserted HAVING count(*) > 0
)
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM notified);
