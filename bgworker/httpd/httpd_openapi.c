/*
 * httpd_openapi.c
 *	  GET / : an OpenAPI 3.0 document of the schema's relations and
 *	  functions that the requesting role may use (like PostgREST's root).
 *
 * Built by one catalog query run as the principal, so privileges filter
 * what is listed (has_table_privilege, has_function_privilege).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "donatello.h"
#include "bgworker/httpd/httpd.h"

static const char openapi_sql[] =
"WITH rels AS ("
"  SELECT c.oid, c.relname, c.relkind, obj_description(c.oid, 'pg_class') AS descr"
"    FROM pg_class c"
"   WHERE c.relnamespace = $1::oid AND c.relkind IN ('r', 'v', 'm', 'f', 'p')"
"     AND has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE')),"
" cols AS ("
"  SELECT r.relname, jsonb_object_agg(a.attname, jsonb_build_object("
"           'type', CASE WHEN a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype) THEN 'integer'"
"                        WHEN a.atttypid IN ('numeric'::regtype, 'float4'::regtype, 'float8'::regtype) THEN 'number'"
"                        WHEN a.atttypid = 'bool'::regtype THEN 'boolean'"
"                        WHEN a.atttypid IN ('json'::regtype, 'jsonb'::regtype) THEN 'object'"
"                        WHEN t.typcategory = 'A' THEN 'array' ELSE 'string' END,"
"           'format', format_type(a.atttypid, a.atttypmod))) AS props"
"    FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped"
"    JOIN pg_type t ON t.oid = a.atttypid"
"   GROUP BY r.relname),"
" fns AS ("
"  SELECT p.proname, p.provolatile, obj_description(p.oid, 'pg_proc') AS descr,"
"         coalesce((SELECT jsonb_object_agg(n, jsonb_build_object('format', format_type(ty, NULL)))"
"                     FROM unnest(p.proargnames, coalesce(p.proallargtypes, p.proargtypes::oid[]),"
"                                 coalesce(p.proargmodes, array_fill('i'::\"char\", ARRAY[p.pronargs])))"
"                          AS u(n, ty, m)"
"                    WHERE m IN ('i', 'b', 'v') AND n <> ''), '{}') AS args"
"    FROM pg_proc p"
"   WHERE p.pronamespace = $1::oid AND p.prokind = 'f'"
"     AND has_function_privilege(p.oid, 'EXECUTE'))"
"SELECT jsonb_build_object("
"  'openapi', '3.0.3',"
"  'info', jsonb_build_object('title', 'donatello', 'version', $2::text,"
"          'description', 'PostgREST-compatible HTTP API of schema ' || $3::text),"
"  'paths', coalesce((SELECT jsonb_object_agg('/' || r.relname, jsonb_strip_nulls(jsonb_build_object("
"              'get', jsonb_build_object('summary', r.descr, 'tags', jsonb_build_array(r.relname),"
"                     'responses', jsonb_build_object('200', jsonb_build_object('description', 'OK',"
"                        'content', jsonb_build_object('application/json', jsonb_build_object('schema',"
"                           jsonb_build_object('type', 'array', 'items', jsonb_build_object('$ref',"
"                              '#/components/schemas/' || r.relname))))))),"
"              'post', CASE WHEN r.relkind IN ('r', 'p', 'v') THEN jsonb_build_object('tags', jsonb_build_array(r.relname),"
"                     'responses', jsonb_build_object('201', jsonb_build_object('description', 'Created'))) END,"
"              'patch', CASE WHEN r.relkind IN ('r', 'p', 'v') THEN jsonb_build_object('tags', jsonb_build_array(r.relname),"
"                     'responses', jsonb_build_object('204', jsonb_build_object('description', 'No Content'))) END,"
"              'delete', CASE WHEN r.relkind IN ('r', 'p', 'v') THEN jsonb_build_object('tags', jsonb_build_array(r.relname),"
"                     'responses', jsonb_build_object('204', jsonb_build_object('description', 'No Content'))) END)))"
"            FROM rels r), '{}'::jsonb)"
"   || coalesce((SELECT jsonb_object_agg('/rpc/' || f.proname, jsonb_strip_nulls(jsonb_build_object("
"              'post', jsonb_build_object('summary', f.descr, 'tags', jsonb_build_array('rpc'),"
"                     'requestBody', jsonb_build_object('content', jsonb_build_object('application/json',"
"                        jsonb_build_object('schema', jsonb_build_object('type', 'object', 'properties', f.args)))),"
"                     'responses', jsonb_build_object('200', jsonb_build_object('description', 'OK'))),"
"              'get', CASE WHEN f.provolatile <> 'v' THEN jsonb_build_object('summary', f.descr, 'tags', jsonb_build_array('rpc'),"
"                     'responses', jsonb_build_object('200', jsonb_build_object('description', 'OK'))) END)))"
"            FROM fns f), '{}'::jsonb),"
"  'components', jsonb_build_object('schemas', coalesce((SELECT jsonb_object_agg(c.relname,"
"          jsonb_build_object('type', 'object', 'properties', c.props)) FROM cols c), '{}'::jsonb),"
"     'securitySchemes', jsonb_build_object("
"        'bearer', jsonb_build_object('type', 'http', 'scheme', 'bearer', 'bearerFormat', 'JWT'),"
"        'apiKey', jsonb_build_object('type', 'apiKey', 'in', 'header', 'name', 'X-API-Key'))))::text";

/* Route: GET / */
void
httpd_route_openapi(HttpRequest *req, HttpResponse *resp, const char *tail pg_attribute_unused())
{
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];
	int			rc;

	httpd_resolve_schema(req, false);
	/* built-in names only: nothing in another schema can stand in for them */
	(void) set_config_option("search_path", "pg_catalog", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
	values[0] = CStringGetTextDatum(psprintf("%u", req->schema));
	values[1] = CStringGetTextDatum(DONATELLO_VERSION);
	values[2] = CStringGetTextDatum(req->schema_name);
	rc = SPI_execute_with_args(openapi_sql, 3, types, values, NULL, true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "OpenAPI query failed: %s", SPI_result_code_string(rc));
	appendStringInfoString(&resp->body, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	resp->content_type = "application/openapi+json; charset=utf-8";
	resp->status = 200;
}
