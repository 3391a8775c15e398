-- Versions of blue/green projections: which version of each projection readers see through
-- the stable views (`serving`, at most one), which are being built, replaced or retired, and
-- the tables each version created (comma-separated), which the views are made over.
--
-- Times are integer microseconds since 1970-01-01 00:00:00 UTC.
CREATE TABLE projection_versions (
    projection_name TEXT    NOT NULL,
    version         INTEGER NOT NULL CHECK (version >= 1),
    state           TEXT    NOT NULL
        CHECK (state IN ('building', 'serving', 'replaced', 'retired')),
    tables          TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    promoted_at     INTEGER,
    retired_at      INTEGER,
    PRIMARY KEY (projection_name, version)
) STRICT;
CREATE UNIQUE INDEX projection_versions_one_serving
    ON projection_versions (projection_name) WHERE state = 'serving';
