/*
 * audit_event.c
 *	  Events that are not row changes: donatello.audit_event() for
 *	  applications (the current principal's organization),
 *	  donatello.audit_system_event() for donatello's own SECURITY DEFINER
 *	  code (an explicit organization), and the trigger that copies each
 *	  security event of the credentials part into the trail.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/inet.h"
#include "utils/jsonb.h"
#include "utils/rel.h"

#include "donatello.h"
#include "audit/audit.h"

PG_FUNCTION_INFO_V1(donatello_audit_event);
PG_FUNCTION_INFO_V1(donatello_audit_system_event);
PG_FUNCTION_INFO_V1(donatello_audit_security_event);

/* Raise DNV01 unless action is 1-200 characters of letters, digits, '.', '_', '-', ':'. */
static void
check_action(const char *action)
{
	const char *p;
	size_t		len = strlen(action);
	bool		ok = len > 0 && len <= 200;

	for (p = action; ok && *p; p++)
		ok = isalnum((unsigned char) *p) || *p == '.' || *p == '_' || *p == '-' || *p == ':';
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("invalid audit action \"%s\"", action),
				 errdetail("An action is 1 to 200 letters, digits, dots, underscores, hyphens or colons."),
				 errhint("Name events like \"invoice.approve\".")));
}

/* Fill action, resource and details from the SQL arguments starting at first. */
static void
event_from_args(FunctionCallInfo fcinfo, int first, AuditRecord *rec)
{
	if (PG_ARGISNULL(first))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("an audit event needs an action")));
	rec->action = TextDatumGetCString(PG_GETARG_DATUM(first));
	check_action(rec->action);
	rec->resource_type = PG_ARGISNULL(first + 1) ? NULL : TextDatumGetCString(PG_GETARG_DATUM(first + 1));
	rec->resource_id = PG_ARGISNULL(first + 2) ? NULL : TextDatumGetCString(PG_GETARG_DATUM(first + 2));
	if (rec->resource_type && strlen(rec->resource_type) > 200)
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("audit resource type is longer than 200 characters")));
	if (!PG_ARGISNULL(first + 3))
	{
		Jsonb	   *details = PG_GETARG_JSONB_P(first + 3);

		if (!JB_ROOT_IS_OBJECT(details) || JB_ROOT_IS_SCALAR(details))
			ereport(ERROR,
					(errcode(ERRCODE_DN_INVALID_ARGUMENT),
					 errmsg("audit event details must be a JSON object"),
					 errhint("Pass details such as '{\"amount\": 12}'::jsonb.")));
		rec->details = details;
	}
}

/* donatello.audit_event(action, resource_type, resource_id, details) returns the record id */
Datum
donatello_audit_event(PG_FUNCTION_ARGS)
{
	AuditRecord rec;

	audit_record_init(&rec);
	event_from_args(fcinfo, 0, &rec);
	audit_record_set_actor(&rec, true);
	PG_RETURN_INT64(audit_record_insert(&rec));
}

/* donatello.audit_system_event(org_id, action, resource_type, resource_id, details) */
Datum
donatello_audit_system_event(PG_FUNCTION_ARGS)
{
	AuditRecord rec;

	audit_record_init(&rec);
	event_from_args(fcinfo, 1, &rec);
	audit_record_set_actor(&rec, PG_ARGISNULL(0));
	if (!PG_ARGISNULL(0))
		memcpy(&rec.org_id, PG_GETARG_UUID_P(0), sizeof(pg_uuid_t));
	PG_RETURN_INT64(audit_record_insert(&rec));
}

/* A column of the new row by name, or NULL. */
static Datum
new_column(TriggerData *td, const char *name, bool *isnull)
{
	TupleDesc	desc = RelationGetDescr(td->tg_relation);
	int			attnum = SPI_fnumber(desc, name);

	if (attnum <= 0)
		elog(ERROR, "security_events has no column \"%s\"", name);
	return heap_getattr(td->tg_trigtuple, attnum, desc, isnull);
}

/*
 * donatello.audit_security_event(): AFTER INSERT on security_events. The
 * record's action is "security.<event>", its resource the user; the event's
 * address and user agent are the record's (deferred events are written by
 * the maintenance worker, outside the request).
 */
Datum
donatello_audit_security_event(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	AuditRecord rec;
	Datum		d;
	bool		isnull;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BY_INSERT(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		elog(ERROR, "donatello.audit_security_event() must be an INSERT row trigger");

	audit_record_init(&rec);
	audit_record_set_actor(&rec, false);
	d = new_column(td, "org_id", &isnull);
	memcpy(&rec.org_id, DatumGetUUIDP(d), sizeof(pg_uuid_t));
	d = new_column(td, "event", &isnull);
	rec.action = psprintf("security.%s", TextDatumGetCString(d));
	rec.resource_type = "user";
	d = new_column(td, "user_id", &isnull);
	rec.resource_id = isnull ? NULL : DatumGetCString(DirectFunctionCall1(uuid_out, d));
	d = new_column(td, "ip", &isnull);
	if (!isnull)
		rec.client_ip = DatumGetCString(DirectFunctionCall1(inet_out, d));
	d = new_column(td, "user_agent", &isnull);
	if (!isnull)
		rec.user_agent = TextDatumGetCString(d);
	d = new_column(td, "details", &isnull);
	rec.details = isnull ? NULL : DatumGetJsonbP(d);
	audit_record_insert(&rec);
	return PointerGetDatum(td->tg_trigtuple);
}
