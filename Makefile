# concertd: the terminal side of the Concert / Caisse-AP payment protocol.

CARGO ?= cargo
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
DOCDIR ?= $(PREFIX)/share/doc/concertd
# The default journal's directory (journal in concertd.conf(5)): not
# under PREFIX, as concertd looks for it there.
STATEDIR ?= /var/lib/concertd
# The build directory, found as cargo finds it (CARGO_TARGET_DIR,
# build.target-dir, else target/): asked once, and only by the rules that
# need it. Read from `cargo metadata` with sed, so that nothing but cargo
# is needed; without cargo (root's PATH under sudo), target/.
BUILD_DIR = $(eval BUILD_DIR := $(or $(shell $(CARGO) metadata --format-version 1 \
	--no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'),target))$(BUILD_DIR)
# Where `install` takes the binaries from; `make` builds them there.
TARGET ?= $(BUILD_DIR)/release

# What `make run` uses. A test overrides them: it cannot build (cargo
# holds the build directory while tests run) nor take port 8888.
RUN_BUILD ?= $(CARGO) build --locked
RUN_BIN ?= $(BUILD_DIR)/debug
RUN_DIR ?= run
RUN_PORT ?= 8888
RUN_LISTEN ?= 0.0.0.0:$(RUN_PORT)
# `make run V=1` logs debug messages (-v), V=2 the wire trace too (-vv).
RUN_VERBOSE = $(if $(V),$(if $(filter 1,$(V)),-v,$(if $(filter 2,$(V)),-vv,$(error \
	V=$(V): make run takes V=1 (concertd -v) or V=2 (concertd -vv)))))

# Every page `install` puts in place, each under man<its section>/.
MANPAGES = man/concertd.8 man/concertd.conf.5 man/concert.1 man/concertctl.8 \
	man/concertd-protocol.7 man/concertd-journal.5 man/concertd-backends.7 \
	man/concertd-exec.7 man/concertd-relay.7 man/concertd-logging.7
# The service's group under the shipped units: who may use concertctl.
GROUP ?= concertd

.PHONY: all build run test check lint install uninstall clean bench stress fuzz

all: build

# Always run cargo: it knows better than make whether anything changed.
build:
	$(CARGO) build --release --locked

# The simulator on port 8888, in the foreground, logging to the terminal.
# Nothing is written outside the checkout: the journal goes to run/. The
# file is replaced only when it would change: a running one watches it
# (config-watch), and a second `make run` must leave it alone and fail on
# the journal's lock.
run:
	$(RUN_BUILD)
	@mkdir -p $(RUN_DIR) && new=$(RUN_DIR)/concertd.conf.$$$$ && \
	{ sed 's|^listen 0\.0\.0\.0:8888$$|listen $(RUN_LISTEN)|' etc/concertd.conf && \
		echo 'control "$(abspath $(RUN_DIR))/concertd.sock"' && \
		echo 'journal "$(abspath $(RUN_DIR))/journal"'; } > $$new && \
	if cmp -s $$new $(RUN_DIR)/concertd.conf; then rm -f $$new; else \
		echo "writing $(RUN_DIR)/concertd.conf"; mv -f $$new $(RUN_DIR)/concertd.conf; fi
	exec $(RUN_BIN)/concertd -d $(RUN_VERBOSE) -f $(RUN_DIR)/concertd.conf

test: check lint

# The browser test (tests/browser.rs) needs Chromium; without it, it is
# skipped, and said so here, before and after the suite.
CHROMIUM_NOTE = command -v chromium >/dev/null 2>&1 || command -v chromium-browser \
	>/dev/null 2>&1 || [ -n "$$CHROMIUM" ] || echo "chromium not installed: the browser test \
	(tests/browser.rs) is SKIPPED; install it with apt-get install -y chromium"

check:
	@$(CHROMIUM_NOTE)
	$(CARGO) test --locked
	@$(CHROMIUM_NOTE)

lint:
	@if $(CARGO) fmt --version >/dev/null 2>&1; then \
		echo "$(CARGO) fmt --check"; $(CARGO) fmt --check; \
	else echo "rustfmt not installed: formatting not checked"; fi
	@if $(CARGO) clippy --version >/dev/null 2>&1; then \
		echo "$(CARGO) clippy --all-targets -- -D warnings"; \
		$(CARGO) clippy --locked --all-targets -- -D warnings; \
	else echo "clippy not installed: lints not checked"; fi
	@if command -v mandoc >/dev/null 2>&1; then \
		echo "mandoc -T lint -W warning $(MANPAGES)"; \
		mandoc -T lint -W warning $(MANPAGES); \
	else echo "mandoc not installed: man pages not linted"; fi
	@if command -v systemd-analyze >/dev/null 2>&1; then \
		echo "systemd-analyze verify etc/concertd.service.in etc/concertd@.service.in"; \
		tmp=$$(mktemp -d) && \
		sed -e 's|@SBINDIR@|$(abspath $(BUILD_DIR))/debug|' -e 's|@SYSCONFDIR@|/etc|' \
			etc/concertd.service.in > $$tmp/concertd.service && \
		sed -e 's|@SBINDIR@|$(abspath $(BUILD_DIR))/debug|' -e 's|@SYSCONFDIR@|/etc|' \
			etc/concertd@.service.in > $$tmp/concertd@lane1.service && \
		systemd-analyze verify --man=no $$tmp/concertd.service $$tmp/concertd@lane1.service; \
		rc=$$?; rm -rf $$tmp; exit $$rc; \
	else echo "systemd-analyze not installed: units not checked"; fi

# Installs what `make` built; builds nothing, so that `sudo make install`
# leaves no root-owned files in target/. An existing configuration file is
# never replaced.
install:
	@test -x $(TARGET)/concertd -a -x $(TARGET)/concert -a -x $(TARGET)/concertctl || { \
		echo "$(TARGET)/concertd missing: run make first (install builds nothing)," \
			"or pass TARGET=BUILD-DIR/release when it was built elsewhere" \
			"(sudo drops CARGO_TARGET_DIR)"; exit 1; }
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man7 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(SYSCONFDIR) \
		$(DESTDIR)$(UNITDIR)
	install -m 0755 $(TARGET)/concertd $(DESTDIR)$(SBINDIR)/concertd
	install -m 0755 $(TARGET)/concert $(DESTDIR)$(BINDIR)/concert
	install -m 0755 $(TARGET)/concertctl $(DESTDIR)$(BINDIR)/concertctl
	for m in $(MANPAGES); do \
		install -m 0644 $$m $(DESTDIR)$(MANDIR)/man$${m##*.}/$${m#man/} || exit 1; \
	done
	install -d $(DESTDIR)$(DOCDIR)
	@# The journal's: root's until a concertd started as root with `user`
	@# gives it to that user; systemd's StateDirectory takes it over.
	install -d -m 0750 $(DESTDIR)$(STATEDIR)
	install -m 0755 etc/concertd-pay.example $(DESTDIR)$(DOCDIR)/concertd-pay.example
	install -m 0644 etc/exam.script $(DESTDIR)$(DOCDIR)/exam.script
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/concertd.conf ]; then \
		echo "$(DESTDIR)$(SYSCONFDIR)/concertd.conf exists: kept"; \
	else \
		echo "install -m 0644 etc/concertd.conf $(DESTDIR)$(SYSCONFDIR)/concertd.conf"; \
		install -m 0644 etc/concertd.conf $(DESTDIR)$(SYSCONFDIR)/concertd.conf; \
	fi
	for u in concertd concertd@; do \
		sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
			etc/$$u.service.in > $(DESTDIR)$(UNITDIR)/$$u.service && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.service || exit 1; \
	done
	@# The units run concertd in this group, which owns the control socket
	@# (mode 0660): its members may use concertctl. Made by root on this
	@# machine only: a staged install (DESTDIR) leaves it to the target, and
	@# a user's install to root; both are told the command to run.
	@if [ -n "$(DESTDIR)" ]; then \
		echo "DESTDIR set: group $(GROUP) not created; on the target, as root:" \
			"groupadd --system $(GROUP) (concertctl's users; see concertctl(8))"; \
	elif getent group $(GROUP) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "not root: group $(GROUP) not created; as root:" \
			"groupadd --system $(GROUP) (concertctl's users; see concertctl(8))"; \
	elif command -v groupadd >/dev/null 2>&1; then \
		echo "groupadd --system $(GROUP)"; groupadd --system $(GROUP) || exit 1; \
	else echo "no groupadd: create the system group $(GROUP) by hand (see concertctl(8))"; fi

# Removes what install put in place; the configuration only if unchanged;
# the documentation directory, concertd's own, when empty (the others are
# shared: bin, sbin, man...).
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/concertd $(DESTDIR)$(BINDIR)/concert \
		$(DESTDIR)$(BINDIR)/concertctl $(DESTDIR)$(UNITDIR)/concertd.service \
		$(DESTDIR)$(UNITDIR)/concertd@.service $(DESTDIR)$(DOCDIR)/concertd-pay.example \
		$(DESTDIR)$(DOCDIR)/exam.script
	for m in $(MANPAGES); do rm -f $(DESTDIR)$(MANDIR)/man$${m##*.}/$${m#man/}; done
	@if [ -d $(DESTDIR)$(DOCDIR) ] && rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null; then \
		echo "rmdir $(DESTDIR)$(DOCDIR)"; fi
	@# The journal is the record of every payment: never removed here.
	@if [ -d $(DESTDIR)$(STATEDIR) ]; then \
		if rmdir $(DESTDIR)$(STATEDIR) 2>/dev/null; then echo "rmdir $(DESTDIR)$(STATEDIR)"; \
		else echo "$(DESTDIR)$(STATEDIR) holds the journal: kept"; fi; fi
	@if cmp -s etc/concertd.conf $(DESTDIR)$(SYSCONFDIR)/concertd.conf; then \
		echo "rm -f $(DESTDIR)$(SYSCONFDIR)/concertd.conf"; \
		rm -f $(DESTDIR)$(SYSCONFDIR)/concertd.conf; \
	elif [ -e $(DESTDIR)$(SYSCONFDIR)/concertd.conf ]; then \
		echo "$(DESTDIR)$(SYSCONFDIR)/concertd.conf was changed: kept"; \
	fi

# Figures, against a limit server run in the same process (release build).
bench:
	$(CARGO) bench --locked --bench bench

# Kills, floods and garbage; prints what was tried and what was lost.
stress:
	$(CARGO) bench --locked --bench stress

# Each fuzz target for FUZZ_TIME seconds, on stable (no sanitizer); needs
# cargo-fuzz (`cargo install cargo-fuzz`). Crashes land in fuzz/artifacts.
FUZZ_TIME ?= 60
FUZZ_TARGETS = tlv_decode v2_decode assembler serial_link config_parse backend_output journal_read control_command simulator_plan request_findings
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || { echo "cargo install cargo-fuzz first"; exit 1; }
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$t && cp -n seeds/$$t/* corpus/$$t/ 2>/dev/null; \
		$(CARGO) fuzz run -s none $$t -- -max_total_time=$(FUZZ_TIME) || exit 1; \
	done

clean:
	$(CARGO) clean
