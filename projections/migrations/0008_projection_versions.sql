-- Versions of blue/green projections: which version of each projection readers see through
-- the stable views (`serving`, at most one), which are being built, replaced or retired.
--
-- `__SCHEMA__.` is replaced by the configured schema (`"name".`) or removed (search_path).
CREATE TABLE __SCHEMA__.projection_versions (
    projection_name text        NOT NULL,
    version         integer     NOT NULL CHECK (version >= 1),
    state           text        NOT NULL
        CHECK (state IN ('building', 'serving', 'replaced', 'retired')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    promoted_at     timestamptz,
    retired_at      timestamptz,
    PRIMARY KEY (projection_name, version)
);
CREATE UNIQUE INDEX projection_versions_one_serving
    ON __SCHEMA__.projection_versions (projection_name) WHERE state = 'serving';
