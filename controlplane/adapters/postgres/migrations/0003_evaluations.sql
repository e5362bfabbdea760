-- 0003_evaluations: configuration files for quality gates, and a fast path to past results.
--
-- ``resources`` is Keptn's resource service without git: one text file per project, stage
-- and service (empty stage and service for a project-level file, empty service for a
-- stage-level one), versioned by a counter. Files go with their project.
--
-- Past evaluations are the stored ``evaluation.finished`` events themselves (the event
-- store is the history, as Keptn's datastore was); the partial index below lets a gate find
-- the newest ones of a service without walking the project's other events.

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

CREATE INDEX events_evaluations_idx ON events (project, stage, service, seq)
    WHERE type IN ('sh.keptn.event.evaluation.finished', 'sh.keptn.event.evaluate.finished');
