-- Filtered reads: a projection reads only the events of its types and tenants (see
-- `EventStore::read_filtered` and `PostgresEventStore`, "Filtered reads").
--
-- `__SCHEMA__.` is replaced by the configured schema (`"name".`) or removed (search_path).
--
-- Reads by type use `projection_events_type_position_idx` (migration 1). A projection limited
-- to some tenants reads one ordered scan per tenant and type of this index. Events without a
-- tenant stay out of it, so a store whose events carry no tenant pays nothing for it on append.
--
-- Building the index locks the event table against appends while it runs (migrations run in
-- one transaction, where `CREATE INDEX CONCURRENTLY` cannot): on a large store, run this
-- migration when appends may wait.
CREATE INDEX projection_events_tenant_type_position_idx
    ON __SCHEMA__.projection_events (tenant_id, event_type, position)
    WHERE tenant_id IS NOT NULL;
