/*
 * png_header.c
 *	  Width, height and pixel format of a PNG, from its first 33 bytes: the
 *	  8-byte signature and the IHDR chunk that the PNG specification
 *	  (ISO/IEC 15948, W3C PNG) requires to come first.
 *
 * Nothing past those bytes is read, so donatello.png_info() fetches only a
 * slice of a stored image, however large. Every field is checked: the
 * signature, the chunk length (13) and type, the chunk's CRC-32 (the one
 * PNG, zlib and Ethernet share: PostgreSQL's "traditional" CRC-32), width and
 * height from 1 to 2^31 - 1, an allowed bit depth for the colour type, and
 * compression, filter and interlace methods the specification defines.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/pg_crc.h"

#include "donatello.h"
#include "images/images.h"

PG_FUNCTION_INFO_V1(donatello_png_info);

static const unsigned char png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

/* A 4-byte big-endian integer. */
static uint32
read_be32(const unsigned char *p)
{
	return ((uint32) p[0] << 24) | ((uint32) p[1] << 16) | ((uint32) p[2] << 8) | (uint32) p[3];
}

/* Is the bit depth allowed for the colour type (PNG specification, table 11.1)? */
static bool
bit_depth_allowed(uint8 color_type, uint8 bit_depth)
{
	switch (color_type)
	{
		case 0:
			return bit_depth == 1 || bit_depth == 2 || bit_depth == 4 || bit_depth == 8 || bit_depth == 16;
		case 3:
			return bit_depth == 1 || bit_depth == 2 || bit_depth == 4 || bit_depth == 8;
		case 2:
		case 4:
		case 6:
			return bit_depth == 8 || bit_depth == 16;
		default:
			return false;
	}
}

/* The name of a colour type. */
const char *
png_color_type_name(uint8 color_type)
{
	switch (color_type)
	{
		case 0:
			return "grayscale";
		case 2:
			return "rgb";
		case 3:
			return "palette";
		case 4:
			return "grayscale_alpha";
		case 6:
			return "rgba";
		default:
			return "unknown";
	}
}

/*
 * Read the header of a PNG. Returns false, with *problem saying why, unless
 * data begins with a valid signature and IHDR chunk.
 */
bool
png_read_header(const unsigned char *data, size_t len, PngHeader *out, const char **problem)
{
	const unsigned char *chunk = data + 8;
	uint32		crc;

	if (len < 8 || memcmp(data, png_signature, 8) != 0)
	{
		*problem = "It does not start with the PNG signature.";
		return false;
	}
	if (len < PNG_HEADER_BYTES)
	{
		*problem = "It ends before its IHDR chunk does.";
		return false;
	}
	if (read_be32(chunk) != 13 || memcmp(chunk + 4, "IHDR", 4) != 0)
	{
		*problem = "Its first chunk is not a 13-byte IHDR chunk.";
		return false;
	}
	INIT_TRADITIONAL_CRC32(crc);
	COMP_TRADITIONAL_CRC32(crc, chunk + 4, 4 + 13);
	FIN_TRADITIONAL_CRC32(crc);
	if (crc != read_be32(chunk + 8 + 13))
	{
		*problem = "The CRC of its IHDR chunk does not match.";
		return false;
	}

	out->width = read_be32(chunk + 8);
	out->height = read_be32(chunk + 12);
	out->bit_depth = chunk[16];
	out->color_type = chunk[17];
	out->interlace = chunk[20];
	if (out->width == 0 || out->height == 0 || out->width > PG_INT32_MAX || out->height > PG_INT32_MAX)
	{
		*problem = "Its width or height is 0 or larger than 2^31 - 1.";
		return false;
	}
	if (!bit_depth_allowed(out->color_type, out->bit_depth))
	{
		*problem = "Its colour type and bit depth are not a combination PNG allows.";
		return false;
	}
	if (chunk[18] != 0 || chunk[19] != 0 || out->interlace > 1)
	{
		*problem = "Its compression, filter or interlace method is not one PNG defines.";
		return false;
	}
	return true;
}

/* donatello.png_info(image bytea) returns jsonb */
Datum
donatello_png_info(PG_FUNCTION_ARGS)
{
	bytea	   *head = PG_GETARG_BYTEA_P_SLICE(0, 0, PNG_HEADER_BYTES);
	PngHeader	h;
	const char *problem;

	if (!png_read_header((const unsigned char *) VARDATA(head), VARSIZE(head) - VARHDRSZ, &h, &problem))
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("image is not a valid PNG"),
				 errdetail("%s", problem)));
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(
		psprintf("{\"mime_type\": \"image/png\", \"width\": %u, \"height\": %u, \"bit_depth\": %u,"
				 " \"color_type\": %u, \"color\": \"%s\", \"interlaced\": %s}",
				 h.width, h.height, (unsigned) h.bit_depth, (unsigned) h.color_type,
				 png_color_type_name(h.color_type), h.interlace ? "true" : "false"))));
}
