# The two commands of the README:
#   make demo   install featkit into .venv and run the main job on the shared Food-101 zip
#   make test   install (if needed) and run the tests
VENV   ?= .venv
SHARED ?= ../shared
DATA   ?= $(SHARED)/data/food101-64.zip
MODEL  ?= $(SHARED)/models/mobilenet-v2.onnx
SIZE   ?= 128
FK      = $(VENV)/bin/featkit

.PHONY: setup demo test lint

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[dev,keras,ray,export,mlflow]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(FK) data summary $(DATA)
	$(FK) extract --data $(DATA) --backbone $(MODEL) --size $(SIZE) --sensitivity
	$(FK) fit-head --data $(DATA) --backbone $(MODEL) --size $(SIZE) --head logreg
	$(FK) evaluate latest
	$(FK) sensitivity latest
	$(FK) report
	@echo "The report: $(CURDIR)/reports/index.html"

lint: setup
	$(VENV)/bin/ruff check featkit tests benchmarks
	$(VENV)/bin/ruff format --check featkit tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: setup
	$(VENV)/bin/python -m pytest -q
