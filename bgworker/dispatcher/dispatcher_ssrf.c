/*
 * dispatcher_ssrf.c
 *	  The SSRF guard: outbound requests may not reach loopback, private,
 *	  link-local, shared (CGNAT), multicast, reserved or cloud-metadata
 *	  addresses, unless the URL's host is listed in donatello.allowed_hosts.
 *
 * The guard sits where the address is used: libcurl resolves the host and
 * then asks the worker for a socket for one address (CURLOPT_OPENSOCKETFUNCTION,
 * dispatcher_curl.c); the worker classifies that very address here and refuses
 * to open a socket for a forbidden one. So the address that is connected to is
 * always the address that was checked, whatever DNS answers next time.
 *
 * URLs are also checked when they are stored (create_webhook_endpoint,
 * http_enqueue): syntax, scheme, and a host that is a literal forbidden
 * address. donatello.check_outbound_url() resolves the host as well, to tell
 * an administrator in advance what the worker would do.
 *
 * No shared state: the allow-list is a setting, parsed by its check hook.
 */
#include "postgres.h"

#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "donatello.h"
#include "bgworker/dispatcher/dispatcher.h"

PG_FUNCTION_INFO_V1(donatello_check_outbound_url);

/* parsed donatello.allowed_hosts: lower-case names, each NUL-terminated, then a NUL */
static char *allowed_hosts_list = NULL;

/* One forbidden IPv4 range. */
typedef struct Ipv4Range
{
	uint32		network;
	int			prefix;
	const char *what;
} Ipv4Range;

static const Ipv4Range forbidden_ipv4[] = {
	{0xA9FEA9FE, 32, "a cloud metadata address"},	/* 169.254.169.254 */
	{0x646464C8, 32, "a cloud metadata address"},	/* 100.100.100.200 */
	{0x00000000, 8, "a \"this network\" address"},
	{0x0A000000, 8, "a private address"},
	{0x64400000, 10, "a shared (carrier-grade NAT) address"},
	{0x7F000000, 8, "a loopback address"},
	{0xA9FE0000, 16, "a link-local address"},
	{0xAC100000, 12, "a private address"},
	{0xC0000000, 24, "an IETF protocol address"},
	{0xC0A80000, 16, "a private address"},
	{0xC6120000, 15, "a benchmarking address"},
	{0xE0000000, 4, "a multicast address"},
	{0xF0000000, 4, "a reserved address"},
};

/* Why an IPv4 address (host order) is forbidden, or NULL. */
static const char *
ipv4_refusal(uint32 addr)
{
	int			i;

	for (i = 0; i < (int) lengthof(forbidden_ipv4); i++)
	{
		uint32		mask = forbidden_ipv4[i].prefix == 0 ? 0 :
			~(uint32) 0 << (32 - forbidden_ipv4[i].prefix);

		if ((addr & mask) == forbidden_ipv4[i].network)
			return forbidden_ipv4[i].what;
	}
	return NULL;
}

/* Why an IPv6 address is forbidden, or NULL. */
static const char *
ipv6_refusal(const struct in6_addr *a)
{
	const uint8 *b = a->s6_addr;
	static const uint8 zero[16] = {0};
	static const uint8 aws_metadata[16] = {0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54};
	static const uint8 nat64[12] = {0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};

	if (memcmp(b, zero, 15) == 0 && (b[15] == 0 || b[15] == 1))
		return b[15] == 1 ? "a loopback address" : "an unspecified address";
	if (memcmp(b, aws_metadata, 16) == 0)
		return "a cloud metadata address";
	/* IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d) */
	if ((memcmp(b, zero, 10) == 0 && b[10] == 0xff && b[11] == 0xff) ||
		memcmp(b, zero, 12) == 0 || memcmp(b, nat64, 12) == 0)
		return ipv4_refusal(((uint32) b[12] << 24) | ((uint32) b[13] << 16) |
							((uint32) b[14] << 8) | b[15]);
	if (b[0] == 0x20 && b[1] == 0x02)	/* 6to4: 2002:a.b.c.d::/48 */
		return ipv4_refusal(((uint32) b[2] << 24) | ((uint32) b[3] << 16) |
							((uint32) b[4] << 8) | b[5]);
	if ((b[0] & 0xfe) == 0xfc)
		return "a private (unique local) address";
	if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
		return "a link-local address";
	if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)
		return "a site-local address";
	if (b[0] == 0xff)
		return "a multicast address";
	return NULL;
}

/* Why this socket address is forbidden as a destination, or NULL if allowed. */
const char *
ssrf_address_refusal(const struct sockaddr *addr)
{
	if (addr->sa_family == AF_INET)
		return ipv4_refusal(ntohl(((const struct sockaddr_in *) addr)->sin_addr.s_addr));
	if (addr->sa_family == AF_INET6)
		return ipv6_refusal(&((const struct sockaddr_in6 *) addr)->sin6_addr);
	return "not an internet address";
}

/* true when the host (lower case, no brackets) is in donatello.allowed_hosts. */
bool
ssrf_host_allowed(const char *host)
{
	const char *entry;

	if (allowed_hosts_list == NULL || host == NULL)
		return false;
	for (entry = allowed_hosts_list; *entry != '\0'; entry += strlen(entry) + 1)
		if (strcmp(entry, host) == 0)
			return true;
	return false;
}

