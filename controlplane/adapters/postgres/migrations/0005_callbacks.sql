-- 0005_callbacks: keys the control plane makes for itself and must keep across restarts.
--
-- The callback links of tasks are signed with a key that every replica must share and that
-- outlives a restart (a link sent an hour ago must still work). Without a configured key
-- the first server to start makes one here; the others read it.

CREATE TABLE control_plane_keys (
    name       text        NOT NULL,
    value      bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT control_plane_keys_pkey PRIMARY KEY (name)
);
