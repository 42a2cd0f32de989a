# donatello: PGXS build, plus the demo and test entry points.
#
#   make demo        install what is missing, build, install, start ./tmp cluster, run the demo
#   make demo-stop   stop the demo/test cluster
#   make test        same setup, then every test suite, with a summary line
#   make bench       run the benchmarks in bench/ against the throwaway cluster
#   make deps        only install the missing Debian and npm packages
#
# The PGXS part needs pg_config, which `make deps` installs; the entry points above
# run `make deps` first and then call make again, so they work on a machine where
# PostgreSQL is not installed yet.

EXTENSION  = donatello
EXTVERSION := $(shell sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" donatello.control)
PG_CONFIG  ?= $(firstword $(wildcard /usr/lib/postgresql/15/bin/pg_config) pg_config)

MODULE_big = donatello
OBJS = \
	src/donatello.o \
	src/common/shmem.o \
	src/common/extension.o \
	src/common/sockaddr.o \
	src/secrets/secrets.o \
	src/tenancy/claims.o \
	src/tenancy/csv.o \
	src/rbac/rbac_compile.o \
	src/rbac/rbac_cache.o \
	src/rbac/rbac_check.o \
	src/rbac/rbac_invalidate.o \
	src/safety/text_fold.o \
	src/safety/blocklist_automaton.o \
	src/safety/blocklist_cache.o \
	src/safety/content_check.o \
	src/safety/pii_detect.o \
	src/safety/pii_scan.o \
	src/router/model_score.o \
	src/router/model_rank.o \
	src/router/request_settings.o \
	src/router/circuit.o \
	src/router/provider_url.o \
	src/router/provider_register.o \
	src/images/png_header.o \
	src/images/image_url.o \
	bgworker/worker.o \
	bgworker/maintenance.o
# credentials (issue 3)
OBJS += \
	src/credentials/common.o \
	src/credentials/password.o \
	src/credentials/guard.o \
	src/credentials/deferred.o \
	src/credentials/login.o \
	src/credentials/totp.o \
	src/credentials/mfa.o \
	src/credentials/sessions.o \
	src/credentials/jwt.o \
	src/credentials/credcache.o \
	src/credentials/apikey.o \
	src/credentials/apikey_usage.o \
	src/credentials/ratelimit.o
# outbound dispatcher (issue 6)
OBJS += \
	bgworker/dispatcher/dispatcher_main.o \
	bgworker/dispatcher/dispatcher_queue.o \
	bgworker/dispatcher/dispatcher_curl.o \
	bgworker/dispatcher/dispatcher_ssrf.o \
	bgworker/dispatcher/dispatcher_sign.o \
	bgworker/dispatcher/dispatcher_retry.o \
	src/dispatch/dispatch_common.o \
	src/dispatch/webhooks.o \
	src/dispatch/http_enqueue.o
# HTTP layer (issue 7)
OBJS += \
	bgworker/httpd/httpd_main.o \
	bgworker/httpd/httpd_request.o \
	bgworker/httpd/httpd_auth.o \
	bgworker/httpd/httpd_parse.o \
	bgworker/httpd/httpd_query.o \
	bgworker/httpd/httpd_relation.o \
	bgworker/httpd/httpd_rpc.o \
	bgworker/httpd/httpd_response.o \
	bgworker/httpd/httpd_openapi.o \
	bgworker/httpd/httpd_metrics.o \
	bgworker/httpd/httpd_image.o
# department budgets (issue 4)
OBJS += \
	src/budget/budget_common.o \
	src/budget/budget_exact.o \
	src/budget/budget_alerts.o \
	src/budget/budget_api.o \
	src/budget/budget_maintenance.o
# generation pipeline (issue 8)
OBJS += \
	src/generation/generation_settings.o \
	src/generation/generate.o \
	src/generation/generation_images.o \
	src/generation/image_fetch.o \
	src/generation/generation_recover.o
# audit trail (issue 5)
OBJS += \
	src/audit/audit_record.o \
	src/audit/audit_trigger.o \
	src/audit/audit_event.o \
	src/audit/audit_seal.o \
	src/audit/audit_verify.o \
	src/audit/audit_purge.o

# The install script is assembled from one part per concern, in file-name order.
EXTENSION_SQL_PARTS  = $(sort $(wildcard sql/install/*.sql))
EXTENSION_SQL = sql/donatello--$(EXTVERSION).sql
DATA_built     = $(EXTENSION_SQL)

# The server headers are included as system headers: -Wextra then judges our code only.
PG_CPPFLAGS = -I$(CURDIR)/src -I$(CURDIR) -isystem $(shell $(PG_CONFIG) --includedir-server 2>/dev/null) \
	-DDONATELLO_VERSION='"$(EXTVERSION)"'
# -Werror is on for `make demo`, `make test` and CI (WERROR=1); off for a plain `make`
# so that a newer compiler's new warning does not stop a DBA's build.
PG_CFLAGS   = -Wall -Wextra $(if $(filter 1,$(WERROR)),-Werror)
SHLIB_LINK  = -lssl -lcrypto -lsodium -lcurl -lmicrohttpd

# pg_regress suites: sql/<name>.sql -> expected/<name>.out, run in this order.
REGRESS      = install secrets tenancy import_users rbac rbac_cache tenant_isolation
REGRESS     += credentials_totp credentials_login credentials_apikeys credentials_jwt
REGRESS     += safety_pii safety_content router_models router_score images
REGRESS     += dispatcher
REGRESS     += budget
REGRESS     += generation_pipeline
REGRESS     += audit audit_tamper
REGRESS_OPTS   = --inputdir=. --load-extension=donatello

# Isolation specs: test/isolation/specs/<name>.spec -> test/isolation/expected/<name>.out
ISOLATION      = $(basename $(notdir $(wildcard test/isolation/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test/isolation --load-extension=donatello

ENTRY_POINTS = deps demo demo-stop test bench

.PHONY: $(ENTRY_POINTS)

HAVE_PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(HAVE_PGXS),)
PGXS := $(HAVE_PGXS)
include $(PGXS)

# test databases (after PGXS, which sets its own defaults)
CONTRIB_TESTDB   = donatello_regress
ISOLATION_TESTDB = donatello_isolation

all: $(EXTENSION_SQL)
else
all install installcheck:
	@echo "pg_config not found: run 'make deps' (or 'make demo' / 'make test') first" >&2; exit 1
endif

$(EXTENSION_SQL): $(EXTENSION_SQL_PARTS) donatello.control
	cat $(EXTENSION_SQL_PARTS) > $@

deps:
	.ci/bootstrap

demo: deps
	$(MAKE) install WERROR=1
	test/bin/cluster start
	test/demo/run

demo-stop:
	test/bin/cluster stop

test: deps
	$(MAKE) install WERROR=1
	test/bin/cluster start
	test/bin/run-suites

bench: deps
	$(MAKE) install
	test/bin/cluster start
	bench/run
