# luaws — build, run and test.  `make run` and `make test` are all a newcomer needs:
# both install missing Debian packages first (make deps).

PREFIX   ?= /usr/local
DESTDIR  ?=
CC       ?= cc
PORT     ?= 8080
SCRIPT   ?= scripts/echo.lua

# Debian packages: build deps, then what the specs and tools use.
DEBS_BUILD = gcc make pkg-config liblua5.4-dev lua5.4 libuv1-dev libssl-dev zlib1g-dev libhttp-parser-dev libhiredis-dev
DEBS_TEST  = lua-busted lua-socket lua-cjson python3-websockets nodejs node-ws openssl procps redis-server lua-zlib
DEBS       = $(DEBS_BUILD) $(DEBS_TEST)

PKGS     = lua5.4 libuv libssl libcrypto zlib
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
LDLIBS  += -lhttp_parser -lhiredis -lm

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

.PHONY: all deps run test clean install

all: deps $(BIN)

# Install only what is missing; apt-get update once, before the first install.
deps:
	@missing=""; for p in $(DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
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

clean:
	rm -rf build luaws luaws-asan
