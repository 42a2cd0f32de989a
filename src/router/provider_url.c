/*
 * provider_url.c
 *	  donatello.check_base_url(): the base URL of a provider, parsed with
 *	  libcurl's URL API (the parser the dispatcher's requests will use) and
 *	  returned in normal form.
 *
 * Accepted: http or https, a host, an optional port and path. Refused: any
 * other scheme, user names or passwords in the URL (a key belongs in the
 * api_key argument, where it is sealed), a query or a fragment. Whether the
 * host may be reached (donatello.allowed_hosts, the SSRF guard) is decided
 * when a request is sent, not here.
 */
#include "postgres.h"

#include <curl/curl.h>

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/formatting.h"

#include "donatello.h"

PG_FUNCTION_INFO_V1(donatello_check_base_url);

/* Free a URL handle and raise DNV01; the URL is named unless it may hold a secret. */
static void
base_url_error(CURLU *handle, const char *url, const char *problem, const char *hint)
{
	curl_url_cleanup(handle);
	ereport(ERROR,
			(errcode(ERRCODE_DN_INVALID_ARGUMENT),
			 url ? errmsg("invalid base URL \"%s\": %s", url, problem)
			 : errmsg("invalid base URL: %s", problem),
			 errhint("%s", hint)));
}

/* Is a URL part present (non-empty)? */
static bool
url_has_part(CURLU *handle, CURLUPart part)
{
	char	   *value = NULL;
	bool		present;

	if (curl_url_get(handle, part, &value, 0) != CURLUE_OK)
		return false;
	present = (value != NULL && value[0] != '\0');
	curl_free(value);
	return present;
}

/* Host names are case-insensitive: keep them in lower case. */
static void
lower_case_host(CURLU *handle)
{
	char	   *host = NULL;
	char	   *lower;

	if (curl_url_get(handle, CURLUPART_HOST, &host, 0) != CURLUE_OK)
		return;
	lower = asc_tolower(host, strlen(host));
	curl_free(host);
	curl_url_set(handle, CURLUPART_HOST, lower, 0);
	pfree(lower);
}

/* donatello.check_base_url(url text) returns text: the URL in normal form, no trailing slash */
Datum
donatello_check_base_url(PG_FUNCTION_ARGS)
{
	char	   *url = text_to_cstring(PG_GETARG_TEXT_PP(0));
	/* a URL with "@" may carry credentials: never repeat it in a message */
	const char *shown = strchr(url, '@') ? NULL : url;
	CURLU	   *handle = curl_url();
	char	   *scheme = NULL;
	char	   *normal = NULL;
	char	   *result;
	size_t		len;

	if (handle == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	if (strlen(url) > 2048)
		base_url_error(handle, NULL, "longer than 2048 characters", "Use the provider's API root, such as https://api.openai.com.");
	if (curl_url_set(handle, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK)
		base_url_error(handle, shown, "not an absolute URL", "Use the provider's API root, such as https://api.openai.com.");
	if (url_has_part(handle, CURLUPART_USER) || url_has_part(handle, CURLUPART_PASSWORD))
		base_url_error(handle, NULL, "it contains a user name or password",
					   "Pass the provider's key as api_key: it is stored encrypted.");
	if (curl_url_get(handle, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
		(strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0))
	{
		curl_free(scheme);
		base_url_error(handle, shown, "the scheme must be http or https", "Use a URL such as https://api.openai.com.");
	}
	curl_free(scheme);
	if (!url_has_part(handle, CURLUPART_HOST))
		base_url_error(handle, shown, "it has no host", "Use a URL such as https://api.openai.com.");
	lower_case_host(handle);
	if (url_has_part(handle, CURLUPART_QUERY) || url_has_part(handle, CURLUPART_FRAGMENT))
		base_url_error(handle, shown, "it has a query or a fragment",
					   "Requests go to {base_url}/v1/images/generations: give the URL up to the API root only.");

	if (curl_url_get(handle, CURLUPART_URL, &normal, 0) != CURLUE_OK)
		base_url_error(handle, shown, "it cannot be put in normal form", "Use a URL such as https://api.openai.com.");
	result = pstrdup(normal);
	curl_free(normal);
	curl_url_cleanup(handle);

	len = strlen(result);
	while (len > 0 && result[len - 1] == '/')
		result[--len] = '\0';
	PG_RETURN_TEXT_P(cstring_to_text(result));
}
