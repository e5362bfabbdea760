-- 0002_integrations: the registry of task services (Keptn's "uniform").
--
-- One row per integration; its subscriptions (with webhook secrets) live in ``doc``, because
-- they are always read and written together and there are few of them. ``last_seen`` is
-- epoch seconds, written on registration and at most every few seconds on ping.

CREATE TABLE integrations (
    id         text             NOT NULL,
    name       text             NOT NULL,
    doc        jsonb            NOT NULL,
    last_seen  double precision NOT NULL,
    updated_at timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT integrations_pkey PRIMARY KEY (id)
);
