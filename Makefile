# myriad build. One Makefile, out-of-tree objects under build/$(BUILD).
#
#   make                 release build: build/release/{myriad,libmyriad.a,libmyriad.so,myriad.pc}
#   make run             install missing packages, build, serve the reference service on :8080
#   make test            install missing packages, build (gcc + clang ASan/UBSan), run every test
#   make fuzz            run the libFuzzer targets for a bounded time (FUZZ_SECONDS)
#   make install PREFIX=/usr/local
#   make BUILD=asan      the sanitizer build (clang by default)
#
# Sources are found by wildcard: a new module is a new file, not a Makefile edit.

BUILD   ?= release
O       := build/$(BUILD)
PREFIX  ?= /usr/local
VERSION := 0.1.0

ifeq ($(BUILD),asan)
CC      := clang
MODE_CFLAGS  := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
                -fno-sanitize-recover=all
MODE_LDFLAGS := -fsanitize=address,undefined
else ifeq ($(BUILD),debug)
MODE_CFLAGS  := -O0 -g
else
MODE_CFLAGS  := -O2 -g
endif

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wno-unused-parameter
CFLAGS  ?=
CFLAGS  += -std=gnu17 $(WARN) $(MODE_CFLAGS) -fPIC -pthread -D_GNU_SOURCE \
           -DMYR_VERSION='"$(VERSION)"' -Iinclude -Isrc -MMD -MP
# Libraries from Debian packages (scripts/deps.sh installs them). Each module
# that needs one includes its header; linking them all keeps the link line
# one definition.
PKGS    := libpq sqlite3 hiredis libsodium jansson zlib
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS  += $(PKG_CFLAGS)
LDFLAGS += $(MODE_LDFLAGS) -pthread
LDLIBS  += $(PKG_LIBS) -lm

