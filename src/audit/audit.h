/*
 * audit.h
 *	  The audit trail (src/audit/): one record per audited change or
 *	  application event, a SHA-256 content hash per record computed at insert,
 *	  hash-chained blocks per organization written by the sealing task.
 *
 * Files: audit_record.c (the record, its hash, who and where, the insert),
 * audit_trigger.c (the C trigger, enable/disable, the append-only guard),
 * audit_event.c (application and system events, security events),
 * audit_seal.c (the sealing task and the settings), audit_verify.c
 * (audit_verify), audit_purge.c (retention).
 *
 * No shared memory: writers share no lock, the sealer serializes itself on
 * the single row of donatello.audit_seal_state.
 */
#ifndef DONATELLO_AUDIT_H
#define DONATELLO_AUDIT_H

#include "postgres.h"

#include "access/transam.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#define AUDIT_HASH_LEN 32
#define AUDIT_MASK_MARKER "[masked]"

/* One record of donatello.audit_log, as C values (NULL pointers: SQL NULL). */
typedef struct AuditRecord
{
	TimestampTz logged_at;
	pg_uuid_t	org_id;
	bool		has_department;
	pg_uuid_t	department_id;
	bool		has_user;
	pg_uuid_t	user_id;
	bool		has_api_key;
	pg_uuid_t	api_key_id;
	const char *db_role;
	const char *request_id;
	const char *client_ip;
	const char *user_agent;
	const char *action;
	const char *table_name;
	const char *resource_type;
	const char *resource_id;
	uint64		txid;
	Jsonb	   *old_data;
	Jsonb	   *new_data;
	Jsonb	   *details;
} AuditRecord;

/* What kind of internal write the append-only guard lets through. */
typedef enum AuditWriteKind
{
	AUDIT_WRITE_NONE = 0,
	AUDIT_WRITE_RECORD,			/* the writer inserting into audit_log */
	AUDIT_WRITE_SEAL,			/* the sealer inserting into audit_blocks */
	AUDIT_WRITE_PURGE			/* audit_purge dropping partitions */
} AuditWriteKind;

extern AuditWriteKind audit_internal_write;

/* settings (audit_seal.c) */
extern int	audit_seal_interval_ms;
extern int	audit_retention_minutes;

/* audit_record.c */
extern void audit_record_init(AuditRecord *rec);
extern void audit_record_set_actor(AuditRecord *rec, bool org_from_principal);
extern void audit_record_hash(const AuditRecord *rec, uint8 *out);
extern int64 audit_record_insert(AuditRecord *rec);
extern bool audit_principal_org(pg_uuid_t *out);

/* audit_seal.c */
extern int64 audit_seal_pass(void);
extern void audit_init(void);

#endif							/* DONATELLO_AUDIT_H */
