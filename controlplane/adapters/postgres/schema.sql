-- The full current schema, kept equal to the result of applying migrations/ in order
-- (tests/integration/postgres/test_migrations.py compares the two catalogs).
--
-- Read this file to learn the schema; change it only together with a new migration.

-- Written by migrate.py before it applies anything: which migrations a database has.
CREATE TABLE schema_migrations (
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schema_migrations_pkey PRIMARY KEY (name)
);

CREATE TABLE events (
    seq             bigserial        NOT NULL,
    id              text             NOT NULL,
    source          text             NOT NULL,
    type            text             NOT NULL,
    time            text             NOT NULL,
    time_epoch      double precision,
    keptn_context   text             NOT NULL,
    triggered_id    text             NOT NULL DEFAULT '',
    project         text             NOT NULL DEFAULT '',
    stage           text             NOT NULL DEFAULT '',
    service         text             NOT NULL DEFAULT '',
    body            jsonb            NOT NULL,
    stored_at       timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT events_pkey PRIMARY KEY (id)
);

-- Newest-first listings per context, project and type (the read side always names one of
-- them; an index on seq alone would cost every insert and serve no query).
CREATE INDEX events_context_seq_idx ON events (keptn_context, seq);
CREATE INDEX events_project_seq_idx ON events (project, seq);
CREATE INDEX events_type_seq_idx ON events (type, seq);
-- Answers and invalidations name the event they refer to.
CREATE INDEX events_triggered_id_idx ON events (triggered_id) WHERE triggered_id <> '';

-- The transactional outbox: ids of stored events still to be published on NATS. Rows are
-- inserted in the same transaction as the event and deleted once JetStream acknowledged
-- them, so the events table stays insert-only (no row rewrite, no extra WAL per event).
CREATE TABLE outbox (
    seq bigserial NOT NULL,
    id  text      NOT NULL,
    CONSTRAINT outbox_pkey PRIMARY KEY (id)
);

CREATE TABLE executions (
    id            text             NOT NULL,
    project       text             NOT NULL,
    stage         text             NOT NULL,
    service       text             NOT NULL,
    keptn_context text             NOT NULL,
    name          text             NOT NULL,
    state         text             NOT NULL,
    triggered_at  double precision NOT NULL,
    ended_at      double precision,
    open_task_id  text,
    doc           jsonb            NOT NULL,
    updated_at    timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT executions_pkey PRIMARY KEY (id)
);

-- The engine loads the live ones at start; they are few next to the finished ones.
CREATE INDEX executions_live_idx ON executions (triggered_at)
    WHERE state NOT IN ('finished', 'aborted', 'timedOut');
CREATE INDEX executions_project_context_idx ON executions (project, keptn_context, triggered_at);
CREATE INDEX executions_open_task_idx ON executions (open_task_id)
    WHERE open_task_id IS NOT NULL;

CREATE TABLE pauses (
    keptn_context text        NOT NULL,
    stage         text        NOT NULL DEFAULT '',  -- '' pauses the whole context
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pauses_pkey PRIMARY KEY (keptn_context, stage)
);

CREATE TABLE projects (
    name          text             NOT NULL,
    shipyard_yaml text             NOT NULL,
    version       integer          NOT NULL,
    error         text             NOT NULL DEFAULT '',
    origin        text             NOT NULL DEFAULT 'api',
    created_at    double precision NOT NULL,
    updated_at    double precision NOT NULL,
    CONSTRAINT projects_pkey PRIMARY KEY (name),
    CONSTRAINT projects_version_check CHECK (version > 0)
);

CREATE TABLE shipyard_versions (
    name          text             NOT NULL,
    version       integer          NOT NULL,
    shipyard_yaml text             NOT NULL,
    error         text             NOT NULL DEFAULT '',
    origin        text             NOT NULL DEFAULT 'api',
    created_at    double precision NOT NULL,
    CONSTRAINT shipyard_versions_pkey PRIMARY KEY (name, version),
    CONSTRAINT shipyard_versions_name_fkey FOREIGN KEY (name)
        REFERENCES projects (name) ON DELETE CASCADE
);

-- The registry of task services (Keptn's "uniform"); subscriptions live in doc.
CREATE TABLE integrations (
    id         text             NOT NULL,
    name       text             NOT NULL,
    doc        jsonb            NOT NULL,
    last_seen  double precision NOT NULL,
    updated_at timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT integrations_pkey PRIMARY KEY (id)
);

-- Configuration files per project, stage and service (slo.yaml, sli.yaml, ...).
CREATE TABLE resources (
    project    text             NOT NULL,
    stage      text             NOT NULL DEFAULT '',
    service    text             NOT NULL DEFAULT '',
    uri        text             NOT NULL,
    content    text             NOT NULL,
    version    integer          NOT NULL DEFAULT 1,
    updated_at double precision NOT NULL,
    CONSTRAINT resources_pkey PRIMARY KEY (project, stage, service, uri),
    CONSTRAINT resources_project_fkey FOREIGN KEY (project)
        REFERENCES projects (name) ON DELETE CASCADE
);

-- Past evaluations of a service, newest first, for relative criteria.
CREATE INDEX events_evaluations_idx ON events (project, stage, service, seq)
    WHERE type IN ('sh.keptn.event.evaluation.finished', 'sh.keptn.event.evaluate.finished');

CREATE TABLE control_plane_keys (
    name       text        NOT NULL,
    value      bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT control_plane_keys_pkey PRIMARY KEY (name)
);

-- Cron schedules: those defined through the API, when each was first seen, and the claimed
-- slots (one row per fired slot: the primary key lets exactly one replica claim it).
CREATE TABLE schedules (
    project    text             NOT NULL,
    name       text             NOT NULL,
    doc        jsonb            NOT NULL,
    updated_at double precision NOT NULL,
    CONSTRAINT schedules_pkey PRIMARY KEY (project, name),
    CONSTRAINT schedules_project_fkey FOREIGN KEY (project)
        REFERENCES projects (name) ON DELETE CASCADE
);

CREATE TABLE schedule_state (
    project     text             NOT NULL,
    schedule    text             NOT NULL,
    fingerprint text             NOT NULL,
    first_seen  double precision NOT NULL,
    CONSTRAINT schedule_state_pkey PRIMARY KEY (project, schedule),
    CONSTRAINT schedule_state_project_fkey FOREIGN KEY (project)
        REFERENCES projects (name) ON DELETE CASCADE
);

CREATE TABLE schedule_slots (
    project       text             NOT NULL,
    schedule      text             NOT NULL,
    slot          double precision NOT NULL,
    keptn_context text             NOT NULL,
    event         jsonb            NOT NULL,
    claimed_by    text             NOT NULL,
    claimed_at    timestamptz      NOT NULL DEFAULT now(),
    published     boolean          NOT NULL DEFAULT false,
    CONSTRAINT schedule_slots_pkey PRIMARY KEY (project, schedule, slot),
    CONSTRAINT schedule_slots_project_fkey FOREIGN KEY (project)
        REFERENCES projects (name) ON DELETE CASCADE
);

CREATE INDEX schedule_slots_unpublished_idx ON schedule_slots (claimed_at) WHERE NOT published;
