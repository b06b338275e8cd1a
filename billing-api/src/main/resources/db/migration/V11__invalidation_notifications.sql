-- Cache invalidation across replicas (issue 14): every change to an API key row tells every
-- server listening on channel gpumeter_invalidate, after the change commits, so each drops that
-- key from its Caffeine cache (billing.db.InvalidationListener -> keys.ApiKeys). The payload is
-- "<kind>:<id>"; other kinds (accounts, prices) can use the same channel.
CREATE FUNCTION notify_api_key_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('gpumeter_invalidate', 'api_key:' || encode(OLD.key_hash, 'hex'));
  RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_notify_change
AFTER UPDATE OR DELETE ON api_keys
FOR EACH ROW EXECUTE FUNCTION notify_api_key_change();
