# concertd: the terminal side of the Concert / Caisse-AP payment protocol.

CARGO ?= cargo
MANPAGES = man/concertd.8 man/concertd.conf.5 man/concert.1

.PHONY: all build run test check lint clean

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

clean:
	$(CARGO) clean
