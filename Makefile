# op-tensorflow: `make demo` runs the main job, `make test` runs every test.
# Both install what they need (Debian's R packages, the virtual environments, the Python and R packages)
# and are idempotent: a second run reinstalls nothing that is up to date.
#
# Stacks (see the README, "Stacks"):
#   .venv        primary: Python 3.11, TensorFlow 2.21 with Keras 3; tf_keras installed too, so the same
#                venv runs Keras 2 with TF_USE_LEGACY_KERAS=1
#   .venv-tf215  Python 3.11, TensorFlow 2.15.1 with Keras 2 (the previous pinned stack)
#   .venv-py312  Python 3.12, TensorFlow 2.21: checks that `pip install -e .` keeps TensorFlow at 2.21
# numpy < 2 wherever R is used: Debian's reticulate 1.28 cannot exchange numpy 2 arrays.
# TF Privacy and tensorflow-empirical-privacy are installed with --no-deps: they declare
# tensorflow-estimator, dp-accounting==0.4.3, pandas~=1.4 and tf-models-official, which would downgrade
# TensorFlow or fail to resolve; the modules op_tensorflow uses need none of them.

PYTHON ?= python3.11
# Python 3.12: on PATH, else pyenv's (Debian 12 has no python3.12 package).
PYTHON312 ?= $(shell for p in python3.12 $$(ls -d $$HOME/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null); do \
	$$p -c '' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
VENV215 := .venv-tf215
VENV312 := .venv-py312
TF_PRIMARY := tensorflow==2.21.0 tf-keras==2.21.0 "numpy<2"
TF_215 := tensorflow==2.15.1 dp-accounting==0.4.3 "numpy<2"
TF_PRIVACY := tensorflow-privacy==0.9.0 tensorflow-empirical-privacy==0.1.0
QUICK_TESTS := tests/test_accounting.py tests/test_frame.py tests/test_model.py tests/test_zoo.py tests/test_distributed.py \
	tests/test_one_pass.py tests/test_sparse_embedding.py tests/test_sparse_noise.py
# The real R keras clients (source tarballs and install.sh) next to the repository; each is installed
# into its private library .r-clients/<client> (R keras needs reticulate >= 1.31, Debian has 1.28).
SHARED ?= ../shared
R_CLIENTS_SRC := $(SHARED)/r-clients
# r-cran-generics: the compile()/fit() generics; ggplot2: plot(history). Where the clients are present,
# their install.sh's DEBIAN_DEPS and, beyond them, r-cran-tidyselect and r-cran-backports.
R_CLIENT_DEPS := $(if $(wildcard $(R_CLIENTS_SRC)/install.sh),r-cran-r6 r-cran-magrittr r-cran-zeallot r-cran-glue \
	r-cran-rlang r-cran-fastmap r-cran-whisker r-cran-jsonlite r-cran-yaml r-cran-processx r-cran-png r-cran-cli \
	r-cran-tibble r-cran-rappdirs r-cran-rcpp r-cran-here r-cran-withr r-cran-rstudioapi r-cran-lifecycle \
	r-cran-base64enc r-cran-digest r-cran-tidyselect r-cran-backports)
APT_PACKAGES := r-base-core r-cran-reticulate r-cran-testthat r-cran-knitr r-cran-rmarkdown pandoc r-cran-generics \
	r-cran-ggplot2 $(R_CLIENT_DEPS)
R_CLIENTS := keras keras3
R_SOURCES := $(shell find r_pkg -type f -not -name '*.o' -not -name '*.so' 2>/dev/null)

export RETICULATE_PYTHON := $(CURDIR)/$(VENV)/bin/python
export R_LD_LIBRARY_PATH := /usr/lib/R/lib
export TF_CPP_MIN_LOG_LEVEL := 2
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test setup r-deps python-deps r-package lint test-python test-python-tf-keras test-tf215 \
	test-py312 test-r test-r-tf-keras check-r vignettes vignettes-tf-keras bench bench-tf-keras clean \
	r-clients test-r-clients

demo: setup
	$(PY) -m op_tensorflow.demo

# Every suite, on 2 cores: make -j2 starts the two longest (the Python suites on Keras 3 and on tf_keras)
# first and fills each core that frees with the next job, each job's output kept together. CI has 2 cores and
# 35 minutes for all of it.
TEST_JOBS := test-python-tf-keras test-python check-r test-r-tf-keras test-tf215 vignettes test-py312 \
	test-r-clients vignettes-tf-keras
test: setup lint
	$(MAKE) --no-print-directory -j2 --output-sync=target $(TEST_JOBS)

setup: r-deps python-deps r-package

# Debian's R and its packages (CRAN is not reachable; Debian has no R keras/tensorflow).
r-deps: $(VENV)/.r-deps
$(VENV)/.r-deps: Makefile
	@if Rscript -e 'for (p in c("reticulate","testthat","knitr","rmarkdown","generics","ggplot2")) suppressMessages(library(p, character.only = TRUE))' >/dev/null 2>&1 && command -v pandoc >/dev/null \
	  && [ -z "$$(for d in $(R_CLIENT_DEPS); do dpkg -s $$d >/dev/null 2>&1 || echo $$d; done)" ]; then \
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
$(VENV)/.installed: pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -e ".[dev]" $(TF_PRIMARY)
	$(PY) -m pip install -q --no-deps $(TF_PRIVACY)
	@touch $@

$(VENV215)/.installed: pyproject.toml Makefile
	@test -x $(VENV215)/bin/python || $(PYTHON) -m venv $(VENV215)
	$(VENV215)/bin/python -m pip install -q --upgrade "pip>=24"
	$(VENV215)/bin/python -m pip install -q -e ".[dev]" $(TF_215)
	$(VENV215)/bin/python -m pip install -q --no-deps $(TF_PRIVACY)
	@touch $@

# TensorFlow first, as a user's environment has it; then op-tensorflow must leave it at 2.21.
$(VENV312)/.installed: pyproject.toml Makefile
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found: install it (e.g. pyenv install 3.12) or pass PYTHON312=..."; exit 1; }
	@test -x $(VENV312)/bin/python || $(PYTHON312) -m venv $(VENV312)
	$(VENV312)/bin/python -m pip install -q --upgrade "pip>=24"
	$(VENV312)/bin/python -m pip install -q $(TF_PRIMARY)
	$(VENV312)/bin/python -m pip install -q -e ".[dev]"
	$(VENV312)/bin/python -m pip install -q --no-deps --ignore-requires-python $(TF_PRIVACY)
	$(VENV312)/bin/python -m op_tensorflow.stack --install-imp-shim
	@touch $@

r-package: $(VENV)/.r-package
$(VENV)/.r-package: $(VENV)/.r-deps $(R_SOURCES) $(wildcard vignettes/*.Rmd)
	mkdir -p r_pkg/vignettes && cp -p vignettes/*.Rmd r_pkg/vignettes/
	R CMD INSTALL --no-test-load r_pkg >$(VENV)/r-install.log 2>&1 || { cat $(VENV)/r-install.log; exit 1; }
	@touch $@

lint: python-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

R_TESTS := Rscript -e 'library(testthat); library(optensorflow); res <- test_dir("r_pkg/tests/testthat", package = "optensorflow", load_package = "installed", reporter = "summary", stop_on_failure = TRUE)'

test-r: setup
	$(R_TESTS)

# The R package on Keras 2 (tf_keras): chosen with OPTENSORFLOW_KERAS before Python starts.
test-r-tf-keras: setup
	OPTENSORFLOW_KERAS=tf_keras $(R_TESTS)

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

# Knit the vignettes to vignettes/*.html (gitignored) and report each one's time. On Keras 3 with the
# keras3 client's library when .r-clients/keras3 exists (make r-clients), so that dp-heart-rate runs the
# blog's R keras code; vignettes-tf-keras knits without clients (the keras_module() fallback).
vignettes: setup r-clients
	@for v in $(VIGNETTES); do \
	  start=$$(date +%s); \
	  R_LIBS=$$(test -d .r-clients/keras3 && echo $(CURDIR)/.r-clients/keras3:)$$R_LIBS \
	    Rscript -e "rmarkdown::render('vignettes/$$v.Rmd', output_dir = 'vignettes', quiet = TRUE)" || exit 1; \
	  echo "vignettes/$$v.html: knitted in $$(( $$(date +%s) - start )) s"; \
	done

# The same vignettes on Keras 2 (tf_keras), knitted to .vignettes-tf-keras/ (gitignored).
vignettes-tf-keras: setup
	@mkdir -p .vignettes-tf-keras
	@for v in $(VIGNETTES); do \
	  start=$$(date +%s); \
	  OPTENSORFLOW_KERAS=tf_keras Rscript -e "rmarkdown::render('vignettes/$$v.Rmd', output_dir = '.vignettes-tf-keras', intermediates_dir = '.vignettes-tf-keras', quiet = TRUE)" || exit 1; \
	  echo ".vignettes-tf-keras/$$v.html (tf_keras): knitted in $$(( $$(date +%s) - start )) s"; \
	done

# The real R keras clients, each in its private library .r-clients/<client> (install.sh is idempotent:
# a stamp per client). Skipped with a message where $(R_CLIENTS_SRC) is absent (e.g. a user's clone).
# Both install side by side (about 1 min each on one core, from source); r-deps has installed their
# Debian dependencies, so install.sh runs no apt-get (two at once would contend for dpkg's lock).
r-clients: r-deps
	@if [ ! -f $(R_CLIENTS_SRC)/install.sh ]; then \
	  echo "$(R_CLIENTS_SRC)/install.sh not found: the R keras clients are not installed (their tests skip)"; \
	else \
	  pids=""; \
	  for c in $(R_CLIENTS); do \
	    bash $(R_CLIENTS_SRC)/install.sh $$c $(CURDIR)/.r-clients/$$c & pids="$$pids $$!"; \
	  done; \
	  for p in $$pids; do wait $$p || exit 1; done; \
	  echo "R keras clients installed in .r-clients/: $(R_CLIENTS)"; \
	fi

# The R verbs, history and keras objects with the real clients: R keras 2.15 on Keras 2 (tf_keras),
# keras3 on Keras 3, each with its private library first (the base R tests stay on Debian's reticulate).
# A client not installed is skipped with a message by run.R.
test-r-clients: setup r-clients
	OPTENSORFLOW_KERAS=tf_keras R_LIBS=$(CURDIR)/.r-clients/keras Rscript tests/r_clients/run.R keras
	OPTENSORFLOW_KERAS=keras3 R_LIBS=$(CURDIR)/.r-clients/keras3 Rscript tests/r_clients/run.R keras3

test-python: setup
	$(PY) -m pytest -q

# Keras 2 on TF 2.21: the same venv, tf.keras resolved to tf_keras. The test files that never touch Keras
# (accounting, ledgers, frames, the CLI, the import structure) run once, in the Keras 3 suite.
KERAS_FREE_TESTS := tests/test_accounting.py tests/test_budget.py tests/test_cli.py tests/test_frame.py \
	tests/test_structure.py
test-python-tf-keras: setup
	TF_USE_LEGACY_KERAS=1 $(PY) -m pytest -q $(addprefix --ignore=,$(KERAS_FREE_TESTS))

test-tf215: $(VENV215)/.installed
	$(VENV215)/bin/python -m pytest -q $(QUICK_TESTS)

test-py312: $(VENV312)/.installed $(VENV)/.r-package
	$(VENV312)/bin/python -m op_tensorflow.stack --expect-tensorflow 2.21.0
	$(VENV312)/bin/python -m pytest -q tests/test_accounting.py tests/test_optimizers_keras3.py
	RETICULATE_PYTHON=$(CURDIR)/$(VENV312)/bin/python Rscript tests/r_smoke.R

bench-tf-keras: setup
	TF_USE_LEGACY_KERAS=1 $(PY) bench/bench_model.py
	TF_USE_LEGACY_KERAS=1 $(PY) bench/bench_distributed.py
	TF_USE_LEGACY_KERAS=1 $(PY) bench/bench_noise.py
	TF_USE_LEGACY_KERAS=1 $(PY) bench/bench_profile.py

bench: setup
	$(PY) bench/bench_accounting.py
	$(PY) bench/bench_loader.py
	$(PY) bench/bench_model.py
	$(PY) bench/bench_preflight.py
	$(PY) bench/bench_distributed.py
	$(PY) bench/bench_noise.py
	$(PY) bench/bench_stacks.py
	$(PY) bench/bench_profile.py

clean:
	rm -rf $(VENV) $(VENV215) $(VENV312) .pytest_cache .hypothesis .rcheck .vignettes-tf-keras r_pkg/vignettes
