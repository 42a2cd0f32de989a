/*
 * images.h
 *	  Generated images: reading a PNG's header (IHDR) safely, and signing
 *	  and verifying the expiring URLs images are served at
 *	  (GET /images/{id}?exp=...&sig=...).
 */
#ifndef DONATELLO_IMAGES_H
#define DONATELLO_IMAGES_H

#include "postgres.h"

#include "utils/uuid.h"

/* bytes a PNG needs before its header is known: signature, IHDR chunk, CRC */
#define PNG_HEADER_BYTES 33

/* what the IHDR chunk says */
typedef struct PngHeader
{
	uint32		width;
	uint32		height;
	uint8		bit_depth;
	uint8		color_type;		/* 0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA */
	uint8		interlace;		/* 0 none, 1 Adam7 */
} PngHeader;

/* png_header.c: false (with *problem set) unless data starts with a valid PNG header */
extern bool png_read_header(const unsigned char *data, size_t len, PngHeader *out,
							const char **problem);
extern const char *png_color_type_name(uint8 color_type);

/* image_url.c: HMAC-SHA256 signatures of image URLs, base64url without padding */
#define IMAGE_URL_SIGNATURE_CHARS 43

extern void image_url_init(void);
extern char *image_url_sign(const pg_uuid_t *image_id, int64 expires_at);
extern bool image_url_verify(const pg_uuid_t *image_id, int64 expires_at,
							 const char *signature, size_t len, int64 now);

#endif							/* DONATELLO_IMAGES_H */
