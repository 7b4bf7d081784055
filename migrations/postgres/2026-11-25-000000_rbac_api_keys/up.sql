-- Groups: a group carries roles, and its members hold them. A user's roles are their own and
-- those of their groups.
CREATE TABLE groups (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL
);

CREATE TABLE group_roles (
    group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    role_id  TEXT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, role_id)
);
CREATE INDEX group_roles_role ON group_roles (role_id);

CREATE TABLE group_members (
    group_id   TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);

-- Finer admin permissions are built-in roles too.
INSERT INTO roles (id, name, description, builtin, created_at)
VALUES ('00000000-0000-7000-8000-000000000002', 'admin:read', 'Read everything in the admin UI and API, change nothing', TRUE, 0);
INSERT INTO roles (id, name, description, builtin, created_at)
VALUES ('00000000-0000-7000-8000-000000000003', 'auditor', 'Read the audit log', TRUE, 0);

-- Clients configured to receive the roles claim without asking for the roles scope.
ALTER TABLE clients ADD COLUMN roles_claim BOOLEAN NOT NULL DEFAULT FALSE;

-- Who created an API key (the owner, or an administrator for a service account).
ALTER TABLE api_keys ADD COLUMN created_by TEXT;
CREATE INDEX api_keys_created ON api_keys (created_at);

-- Pruning removes the oldest audit records; the checkpoint keeps the last removed record's
-- place and hash, so the rest of the chain still verifies from it.
CREATE TABLE audit_checkpoints (
    seq        BIGINT PRIMARY KEY,
    hash       TEXT NOT NULL,
    pruned     BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX audit_events_actor ON audit_events (actor);
CREATE INDEX audit_events_subject ON audit_events (subject);
