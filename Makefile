# concertd: the terminal side of the Concert / Caisse-AP payment protocol.

CARGO ?= cargo
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
DOCDIR ?= $(PREFIX)/share/doc/concertd
# Where `install` takes the binaries from; `make` builds them there.
TARGET ?= target/release

MANPAGES = man/concertd.8 man/concertd.conf.5 man/concert.1

.PHONY: all build run test check lint install uninstall clean bench stress fuzz

all: build

# Always run cargo: it knows better than make whether anything changed.
build:
	$(CARGO) build --release --locked

# The simulator on port 8888, in the foreground, logging to the terminal.
# Nothing is written outside the checkout: the journal goes to run/.
run:
	$(CARGO) build --locked
	mkdir -p run
	cp etc/concertd.conf run/concertd.conf
	echo 'journal "$(CURDIR)/run/journal"' >> run/concertd.conf
	exec target/debug/concertd -d -f run/concertd.conf

test: check lint

check:
	$(CARGO) test --locked

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
		echo "systemd-analyze verify etc/concertd.service.in"; \
		tmp=$$(mktemp -d) && \
		sed -e 's|@SBINDIR@|$(CURDIR)/target/debug|' -e 's|@SYSCONFDIR@|/etc|' \
			etc/concertd.service.in > $$tmp/concertd.service && \
		systemd-analyze verify --man=no $$tmp/concertd.service; rc=$$?; rm -rf $$tmp; exit $$rc; \
	else echo "systemd-analyze not installed: unit not checked"; fi

# Installs what `make` built; builds nothing, so that `sudo make install`
# leaves no root-owned files in target/. An existing configuration file is
# never replaced.
install:
	@test -x $(TARGET)/concertd -a -x $(TARGET)/concert || \
		{ echo "$(TARGET)/concertd missing: run make first (install builds nothing)"; exit 1; }
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(SYSCONFDIR) \
		$(DESTDIR)$(UNITDIR)
	install -m 0755 $(TARGET)/concertd $(DESTDIR)$(SBINDIR)/concertd
	install -m 0755 $(TARGET)/concert $(DESTDIR)$(BINDIR)/concert
	install -m 0644 man/concertd.8 $(DESTDIR)$(MANDIR)/man8/concertd.8
	install -m 0644 man/concertd.conf.5 $(DESTDIR)$(MANDIR)/man5/concertd.conf.5
	install -m 0644 man/concert.1 $(DESTDIR)$(MANDIR)/man1/concert.1
	install -d $(DESTDIR)$(DOCDIR)
	install -m 0755 etc/concertd-pay.example $(DESTDIR)$(DOCDIR)/concertd-pay.example
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/concertd.conf ]; then \
		echo "$(DESTDIR)$(SYSCONFDIR)/concertd.conf exists: kept"; \
	else \
		echo "install -m 0644 etc/concertd.conf $(DESTDIR)$(SYSCONFDIR)/concertd.conf"; \
		install -m 0644 etc/concertd.conf $(DESTDIR)$(SYSCONFDIR)/concertd.conf; \
	fi
	sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
		etc/concertd.service.in > $(DESTDIR)$(UNITDIR)/concertd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/concertd.service

# Removes what install put in place; the configuration only if unchanged.
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/concertd $(DESTDIR)$(BINDIR)/concert \
		$(DESTDIR)$(MANDIR)/man8/concertd.8 $(DESTDIR)$(MANDIR)/man5/concertd.conf.5 \
		$(DESTDIR)$(MANDIR)/man1/concert.1 $(DESTDIR)$(UNITDIR)/concertd.service \
		$(DESTDIR)$(DOCDIR)/concertd-pay.example
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
FUZZ_TARGETS = tlv_decode v2_decode assembler serial_link config_parse backend_output journal_read
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || { echo "cargo install cargo-fuzz first"; exit 1; }
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$t && cp -n seeds/$$t/* corpus/$$t/ 2>/dev/null; \
		$(CARGO) fuzz run -s none $$t -- -max_total_time=$(FUZZ_TIME) || exit 1; \
	done

clean:
	$(CARGO) clean
