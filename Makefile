# op-tensorflow: `make demo` runs the main job, `make test` runs every test.
# Both install what they need (Debian's R packages, .venv, the Python and R packages)
# and are idempotent: a second run reinstalls nothing that is up to date.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := r-base-core r-cran-reticulate r-cran-testthat r-cran-knitr r-cran-rmarkdown pandoc
R_SOURCES := $(shell find r_pkg -type f -not -name '*.o' -not -name '*.so' 2>/dev/null)

export RETICULATE_PYTHON := $(CURDIR)/$(VENV)/bin/python
export R_LD_LIBRARY_PATH := /usr/lib/R/lib
export TF_CPP_MIN_LOG_LEVEL := 2
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test setup r-deps python-deps r-package lint test-python test-r check-r vignettes bench clean

demo: setup
	$(PY) -m op_tensorflow.demo

test: setup lint check-r vignettes test-python

setup: r-deps python-deps r-package

# Debian's R and its packages (CRAN is not reachable; Debian has no R keras/tensorflow).
r-deps: $(VENV)/.r-deps
$(VENV)/.r-deps:
	@if Rscript -e 'for (p in c("reticulate","testthat","knitr","rmarkdown")) suppressMessages(library(p, character.only = TRUE))' >/dev/null 2>&1 && command -v pandoc >/dev/null; then \
	  echo "R packages present"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	else \
	  echo "Missing Debian packages. Run as root:"; \
	  echo "  apt-get update && apt-get install -y --no-install-recommends $(APT_PACKAGES)"; \
	  exit 1; \
	fi
	@mkdir -p $(VENV) && touch $@

python-deps: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps "tensorflow-empirical-privacy==0.1.0"
	@touch $@

r-package: $(VENV)/.r-package
$(VENV)/.r-package: $(VENV)/.r-deps $(R_SOURCES) $(wildcard vignettes/*.Rmd)
	mkdir -p r_pkg/vignettes && cp -p vignettes/*.Rmd r_pkg/vignettes/
	R CMD INSTALL --no-test-load r_pkg >$(VENV)/r-install.log 2>&1 || { cat $(VENV)/r-install.log; exit 1; }
	@touch $@

lint: python-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-r: setup
	Rscript -e 'library(testthat); library(optensorflow); res <- test_dir("r_pkg/tests/testthat", package = "optensorflow", load_package = "installed", reporter = "summary", stop_on_failure = TRUE)'

# R CMD build/check of the package (its testthat suite runs inside the check); the
# vignettes are knitted by the `vignettes` target instead of a second time here.
# vignettes/ holds the only committed copy of the vignettes: they are copied into
# r_pkg/vignettes/ (gitignored) so that R CMD build lists them; cp -p keeps their
# times, so the copies do not make the r-package stamp out of date.
check-r: setup
	mkdir -p r_pkg/vignettes && cp -p vignettes/*.Rmd r_pkg/vignettes/
	rm -rf .rcheck && mkdir -p .rcheck
	cd .rcheck && R CMD build --no-build-vignettes ../r_pkg
	cd .rcheck && _R_CHECK_FORCE_SUGGESTS_=false R CMD check --no-manual --ignore-vignettes --no-build-vignettes optensorflow_*.tar.gz
	@grep -q "Status: OK" .rcheck/optensorflow.Rcheck/00check.log

VIGNETTES := getting-started dp-heart-rate

# Knit the vignettes to vignettes/*.html (gitignored) and report each one's time.
vignettes: setup
	@for v in $(VIGNETTES); do \
	  start=$$(date +%s); \
	  Rscript -e "rmarkdown::render('vignettes/$$v.Rmd', output_dir = 'vignettes', quiet = TRUE)" || exit 1; \
	  echo "vignettes/$$v.html: knitted in $$(( $$(date +%s) - start )) s"; \
	done

test-python: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/bench_accounting.py
	$(PY) bench/bench_loader.py
	$(PY) bench/bench_model.py
	$(PY) bench/bench_preflight.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .rcheck