LIB_SRC  := $(sort $(shell find src -name '*.c'))
APP_SRC  := $(sort $(wildcard app/*.c))
UNIT_SRC := $(sort $(shell find tests/unit -name '*.c' ! -name 'unit_*.c'))
EX_SRC   := $(sort $(wildcard examples/*.c))

LIB_OBJ  := $(LIB_SRC:%.c=$(O)/%.o)
APP_OBJ  := $(APP_SRC:%.c=$(O)/%.o)
UNIT_BIN := $(UNIT_SRC:%.c=$(O)/%)
EX_BIN   := $(EX_SRC:%.c=$(O)/%)

.PHONY: all run test unit e2e check-deps install install-check fuzz fuzz-regress clean bench valgrind
SHELL := /bin/bash
all: $(O)/myriad $(O)/libmyriad.a $(O)/libmyriad.so $(O)/myriad.pc $(EX_BIN)

# V=1 shows the full command lines.
Q := $(if $(V),,@)

$(O)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

$(O)/libmyriad.a: $(LIB_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(O)/libmyriad.so: $(LIB_OBJ)
	$(Q)$(CC) -shared -Wl,-soname,libmyriad.so.0 $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(O)/myriad: $(APP_OBJ) $(O)/libmyriad.a
	@$(if $(V),,echo "  LINK    $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $(APP_OBJ) $(O)/libmyriad.a $(LDLIBS)

$(O)/examples/%: examples/%.c $(O)/libmyriad.a
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(O)/libmyriad.a $(LDLIBS)

# Unit tests: tests/unit/<dir>/<module>.c mirrors src/<dir>/<module>.c. A test may
# #include its module's .c to reach static helpers; the archive then supplies
# only what the test does not define itself.
$(O)/tests/unit/%: tests/unit/%.c $(O)/libmyriad.a
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  TEST    $<")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(O)/libmyriad.a -lcmocka $(LDLIBS)

# Tests with dependencies of their own (test-only packages).
$(O)/tests/unit/http/http_parser_diff: LDLIBS += -lhttp_parser

# The .pc in the build dir names PREFIX as given at build time; install
# rewrites it for the PREFIX it installs to.
PC_TEXT = prefix=$(1)\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: myriad\nDescription: C platform for web backends\nVersion: $(VERSION)\nLibs: -L$${libdir} -lmyriad\nLibs.private: -pthread $(LDLIBS)\nCflags: -I$${includedir}\n
$(O)/myriad.pc: Makefile
	@mkdir -p $(O)
	@printf '$(call PC_TEXT,$(PREFIX))' > $@

check-deps:
	@scripts/deps.sh

run: check-deps
	@$(MAKE) --no-print-directory all
	./$(O)/myriad serve --host 127.0.0.1 --port 8080

unit: $(UNIT_BIN)
	@scripts/run-unit.sh $(O) $(UNIT_BIN)

E2E_LOG = build/$(BUILD)-e2e.log
e2e: all
	@set -o pipefail; MYRIAD_BIN=$(CURDIR)/$(O)/myriad /usr/bin/python3 -m pytest -q \
	  -p no:cacheprovider tests/e2e 2>&1 | tee $(E2E_LOG)

# `make install` into a staging directory, then build and run the example
# against the installed header, library and pkg-config file.
install-check: all
	@scripts/install-check.sh $(O)

# The whole suite twice: a gcc release build, then clang with ASan+UBSan
# (LeakSanitizer on). Either failing fails the target. The last line sums
# the test counts of every runner.
test: check-deps
	@mkdir -p build
	@$(MAKE) --no-print-directory BUILD=release CC=gcc all unit e2e install-check 2>&1 \
	  | tee build/test-release.log; test $${PIPESTATUS[0]} -eq 0
	@$(MAKE) --no-print-directory BUILD=asan all unit e2e 2>&1 \
	  | tee build/test-asan.log; test $${PIPESTATUS[0]} -eq 0
	@$(MAKE) --no-print-directory fuzz-regress
	@scripts/summary.sh build/test-release.log build/test-asan.log

FUZZ_SECONDS ?= 60
FUZZ_CFLAGS := -std=gnu17 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Iinclude -Isrc $(PKG_CFLAGS)
FUZZ_TARGETS := $(patsubst fuzz/%.c,build/fuzz/%,$(wildcard fuzz/*.c))
# A fuzz target #includes the .c files it exercises, so it builds on its own.
build/fuzz/%: fuzz/%.c $(LIB_SRC)
	@mkdir -p build/fuzz
	clang $(FUZZ_CFLAGS) -o $@ $< $(PKG_LIBS) -lm -pthread

# Bounded fuzzing session per target.
fuzz: $(FUZZ_TARGETS)
	@for t in $(FUZZ_TARGETS); do n=$$(basename $$t); mkdir -p build/fuzz/corpus-$$n; \
	  $$t -max_total_time=$(FUZZ_SECONDS) -max_len=4096 build/fuzz/corpus-$$n fuzz/corpus/$$n || exit 1; done

# Replays the kept corpus (seeds and past crashers) through each target: part of make test.
fuzz-regress: $(FUZZ_TARGETS)
	@for t in $(FUZZ_TARGETS); do n=$$(basename $$t); $$t -runs=0 fuzz/corpus/$$n >/dev/null 2>&1 \
	  || { echo "fuzz regression failed: $$n"; $$t -runs=0 fuzz/corpus/$$n; exit 1; }; echo "fuzz: $$n corpus ok"; done

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 755 $(O)/myriad $(DESTDIR)$(PREFIX)/bin/myriad
	install -m 644 $(O)/libmyriad.a $(DESTDIR)$(PREFIX)/lib/libmyriad.a
	install -m 755 $(O)/libmyriad.so $(DESTDIR)$(PREFIX)/lib/libmyriad.so.0
	ln -sf libmyriad.so.0 $(DESTDIR)$(PREFIX)/lib/libmyriad.so
	install -m 644 include/myriad.h $(DESTDIR)$(PREFIX)/include/myriad.h
	printf '$(call PC_TEXT,$(PREFIX))' > $(DESTDIR)$(PREFIX)/lib/pkgconfig/myriad.pc

# Benchmarks against the peers (not tests): QUICK=1 for a short run.
bench: all
	bench/run

# An end-to-end subset under valgrind memcheck: 0 bytes definitely or
# indirectly lost, or it fails.
valgrind: all
	@scripts/valgrind.sh $(O)

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
