/*
 * sockaddr.c
 *	  Socket addresses as text, for messages and the audit trail (the SSRF
 *	  guard's refusals, the HTTP layer's request.ip).
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "donatello.h"

/*
 * Write the numeric form of an IPv4 or IPv6 address into buf (len bytes, at
 * least INET6_ADDRSTRLEN). Returns false, with buf empty, for any other
 * address family.
 */
bool
donatello_sockaddr_text(const struct sockaddr *sa, char *buf, size_t len)
{
	const void *raw;

	buf[0] = '\0';
	if (sa->sa_family == AF_INET)
		raw = &((const struct sockaddr_in *) sa)->sin_addr;
	else if (sa->sa_family == AF_INET6)
		raw = &((const struct sockaddr_in6 *) sa)->sin6_addr;
	else
		return false;
	if (inet_ntop(sa->sa_family, raw, buf, len) == NULL)
	{
		buf[0] = '\0';
		return false;
	}
	return true;
}
