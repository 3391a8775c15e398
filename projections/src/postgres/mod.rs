//! PostgreSQL: the event store, checkpoint and dead-letter repositories, and transactional
//! database projections (cargo feature `postgres`).
