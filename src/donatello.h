/*
 * donatello.h
 *	  Declarations shared by every part of donatello: version, SQLSTATEs of the
 *	  DN class, and the init entry points _PG_init calls.
 *
 * The error table is maintained in docs/errors.md; add a code there and here
 * together, never reuse one.
 */
#ifndef DONATELLO_H
#define DONATELLO_H

#include "postgres.h"

#ifndef DONATELLO_VERSION
#error "DONATELLO_VERSION must be defined by the build (from donatello.control)"
#endif

/* SQLSTATEs of the DN class (docs/errors.md) */
#define ERRCODE_DN_INVALID_CREDENTIALS	MAKE_SQLSTATE('D','N','A','0','1')
#define ERRCODE_DN_ACCOUNT_LOCKED		MAKE_SQLSTATE('D','N','A','0','2')
#define ERRCODE_DN_INVALID_TOKEN		MAKE_SQLSTATE('D','N','A','0','3')
#define ERRCODE_DN_INVALID_MFA_CODE		MAKE_SQLSTATE('D','N','A','0','4')
#define ERRCODE_DN_MFA_LOCKED			MAKE_SQLSTATE('D','N','A','0','5')
#define ERRCODE_DN_PASSWORD_POLICY		MAKE_SQLSTATE('D','N','A','0','6')
#define ERRCODE_DN_PERMISSION_DENIED	MAKE_SQLSTATE('D','N','P','0','1')
#define ERRCODE_DN_BUDGET_EXCEEDED		MAKE_SQLSTATE('D','N','B','0','1')
#define ERRCODE_DN_DEPARTMENT_LOCKED	MAKE_SQLSTATE('D','N','B','0','2')
#define ERRCODE_DN_RESERVATION_INVALID	MAKE_SQLSTATE('D','N','B','0','3')
#define ERRCODE_DN_IDEMPOTENCY_CONFLICT	MAKE_SQLSTATE('D','N','B','0','4')
#define ERRCODE_DN_RATE_LIMITED			MAKE_SQLSTATE('D','N','R','0','1')
#define ERRCODE_DN_PII_DETECTED			MAKE_SQLSTATE('D','N','S','0','1')
#define ERRCODE_DN_CONTENT_POLICY		MAKE_SQLSTATE('D','N','S','0','2')
#define ERRCODE_DN_NO_MODEL				MAKE_SQLSTATE('D','N','M','0','1')
#define ERRCODE_DN_INVALID_ARGUMENT		MAKE_SQLSTATE('D','N','V','0','1')
#define ERRCODE_DN_NOT_FOUND			MAKE_SQLSTATE('D','N','V','0','2')

/* donatello.c: settings shared by several parts */
extern char *donatello_database;

/* common/shmem.c: shared memory registry and the preload requirement */
typedef void (*donatello_shmem_startup_fn) (void);

extern bool donatello_preloaded;
extern void donatello_shmem_register(Size size, int nlwlocks, const char *tranche,
									 donatello_shmem_startup_fn startup);
extern void donatello_shmem_install_hooks(void);
extern void donatello_require_preload(const char *feature);

/* common/extension.c: the installed extension and its owner */
typedef struct DonatelloSavedUser
{
	Oid			userid;
	int			sec_context;
} DonatelloSavedUser;

extern bool donatello_extension_exists(void);
extern Oid	donatello_owner(void);
extern void donatello_begin_as_owner(DonatelloSavedUser *saved);
extern void donatello_end_as_owner(const DonatelloSavedUser *saved);

/* common/sockaddr.c */
struct sockaddr;
extern bool donatello_sockaddr_text(const struct sockaddr *sa, char *buf, size_t len);

/* init entry points, one per part, called from _PG_init */
extern void rbac_cache_init(void);
extern void rbac_invalidate_init(void);
extern void credentials_init(void);	/* credentials/common.c */
extern void dispatcher_init(void);	/* bgworker/dispatcher/dispatcher_main.c */
extern void httpd_init(void);		/* bgworker/httpd/httpd_main.c */
extern void budget_init(void);		/* budget/budget_maintenance.c */

#endif							/* DONATELLO_H */
