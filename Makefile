# The two commands that matter: `make up` (whole system + simulated fleet) and
# `make test` (the suite). Both install what they need (deploy/bootstrap.sh).
.PHONY: up down test lint bootstrap soak

up:
	bash deploy/dev-up.sh

down:
	bash deploy/dev-down.sh

bootstrap:
	bash deploy/bootstrap.sh

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/mypy

test: lint
	.venv/bin/pytest

soak: bootstrap
	.venv/bin/pytest -m soak
