# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint bench simulate clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python examples/demo.py

test: $(BIN)/.installed
	./scripts/install-system-deps
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/mypy src
	# compiled once here, not by each of the hundreds of agents the tests start
	$(BIN)/python -m compileall -q src
	$(BIN)/pytest -q
	# the core and messaging once more with the node thread on the standard asyncio loop
	SKYCLUSTER_NODE_LOOP=asyncio $(BIN)/pytest -q tests/integration/test_node_loop.py \
		tests/integration/test_messaging.py tests/integration/test_cluster_api.py \
		tests/integration/test_agents.py
	# and with every node on its application's loop (no thread: node_loop=shared)
	SKYCLUSTER_NODE_LOOP=shared $(BIN)/pytest -q tests/integration/test_node_loop.py \
		tests/integration/test_messaging.py tests/integration/test_cluster_api.py \
		tests/integration/test_agents.py

# the membership core under the deterministic simulator: thousands of random-fault
# seeds (progress on stderr, a summary table), then the 1,000-node runs of docs/membership.md
simulate: $(BIN)/.installed
	$(BIN)/python benchmarks/simulate.py seeds --seeds 2000
	$(BIN)/python benchmarks/simulate.py runs --nodes 1000

bench: $(BIN)/.installed
	./scripts/install-system-deps
	$(BIN)/python benchmarks/membership.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
