/*
 * rbac_invalidate.c
 *	  Keep the permission cache honest: a statement trigger on every RBAC
 *	  table marks the transaction, and a transaction callback bumps the
 *	  cache generation once the commit is visible to other sessions.
 *
 * Visibility contract (proved by test/isolation/specs/rbac_revoke.spec):
 *	- the changing transaction sees its change at its very next check: a
 *	  marked transaction bypasses every cache;
 *	- other sessions see it right after commit, never before: the callback
 *	  runs after the commit became visible (XACT_EVENT_COMMIT follows
 *	  ProcArrayEndTransaction), and any entry compiled from an older snapshot
 *	  carries an older generation.
 * A prepared transaction could commit from another backend, out of reach of
 * this callback, so PREPARE TRANSACTION of a marked transaction is refused.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/trigger.h"

#include "donatello.h"
#include "rbac/rbac.h"

PG_FUNCTION_INFO_V1(donatello_rbac_invalidate);

static bool rbac_xact_changed = false;	/* RBAC data changed */
static bool rbac_xact_inserted = false; /* users or departments inserted */

/* Has the current transaction changed RBAC data (or inserted users or departments)? */
bool
rbac_changed_in_transaction(void)
{
	return rbac_xact_changed || rbac_xact_inserted;
}

/*
 * Statement trigger on RBAC tables: remember the change for this transaction.
 * With the argument 'insert' (on users and departments), the change is an
 * insert, which only invalidates remembered unknown ids.
 */
Datum
donatello_rbac_invalidate(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("donatello.rbac_invalidate() must be called as a trigger")));
	if (trigdata->tg_trigger->tgnargs > 0 && strcmp(trigdata->tg_trigger->tgargs[0], "insert") == 0)
		rbac_xact_inserted = true;
	else
		rbac_xact_changed = true;
	return PointerGetDatum(NULL);
}

/* At commit, invalidate the shared cache; at any end, forget the mark. */
static void
rbac_xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (rbac_xact_changed || rbac_xact_inserted)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that changed donatello roles or permissions"),
						 errhint("Commit RBAC changes in an ordinary transaction.")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (rbac_xact_changed)
				rbac_cache_bump_generation();
			if (rbac_xact_inserted)
				rbac_cache_bump_inserts();
			rbac_xact_changed = rbac_xact_inserted = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			rbac_xact_changed = rbac_xact_inserted = false;
			break;
		default:
			break;
	}
}

/* Register the transaction callback (every backend that loads the library). */
void
rbac_invalidate_init(void)
{
	RegisterXactCallback(rbac_xact_callback, NULL);
}