/* GUC check hook of donatello.allowed_hosts: split, trim, lower-case. */
bool
ssrf_allowed_hosts_check(char **newval, void **extra, GucSource source pg_attribute_unused())
{
	const char *in = *newval ? *newval : "";
	size_t		len = strlen(in);
	char	   *list = malloc(len + 2);	/* GUC extra data is malloc'd */
	char	   *out = list;
	const char *p = in;

	if (list == NULL)
		return false;
	while (*p != '\0')
	{
		const char *start;
		const char *end;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		start = p;
		while (*p != '\0' && *p != ',')
			p++;
		end = p;
		while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		if (end > start && *start == '[' && end[-1] == ']')
		{
			start++;
			end--;
		}
		if (end == start)
			continue;
		for (; start < end; start++)
		{
			if (*start == ' ' || *start == '/' || *start == '@')
			{
				GUC_check_errmsg("invalid host in donatello.allowed_hosts: \"%s\"", in);
				GUC_check_errhint("List host names or IP addresses separated by commas, such as \"localhost, 127.0.0.1\".");
				free(list);
				return false;
			}
			*out++ = pg_ascii_tolower((unsigned char) *start);
		}
		*out++ = '\0';
	}
	*out = '\0';
	*extra = list;
	return true;
}

/* GUC assign hook of donatello.allowed_hosts. */
void
ssrf_allowed_hosts_assign(const char *newval pg_attribute_unused(), void *extra)
{
	allowed_hosts_list = extra;
}

/* Lower-case copy of a URL host without IPv6 brackets. */
static char *
normalize_host(const char *host)
{
	size_t		len = strlen(host);
	char	   *copy;

	if (len >= 2 && host[0] == '[' && host[len - 1] == ']')
	{
		host++;
		len -= 2;
	}
	copy = pnstrdup(host, len);
	for (char *c = copy; *c; c++)
		*c = pg_ascii_tolower((unsigned char) *c);
	return copy;
}

/* Why a resolved host is forbidden (first forbidden address), or NULL. */
static const char *
resolved_refusal(const char *host, const char *port)
{
	struct addrinfo hints;
	struct addrinfo *res = NULL;
	struct addrinfo *ai;
	const char *refusal = NULL;
	int			rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0)
		return psprintf("host \"%s\" does not resolve: %s", host, gai_strerror(rc));
	for (ai = res; ai != NULL && refusal == NULL; ai = ai->ai_next)
	{
		const char *why = ssrf_address_refusal(ai->ai_addr);

		if (why != NULL)
		{
			char		text[INET6_ADDRSTRLEN];

			(void) donatello_sockaddr_text(ai->ai_addr, text, sizeof(text));
			refusal = psprintf("host \"%s\" resolves to %s, %s", host, text, why);
		}
	}
	freeaddrinfo(res);
	return refusal;
}

/*
 * Check a URL before it is stored or sent: NULL if acceptable, else why not.
 * Sets *host_out to its normalized host when given. With resolve, host names
 * are resolved and every address checked; without it only literal addresses
 * are.
 */
const char *
ssrf_check_url(const char *url, char **host_out, bool resolve)
{
	CURLU	   *parsed = curl_url();
	char	   *scheme = NULL;
	char	   *host = NULL;
	char	   *user = NULL;
	char	   *port = NULL;
	const char *refusal = NULL;
	char	   *normal = NULL;
	struct in6_addr addr6;
	struct in_addr addr4;

	if (parsed == NULL)
		elog(ERROR, "out of memory in curl_url");
	if (curl_url_set(parsed, CURLUPART_URL, url, 0) != CURLUE_OK)
		refusal = "not a valid absolute URL";
	else if (curl_url_get(parsed, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
			 (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0))
		refusal = "only http and https URLs are allowed";
	else if (curl_url_get(parsed, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0')
		refusal = "the URL has no host";
	else if (curl_url_get(parsed, CURLUPART_USER, &user, 0) == CURLUE_OK)
		refusal = "credentials in the URL are not allowed";
	else
	{
		normal = normalize_host(host);
		curl_url_get(parsed, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
		if (ssrf_host_allowed(normal))
			refusal = NULL;
		else if (inet_pton(AF_INET, normal, &addr4) == 1)
		{
			const char *why = ipv4_refusal(ntohl(addr4.s_addr));

			if (why)
				refusal = psprintf("%s is %s", normal, why);
		}
		else if (inet_pton(AF_INET6, normal, &addr6) == 1)
		{
			const char *why = ipv6_refusal(&addr6);

			if (why)
				refusal = psprintf("%s is %s", normal, why);
		}
		else if (resolve)
			refusal = resolved_refusal(normal, port);
	}
	if (host_out)
		*host_out = normal;
	curl_free(scheme);
	curl_free(host);
	curl_free(user);
	curl_free(port);
	curl_url_cleanup(parsed);
	return refusal;
}

/*
 * donatello.check_outbound_url(url text) returns text: NULL when the
 * dispatcher may send to the URL now, otherwise the reason it would refuse.
 */
Datum
donatello_check_outbound_url(PG_FUNCTION_ARGS)
{
	const char *refusal;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("url must not be NULL")));
	refusal = ssrf_check_url(text_to_cstring(PG_GETARG_TEXT_PP(0)), NULL, true);
	if (refusal == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(refusal));
}
