/*
 * csv.c
 *	  donatello.csv_rows(csv text): split RFC 4180 CSV into records, each with
 *	  the line number it starts on, for the import functions to validate.
 *
 * Fields are separated by commas, records by LF or CRLF; a field in double
 * quotes may hold commas, line breaks and doubled quotes. A leading UTF-8 BOM
 * is skipped; a final line break does not start an empty record.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "donatello.h"

PG_FUNCTION_INFO_V1(donatello_csv_rows);

/* Accumulates the fields of the record being parsed. */
typedef struct CsvRecord
{
	Datum	   *fields;
	int			nfields;
	int			cap;
	int			line;			/* line the record starts on */
} CsvRecord;

/* Append a finished field to the record. */
static void
csv_add_field(CsvRecord *rec, StringInfo field)
{
	if (rec->nfields == rec->cap)
	{
		rec->cap = rec->cap ? rec->cap * 2 : 8;
		rec->fields = rec->fields ? repalloc(rec->fields, sizeof(Datum) * rec->cap)
			: palloc(sizeof(Datum) * rec->cap);
	}
	rec->fields[rec->nfields++] = PointerGetDatum(cstring_to_text_with_len(field->data, field->len));
	resetStringInfo(field);
}

/* Emit the record as one result row and start a new one. */
static void
csv_emit(ReturnSetInfo *rsinfo, CsvRecord *rec, int next_line)
{
	Datum		values[2];
	bool		nulls[2] = {false, false};

	values[0] = Int32GetDatum(rec->line);
	values[1] = PointerGetDatum(construct_array(rec->fields, rec->nfields, TEXTOID, -1, false, TYPALIGN_INT));
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	rec->nfields = 0;
	rec->line = next_line;
}

/* donatello.csv_rows(csv text) returns setof (line_number int, fields text[]) */
Datum
donatello_csv_rows(PG_FUNCTION_ARGS)
{
	text	   *csv = PG_GETARG_TEXT_PP(0);
	const char *p = VARDATA_ANY(csv);
	const char *end = p + VARSIZE_ANY_EXHDR(csv);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	StringInfoData field;
	CsvRecord	rec = {0};
	int			line = 1;
	bool		in_record = false;

	InitMaterializedSRF(fcinfo, 0);
	initStringInfo(&field);
	rec.line = 1;

	if (end - p >= 3 && (unsigned char) p[0] == 0xEF &&
		(unsigned char) p[1] == 0xBB && (unsigned char) p[2] == 0xBF)
		p += 3;

	while (p < end)
	{
		char		c = *p;

		if (c == '"' && field.len == 0)
		{
			/* quoted field */
			int			start_line = line;

			p++;
			for (;;)
			{
				if (p >= end)
					ereport(ERROR,
							(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
							 errmsg("unterminated quoted field starting on line %d", start_line),
							 errhint("Close the field with a double quote; write a quote inside a field as two quotes.")));
				if (*p == '"')
				{
					if (p + 1 < end && p[1] == '"')
					{
						appendStringInfoChar(&field, '"');
						p += 2;
						continue;
					}
					p++;
					break;
				}
				if (*p == '\n')
					line++;
				appendStringInfoChar(&field, *p++);
			}
			if (p < end && *p != ',' && *p != '\n' && !(*p == '\r' && p + 1 < end && p[1] == '\n') && *p != '\r')
				ereport(ERROR,
						(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
						 errmsg("unexpected character after closing quote on line %d", line),
						 errhint("A quoted field must be followed by a comma or the end of the line.")));
			in_record = true;
			continue;
		}
		if (c == ',')
		{
			csv_add_field(&rec, &field);
			in_record = true;
			p++;
			continue;
		}
		if (c == '\r' || c == '\n')
		{
			p += (c == '\r' && p + 1 < end && p[1] == '\n') ? 2 : 1;
			line++;
			csv_add_field(&rec, &field);
			csv_emit(rsinfo, &rec, line);
			in_record = false;
			continue;
		}
		appendStringInfoChar(&field, c);
		in_record = true;
		p++;
	}
	if (in_record || rec.nfields > 0)
	{
		csv_add_field(&rec, &field);
		csv_emit(rsinfo, &rec, line);
	}
	return (Datum) 0;
}
