# The two commands of the README: `make dev` runs the local stack, `make test` runs the tests.
.PHONY: dev test bootstrap token

dev:
	@scripts/dev.sh

test:
	@scripts/test.sh

bootstrap:
	@scripts/bootstrap.sh

token:
	@.venv/bin/python -m streaming_gateway.token --user $${USER_ID:-alice}
