DROP INDEX grants_session;
