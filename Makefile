# proxyd -- build, test, run, bench.
#   make            build/proxyd, build/proxyctl and build/kamal-proxy (a link to it) (-Werror)
#   make test       layering check + unit + integration suite; ends with "N passed, N failed"
#   make layers     no data-path file includes a control-plane header; proxyctl links no data-path symbol;
#                   no circle among config/routes/services/target (include and nm), nor among
#                   the data-path objects (nm)
#   make soak       bounded load runs (HTTP/1.1 + HTTP/2, a reload; 100 deploys) outside `make test`
#   make asan       the same suite under ASan+UBSan (build-asan/)
#   make fuzz       libFuzzer targets for every parser (build-fuzz/)
#   make run        proxyd on conf/dev.ini in front of a demo backend
#   make bench      side-by-side benchmark against nginx/HAProxy/Caddy
#   make deps       install the Debian packages (as root)
#   make install    proxyd, proxyctl (and its kamal-proxy name), man pages, the example config,
#                   the systemd units, the logrotate file (PREFIX, DESTDIR, BINDIR, ...); make uninstall
#   make deb        build/proxyd_VERSION_ARCH.deb (dpkg-deb; conffiles, a proxyd system user)

B       ?= build
CC      ?= cc
OPT     ?= -O2
PKGS    := libevent_core libevent_pthreads libevent_openssl openssl libnghttp2 jansson inih libsystemd hiredis
# libcurl: its headers only (libcurl4-openssl-dev). Nothing links -lcurl:
# proxy/acme/libcurl.c dlopen()s libcurl.so.4 when ACME is first enabled.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) libcurl 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -ldl
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CFLAGS_ALL := -std=c11 -D_GNU_SOURCE -g $(OPT) $(WARN) -pthread -Iinclude $(PKG_CFLAGS) $(SANFLAGS) $(CFLAGS)
LDFLAGS_ALL := -pthread $(SANFLAGS) $(LDFLAGS)

