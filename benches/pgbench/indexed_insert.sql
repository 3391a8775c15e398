-- The second baseline: :batch rows inserted into a table with a sequence, same columns,
-- constraints and indexes as the event table.
\set agg random(1, 9223372036854775807)
INSERT INTO projections_pgbench.indexed_events (
    event_id, aggregate_id, aggregate_type, aggregate_version, event_type, event_version,
    payload, metadata, tenant_id, actor_id, correlation_id, causation_id, occurred_at)
SELECT projections_pgbench.event_id(), md5(:agg::text)::uuid, 'Order', g, 'order.placed', 1,
       '{"order_id":"x","amount":1250,"lines":3}'::jsonb, '{}'::jsonb, NULL, NULL,
       gen_random_uuid(), NULL, now()
FROM generate_series(1, :batch) g;
