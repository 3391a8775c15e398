-- One append through the sequence design (migration 0006), as PostgresEventStore::append
-- makes it: a call of projection_append with one array per column. A new aggregate (expected
-- version: no stream), :batch events. The store announces the append after the commit, in a
-- statement of its own shared by appends in quick succession: not part of this script.
\set agg random(1, 9223372036854775807)
SELECT actual, first_position, last_position, appended
FROM projections_pgbench_seq.projection_append(
    md5(:agg::text)::uuid, 0,
    (SELECT array_agg(projections_pgbench.event_id()) FROM generate_series(1, :batch)),
    array_fill('Order'::text, ARRAY[:batch::integer]),
    array_fill('order.placed'::text, ARRAY[:batch::integer]),
    array_fill(1, ARRAY[:batch::integer]),
    array_fill('{"order_id":"x","amount":1250,"lines":3}'::text, ARRAY[:batch::integer]),
    array_fill('{}'::text, ARRAY[:batch::integer]),
    array_fill(NULL::uuid, ARRAY[:batch::integer]),
    array_fill(NULL::text, ARRAY[:batch::integer]),
    (SELECT array_agg(gen_random_uuid()) FROM generate_series(1, :batch)),
    array_fill(NULL::uuid, ARRAY[:batch::integer]),
    array_fill(now(), ARRAY[:batch::integer]));
