# luaws — build, run and test.  `make run` and `make test` are all a newcomer needs:
# both install missing Debian packages first (make deps).

PREFIX   ?= /usr/local
DESTDIR  ?=
CC       ?= cc
PORT     ?= 8080
SCRIPT   ?= scripts/echo.lua

# Debian packages: build deps, then what the specs and tools use.
DEBS_BUILD = gcc make pkg-config liblua5.4-dev lua5.4 libuv1-dev libssl-dev zlib1g-dev libhttp-parser-dev libhiredis-dev lua-cjson liblmdb-dev
DEBS_TEST  = lua-busted lua-socket python3-websockets nodejs node-ws openssl procps redis-server lua-zlib lua-filesystem haproxy
# The fuzz smoke run in CI (fuzz/smoke.sh) builds libFuzzer targets with clang.
DEBS_FUZZ  = clang libclang-rt-14-dev
# The browser spec drives Debian's chromium (without its recommends: ~120 packages fewer).
DEBS_NORECOMMENDS = chromium
DEBS       = $(DEBS_BUILD) $(DEBS_TEST) $(DEBS_FUZZ)

PKGS     = lua5.4 libuv libssl libcrypto zlib
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
LDLIBS  += -lhttp_parser -lhiredis -llmdb -lm

# SANITIZE=1 builds ./luaws-asan (ASan + UBSan + LeakSanitizer) in its own
# directory, so it never clobbers the normal build; `make test SANITIZE=1`
# runs the whole suite on it.
ifeq ($(SANITIZE),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
BUILD    = build/asan
BIN      = luaws-asan
else
BUILD    = build/normal
BIN      = luaws
endif

SRCS = $(wildcard src/*.c)
OBJS = $(SRCS:src/%.c=$(BUILD)/%.o)
HDRS = $(wildcard src/*.h)

.PHONY: all deps run run-tls test conformance clean install

all: deps $(BIN)

# Install only what is missing; apt-get update once, before the first install.
deps:
	@missing=""; for p in $(DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	nr=""; for p in $(DEBS_NORECOMMENDS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || nr="$$nr $$p"; \
	done; \
	if [ -n "$$missing$$nr" ]; then \
	  echo "make deps: installing$$missing$$nr"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq || exit 1; \
	  if [ -n "$$missing" ]; then DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null || exit 1; fi; \
	  if [ -n "$$nr" ]; then DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$nr >/dev/null || exit 1; fi; \
	fi

$(BUILD)/%.o: src/%.c $(HDRS) | $(BUILD)
	$(CC) $(CFLAGS) $(shell pkg-config --cflags $(PKGS)) -c $< -o $@

$(BUILD):
	mkdir -p $@

$(BIN): $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $(OBJS) $(shell pkg-config --libs $(PKGS)) $(LDLIBS)

run: all
	./luaws --port $(PORT) $(SCRIPT)

test: all
	@LUAWS_BIN=$(CURDIR)/$(BIN) bash spec/run

# The conformance suite with its large cases (9.x up to 16 MiB), every deflate mode.
conformance: all
	@CONFORMANCE_LARGE=1 LUAWS_BIN=$(CURDIR)/$(BIN) bash spec/run spec/conformance_spec.lua

# make run-tls: the echo bot on wss://127.0.0.1:8443 with a self-signed
# certificate for localhost / 127.0.0.1, made once into build/tls/ (try:
# SSL_CERT_FILE=build/tls/cert.pem /usr/bin/python3 -m websockets wss://localhost:8443/,
# or open https://localhost:8443/ in a browser and accept the certificate).
TLS_DIR = build/tls

$(TLS_DIR)/cert.pem:
	@mkdir -p $(TLS_DIR)
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
	  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
	  -keyout $(TLS_DIR)/key.pem -out $@ 2>/dev/null
	@chmod 600 $(TLS_DIR)/key.pem

run-tls: all $(TLS_DIR)/cert.pem
	./luaws --listen wss://127.0.0.1:8443 --tls-cert $(TLS_DIR)/cert.pem --tls-key $(TLS_DIR)/key.pem $(SCRIPT)

# make install [PREFIX=/usr/local] [DESTDIR=]: the binary, the Lua half of the
# module (found by the binary in ../share/luaws/lua), the example scripts and
# the man page.
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/luaws/lua/luaws \
	  $(DESTDIR)$(PREFIX)/share/luaws/scripts $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 luaws $(DESTDIR)$(PREFIX)/bin/luaws
	install -m 644 lua/luaws.lua $(DESTDIR)$(PREFIX)/share/luaws/lua/luaws.lua
	install -m 644 lua/luaws/*.lua lua/luaws/*.html $(DESTDIR)$(PREFIX)/share/luaws/lua/luaws/
	install -m 644 scripts/*.lua $(DESTDIR)$(PREFIX)/share/luaws/scripts/
	install -d $(DESTDIR)$(PREFIX)/share/luaws/scripts/spec
	install -m 644 scripts/spec/*.lua $(DESTDIR)$(PREFIX)/share/luaws/scripts/spec/
	install -m 644 docs/luaws.1 $(DESTDIR)$(PREFIX)/share/man/man1/luaws.1

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/luaws $(DESTDIR)$(PREFIX)/share/man/man1/luaws.1
	rm -rf $(DESTDIR)$(PREFIX)/share/luaws

clean:
	rm -rf build luaws luaws-asan
