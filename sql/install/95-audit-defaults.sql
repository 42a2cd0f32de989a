-- Audit trail defaults: donatello's own tables are audited from the start.
-- (After every part's tables exist; see docs/audit.md for what is audited,
-- what is left out and why.)
--
-- Columns named like a password hash, secret, token or sealed key are always
-- masked (src/audit/audit_trigger.c); the exclusions below leave out counters
-- and timestamps that change on every login or API call and say nothing an
-- auditor needs (the security events record those moments).

SELECT donatello.enable_audit('donatello.organizations');
SELECT donatello.enable_audit('donatello.departments');
SELECT donatello.enable_audit('donatello.users');
SELECT donatello.enable_audit('donatello.roles');
SELECT donatello.enable_audit('donatello.role_permissions');
SELECT donatello.enable_audit('donatello.user_roles');
SELECT donatello.enable_audit('donatello.permission_exceptions');
SELECT donatello.enable_audit('donatello.user_credentials',
    exclude_columns => '{failed_logins,mfa_failures,last_login_at}');
SELECT donatello.enable_audit('donatello.password_history');
SELECT donatello.enable_audit('donatello.totp_credentials', exclude_columns => '{last_step}');
SELECT donatello.enable_audit('donatello.backup_codes');
SELECT donatello.enable_audit('donatello.sessions', exclude_columns => '{refreshed_at}');
SELECT donatello.enable_audit('donatello.api_keys', exclude_columns => '{last_used_at,usage_count}');
SELECT donatello.enable_audit('donatello.webhook_endpoints',
    exclude_columns => '{failing_since,last_success_at}');
SELECT donatello.enable_audit('donatello.blocked_terms');
SELECT donatello.enable_audit('donatello.providers');
SELECT donatello.enable_audit('donatello.models');
SELECT donatello.enable_audit('donatello.department_generation_settings');
-- Budgets: limits, modes and locks (the balances move on every reservation and
-- are recorded, with every reservation, in the append-only budget_ledger).
SELECT donatello.enable_audit('donatello.budgets',
    exclude_columns => '{pool_micros,next_watch_micros,updated_at}');
-- Generation jobs: who asked for what and how it ended (the ranking and the
-- request policy are kept with the job); images without their bytes.
SELECT donatello.enable_audit('donatello.generation_jobs',
    exclude_columns => '{ranking,policy,current_request_id,updated_at}');
SELECT donatello.enable_audit('donatello.images', exclude_columns => '{data}');

-- Role grants and revokes, and user deactivation, also as named events
-- (role.grant, role.revoke, user.deactivate) next to the row records.
CREATE FUNCTION donatello.audit_named_events() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF TG_TABLE_NAME = 'user_roles' AND TG_OP = 'INSERT' THEN
        PERFORM donatello.audit_system_event(NEW.org_id, 'role.grant', 'user', NEW.user_id::text,
            jsonb_build_object('role', (SELECT r.name FROM donatello.roles r WHERE r.id = NEW.role_id),
                               'department_id', NEW.department_id, 'grant_id', NEW.id));
        RETURN NEW;
    ELSIF TG_TABLE_NAME = 'user_roles' AND TG_OP = 'DELETE' THEN
        PERFORM donatello.audit_system_event(OLD.org_id, 'role.revoke', 'user', OLD.user_id::text,
            jsonb_build_object('role', (SELECT r.name FROM donatello.roles r WHERE r.id = OLD.role_id),
                               'department_id', OLD.department_id, 'grant_id', OLD.id));
        RETURN OLD;
    ELSIF TG_TABLE_NAME = 'users' AND OLD.active AND NOT NEW.active THEN
        PERFORM donatello.audit_system_event(NEW.org_id, 'user.deactivate', 'user', NEW.id::text,
            jsonb_build_object('email', NEW.email));
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION donatello.audit_named_events() IS
    'writes role.grant, role.revoke and user.deactivate events into the audit trail';
CREATE TRIGGER audit_named_events AFTER INSERT OR DELETE ON donatello.user_roles
    FOR EACH ROW EXECUTE FUNCTION donatello.audit_named_events();
CREATE TRIGGER audit_named_events AFTER UPDATE OF active ON donatello.users
    FOR EACH ROW EXECUTE FUNCTION donatello.audit_named_events();
