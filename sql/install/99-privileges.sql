-- Nothing reaches PUBLIC by accident: functions are created executable by
-- PUBLIC, so take that back here, after every part has made its own grants to
-- the donatello_* roles.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA donatello FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA donatello_api FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA donatello FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA donatello_api FROM PUBLIC;
