-- 0004_schedules: cron schedules defined through the API, and the durable state of firing.
--
-- ``schedule_slots`` is how several scheduler replicas agree: a replica fires a slot only
-- after inserting its row, and the primary key lets exactly one insert win. The row keeps
-- the trigger event it publishes, so a replica that dies between the claim and the publish
-- leaves work another one finishes (``published`` still false) with the same event id.
-- ``schedule_state`` remembers when each schedule, with its current expression and time
-- zone (``fingerprint``), was first seen: slots before that never fire, so a restart or a
-- new schedule does not back-fill. All three go with their project.

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

-- Claims a crashed replica left unpublished; normally empty.
CREATE INDEX schedule_slots_unpublished_idx ON schedule_slots (claimed_at) WHERE NOT published;
