\set agg random(1, 9223372036854775807)
SELECT * FROM projections_pgbench.fn_append(
    md5(:agg::text)::uuid, 0,
    (SELECT array_agg(gen_random_uuid()) FROM generate_series(1, :batch)),
    array_fill('Order'::text, ARRAY[:batch::integer]), array_fill('order.placed'::text, ARRAY[:batch::integer]),
    array_fill(1, ARRAY[:batch::integer]),
    array_fill('{"order_id":"x","amount":1250,"lines":3}'::text, ARRAY[:batch::integer]),
    array_fill('{}'::text, ARRAY[:batch::integer]), array_fill(NULL::uuid, ARRAY[:batch::integer]),
    array_fill(NULL::text, ARRAY[:batch::integer]),
    (SELECT array_agg(gen_random_uuid()) FROM generate_series(1, :batch)),
    array_fill(NULL::uuid, ARRAY[:batch::integer]), array_fill(now(), ARRAY[:batch::integer]));
