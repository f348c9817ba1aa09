# The two commands of the README: `make dev` runs the local stack, `make test` runs the tests.
.PHONY: dev test test-long bench bootstrap token

dev:
	@scripts/dev.sh

test:
	@scripts/test.sh

# The long fault-injection scenarios (marked slow; `make test` leaves them out).
test-long:
	@scripts/test.sh -m slow tests/faults

# Benchmarks: quick sizes by default, BENCH_FULL=1 for the full ones; figures in bench/README.md.
bench:
	@bench/bench.sh

bootstrap:
	@scripts/bootstrap.sh

token:
	@.venv/bin/python -m streaming_gateway.token --user $${USER_ID:-alice}
