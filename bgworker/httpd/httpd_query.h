/*
 * httpd_query.h
 *	  Shared by the relation and function routes (httpd_relation.c,
 *	  httpd_rpc.c): the source a request reads, statement parameters, and the
 *	  helpers of httpd_query.c that turn the query string into checked SQL,
 *	  run it (with saved plans) and shape the result.
 */
#ifndef DONATELLO_HTTPD_QUERY_H
#define DONATELLO_HTTPD_QUERY_H

#include "postgres.h"

#include "access/tupdesc.h"
#include "utils/jsonb.h"

#include "bgworker/httpd/httpd.h"

/* The thing a request reads from or writes to. */
typedef struct Source
{
	Oid			relid;			/* a relation, or InvalidOid for a function's result */
	char		relkind;
	TupleDesc	tupdesc;		/* a function's result columns */
	char	   *qualified;		/* "schema"."name" */
	char	   *display;		/* schema.name, for messages */
	char	   *from;			/* the FROM item, aliased "_t" */
} Source;

/* Statement parameters, all text (or text[]). */
typedef struct Params
{
	Datum	   *values;
	Oid		   *types;
	int			n;
	int			cap;
} Params;

extern int	hq_param_text(Params *p, const char *value);
extern Oid	hq_column_type(Source *src, const char *name);
extern bool hq_reserved_key(const char *key);
extern void hq_parse_failure(const char *what, const char *err) pg_attribute_noreturn();
extern char *hq_where_sql(HttpRequest *req, Source *src, Params *p, List *skip);
extern char *hq_select_sql(HttpRequest *req, Source *src);
extern void hq_read_source(HttpRequest *req, HttpResponse *resp, Source *src, Params *p, List *skip);
extern uint64 hq_run_sql(const char *sql, Params *p);
extern char *hq_result_text(int col);
extern int64 hq_result_int8(int col);
extern const char *hq_aggregate_sql(HttpRequest *req);
extern void hq_check_singular(HttpRequest *req, int64 rows);
extern List *hq_body_keys(Jsonb *jb, bool *is_array);
extern Jsonb *hq_body_jsonb(HttpRequest *req);

#endif							/* DONATELLO_HTTPD_QUERY_H */
