/*
 * extension.c
 *	  Facts about the installed extension that C code needs: whether it exists
 *	  in the current database and which role owns its objects.
 *
 * C code that reads donatello's tables on behalf of a caller (the permission
 * engine, background workers) runs those reads as the owner, so that
 * row-level security and the caller's own grants cannot change the answer.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "donatello.h"

/* true when CREATE EXTENSION donatello has run in the current database */
bool
donatello_extension_exists(void)
{
	return OidIsValid(get_extension_oid("donatello", true));
}

/*
 * The role that owns donatello's tables (whoever ran CREATE EXTENSION).
 * Errors if the extension is not installed in this database.
 */
Oid
donatello_owner(void)
{
	Oid			nsp = get_namespace_oid("donatello", true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid("organizations", nsp) : InvalidOid;
	HeapTuple	tuple;
	Oid			owner;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"donatello\" is not installed in database \"%s\"",
						get_database_name(MyDatabaseId)),
				 errhint("Run CREATE EXTENSION donatello.")));

	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

/*
 * Run as the owner until donatello_end_as_owner(); errors unwind through
 * transaction abort, which restores the previous user.
 */
void
donatello_begin_as_owner(DonatelloSavedUser *saved)
{
	GetUserIdAndSecContext(&saved->userid, &saved->sec_context);
	SetUserIdAndSecContext(donatello_owner(),
						   saved->sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
}

/* Return to the user saved by donatello_begin_as_owner(). */
void
donatello_end_as_owner(const DonatelloSavedUser *saved)
{
	SetUserIdAndSecContext(saved->userid, saved->sec_context);
}