PROXY_SRCS   := $(filter-out proxy/main.c,$(wildcard proxy/*.c)) $(wildcard proxy/acme/*.c)
CONTROL_SRCS := $(filter-out control/proxyctl.c control/kamal.c,$(wildcard control/*.c))
LIB_OBJS     := $(patsubst %.c,$(B)/obj/%.o,$(PROXY_SRCS) $(CONTROL_SRCS))
UNIT_SRCS    := $(wildcard tests/unit/test_*.c)
UNIT_BINS    := $(patsubst tests/unit/%.c,$(B)/tests/%,$(UNIT_SRCS))

.PHONY: all test unit layers asan fuzz run bench soak deps certs-dev clean check-deps check-test-deps install uninstall deb
all: check-deps $(B)/proxyd $(B)/proxyctl $(B)/kamal-proxy

# Installs missing Debian packages when run as root, else names them.
check-deps:
	@sh tests/install-deps.sh

# What the tests, fuzzers and soak runs use on top (tests/deps-test.txt):
# make run never installs these.
check-test-deps:
	@sh tests/install-deps.sh test

# Rebuild everything when the flags change.
$(B)/.flags: FORCE check-deps
	@mkdir -p $(B)
	@echo '$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL)' | cmp -s - $@ || echo '$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL)' > $@
FORCE:

$(B)/obj/%.o: %.c $(B)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

$(B)/libpx.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(B)/proxyd: $(B)/obj/proxy/main.o $(B)/libpx.a
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS)

# proxyctl links only the leaves it uses: the control protocol, the errors
# table, the value parsers and the clock -- no data-path object (make layers
# checks it with nm).
CTL_OBJS := $(patsubst %,$(B)/obj/%.o,control/protocol proxy/errors proxy/parse proxy/util)
$(B)/libpxctl.a: $(CTL_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(B)/proxyctl: $(B)/obj/control/proxyctl.o $(B)/obj/control/kamal.o $(B)/libpxctl.a
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(shell pkg-config --libs jansson 2>/dev/null)

# The same program under kamal-proxy's name takes kamal-proxy's command line
# (argv[0]; control/kamal.c): what Kamal runs in its proxy container.
$(B)/kamal-proxy: $(B)/proxyctl
	ln -sf proxyctl $@

$(B)/tests/%: tests/unit/%.c tests/unit/unit.h $(B)/libpx.a $(B)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itests/unit -o $@ $< $(B)/libpx.a $(LDFLAGS_ALL) $(PKG_LIBS)

# test_config counts the loader's warnings through the log stub (it defines
# all of px/log.h, so the archive's log.o stays out of that binary).
$(B)/tests/test_config: tests/unit/test_config.c tests/unit/log_stub.c tests/unit/unit.h $(B)/libpx.a $(B)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itests/unit -o $@ $< tests/unit/log_stub.c $(B)/libpx.a $(LDFLAGS_ALL) $(PKG_LIBS)

unit: all $(UNIT_BINS) $(B)/acme-obtain

# A test tool, not part of proxyd: px_acme_obtain against a CA with its own
# HTTP-01 responder (tests/integration/test_acme_client.py).
$(B)/acme-obtain: tests/acme_obtain.c $(B)/libpx.a $(B)/.flags
	$(CC) $(CFLAGS_ALL) -o $@ $< $(B)/libpx.a $(LDFLAGS_ALL) $(PKG_LIBS) $(shell pkg-config --libs libevent_extra)

test: check-test-deps layers unit certs-dev
	python3 tests/run.py --build $(B)

# No data-path file includes a control-plane header, proxyctl links no
# data-path symbol, config/routes/services/target make no circle by include
# or by call, and the data-path objects call in no circle (rules in the script).
layers: $(B)/proxyctl $(B)/proxyd
	@sh tests/layers.sh . $(B)/proxyctl $(B)/obj

asan:
	$(MAKE) B=build-asan OPT=-O1 SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" test

FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(patsubst tests/fuzz/%.c,build-fuzz/%,$(FUZZ_SRCS))
# make fuzz FUZZ_TIME=60 also runs each target that long (on a scratch copy of its corpus).
FUZZ_TIME ?=
# Both steps with the same flags: build-fuzz/.flags changing between them
# would rebuild libpx.a without the instrumentation.
FUZZ_MAKE = $(MAKE) B=build-fuzz CC=clang OPT=-O1 SANFLAGS="-fsanitize=fuzzer-no-link,address,undefined"
fuzz: check-test-deps
	$(FUZZ_MAKE) build-fuzz/libpx.a
	$(FUZZ_MAKE) $(FUZZ_BINS)
	@if [ -n "$(FUZZ_TIME)" ]; then for f in $(FUZZ_BINS); do n=$${f#build-fuzz/fuzz_}; \
	  rm -rf build-fuzz/corpus-$$n && cp -r tests/fuzz/corpus/$$n build-fuzz/corpus-$$n && \
	  $$f -max_total_time=$(FUZZ_TIME) -print_final_stats=1 -artifact_prefix=build-fuzz/ build-fuzz/corpus-$$n \
	    >build-fuzz/fuzz-$$n.log 2>&1; rc=$$?; grep -E "Done|ERROR|SUMMARY" build-fuzz/fuzz-$$n.log; \
	  if [ $$rc != 0 ]; then tail -60 build-fuzz/fuzz-$$n.log; echo "fuzz_$$n failed (exit $$rc): build-fuzz/fuzz-$$n.log, crash input in build-fuzz/" >&2; exit 1; fi; \
	  done; fi
build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c build-fuzz/libpx.a
	clang -std=c11 -D_GNU_SOURCE -g -O1 -Iinclude $(PKG_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< build-fuzz/libpx.a $(PKG_LIBS)
	@echo "run: $@ tests/fuzz/corpus/$*"

run: all certs-dev
	sh tests/run-dev.sh

bench: all
	bash tests/bench/run-bench.sh

# A bounded load run (HTTP/1.1 keep-alive + HTTP/2, a SIGHUP halfway), then
# SOAK_DEPLOYS alternating deploys/rollbacks under load (tests/soak_deploy.py:
# zero failed requests, p99 at rest vs during deploys); not part of
# `make test`. SOAK_SECONDS=60 for a longer one.
SOAK_SECONDS ?= 10
SOAK_DEPLOYS ?= 100
soak: check-test-deps all certs-dev
	python3 tests/soak.py --build $(B) --seconds $(SOAK_SECONDS)
	python3 tests/soak_deploy.py --build $(B) --deploys $(SOAK_DEPLOYS)

certs-dev:
	@sh certs-dev/make-certs.sh

# make install [PREFIX=/usr/local] [DESTDIR=] [BINDIR SBINDIR SYSCONFDIR MANDIR UNITDIR]
# The example config goes to SYSCONFDIR/proxyd/proxyd.ini only when none is
# there: an operator's file is never overwritten (nor removed by uninstall).
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= $(PREFIX)/sbin
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
MANDIR     ?= $(PREFIX)/share/man
UNITDIR    ?= $(PREFIX)/lib/systemd/system
INSTALL    ?= install
UNIT_SED    = sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g'
install: all
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
	  $(DESTDIR)$(SYSCONFDIR)/proxyd $(DESTDIR)$(SYSCONFDIR)/logrotate.d $(DESTDIR)$(UNITDIR)
	$(INSTALL) -m 0755 $(B)/proxyd $(DESTDIR)$(SBINDIR)/proxyd
	$(INSTALL) -m 0755 $(B)/proxyctl $(DESTDIR)$(BINDIR)/proxyctl
	ln -sf proxyctl $(DESTDIR)$(BINDIR)/kamal-proxy
	$(INSTALL) -m 0644 man/proxyd.8 man/proxyctl.8 $(DESTDIR)$(MANDIR)/man8/
	ln -sf proxyctl.8 $(DESTDIR)$(MANDIR)/man8/kamal-proxy.8
	$(INSTALL) -m 0644 man/proxyd.ini.5 $(DESTDIR)$(MANDIR)/man5/
	$(UNIT_SED) conf/systemd/proxyd.service.in > $(DESTDIR)$(UNITDIR)/proxyd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/proxyd.service
	$(INSTALL) -m 0644 conf/systemd/proxyd.socket $(DESTDIR)$(UNITDIR)/proxyd.socket
	$(INSTALL) -m 0644 conf/logrotate/proxyd $(DESTDIR)$(SYSCONFDIR)/logrotate.d/proxyd
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/proxyd/proxyd.ini ]; then \
	  echo "keeping $(DESTDIR)$(SYSCONFDIR)/proxyd/proxyd.ini (the new example is conf/proxyd.ini)"; \
	else $(INSTALL) -m 0644 conf/proxyd.ini $(DESTDIR)$(SYSCONFDIR)/proxyd/proxyd.ini; fi

# make deb: proxyd_VERSION_ARCH.deb in $(B)/ (packaging/deb/build-deb.sh; lintian-clean)
deb: all
	@sh packaging/deb/build-deb.sh $(B) $(B)

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/proxyd $(DESTDIR)$(BINDIR)/proxyctl $(DESTDIR)$(BINDIR)/kamal-proxy \
	  $(DESTDIR)$(MANDIR)/man8/proxyd.8 $(DESTDIR)$(MANDIR)/man8/proxyctl.8 $(DESTDIR)$(MANDIR)/man8/kamal-proxy.8 \
	  $(DESTDIR)$(MANDIR)/man5/proxyd.ini.5 \
	  $(DESTDIR)$(UNITDIR)/proxyd.service $(DESTDIR)$(UNITDIR)/proxyd.socket $(DESTDIR)$(SYSCONFDIR)/logrotate.d/proxyd
	@echo "kept $(DESTDIR)$(SYSCONFDIR)/proxyd/ (your configuration)"

deps:
	sh tests/install-deps.sh test

clean:
	rm -rf build build-asan build-fuzz

-include $(wildcard $(B)/obj/*/*.d $(B)/obj/*/*/*.d)
