-- Deleting a session (signing in again, signing out, the purge) sets its grants' session_id
-- to NULL: without this index each delete read every grant.
CREATE INDEX grants_session ON grants (session_id);
