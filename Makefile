# MedAI headless environment: `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Use the CPU build of torch from a local wheel folder when the machine has one.
WHEELS := $(wildcard /opt/wheels)
PIP_FLAGS := $(if $(WHEELS),--find-links $(WHEELS),)
# Test processes for `make test` (pytest-xdist): one per core, at most 4. `make test TEST_WORKERS=0` runs in one.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
DEMO_TOOLS := dcmtk:dcmp2pgm
DEBIAN_TOOLS := dicom3tools:dciodvfy dcmtk:dsr2xml libgdcm-tools:gdcmconv orthanc:Orthanc orthanc-dicomweb:/usr/share/orthanc/plugins/libOrthancDicomWeb.so \
	chromium:/usr/bin/chromium libegl1:/usr/lib/x86_64-linux-gnu/libEGL.so.1 \
	libegl-mesa0:/usr/share/glvnd/egl_vendor.d/50_mesa.json libgl1-mesa-dri:/usr/lib/x86_64-linux-gnu/dri/swrast_dri.so

.PHONY: all venv dev-deps system-deps demo-deps demo test lint bench train clean

all: test

# Everything `make demo` and the medai CLI need at run time (requirements.txt is also what Slicer installs;
# requirements-headless.txt adds what only the headless install needs: slicer-core's MRML; requirements-ray.txt
# adds Ray for `medai batch`; requirements-view.txt adds trame-slicer for `medai view`).
$(VENV)/.installed: Resources/requirements.txt Resources/requirements-headless.txt Resources/requirements-ray.txt \
		Resources/requirements-view.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install $(PIP_FLAGS) "torch==2.13.0"
	$(PIP) install $(PIP_FLAGS) -r Resources/requirements.txt -r Resources/requirements-headless.txt \
		-r Resources/requirements-ray.txt -r Resources/requirements-view.txt
	$(PIP) install --no-deps -e .
	touch $@

venv: $(VENV)/.installed

$(VENV)/.dev-installed: $(VENV)/.installed Resources/requirements-dev.txt
	$(PIP) install $(PIP_FLAGS) -r Resources/requirements-dev.txt
	touch $@

dev-deps: $(VENV)/.dev-installed

# Debian packages the tests need (dciodvfy, dsr2xml, dcmtk/gdcm re-encoders, Orthanc + its DICOMweb plugin, chromium
# and Mesa's EGL for the browser tests of `medai view`); installed only when missing.
# Install the Debian packages of the given package:tool pairs whose tool is missing.
define install_missing
	@missing=""; for pair in $(1); do pkg=$${pair%%:*}; tool=$${pair##*:}; \
	  { command -v $$tool >/dev/null 2>&1 || test -e $$tool; } || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  echo "Installing Debian packages:$$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
endef

system-deps:
	$(call install_missing,$(DEBIAN_TOOLS))

# What `make demo` itself needs from Debian: dcmtk's dcmp2pgm renders the demo's Presentation State to a PNG.
demo-deps:
	$(call install_missing,$(DEMO_TOOLS))

demo: venv demo-deps
	$(VENV)/bin/medai demo --output medai-demo

test: dev-deps system-deps
	$(VENV)/bin/ruff check MedAIExtension Modules Testing bench Utilities
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: dev-deps
	$(VENV)/bin/ruff check MedAIExtension Modules Testing bench Utilities
	$(VENV)/bin/mypy

bench: dev-deps
	$(PY) bench/segmentation.py
	$(PY) bench/tracking.py
	$(PY) bench/explain.py
	$(PY) bench/review.py
	$(PY) bench/gateway.py

train: venv
	$(PY) -m MedAIExtension.training.train --iterations 1800 --train-cases 24
	$(PY) -m MedAIExtension.training.train --init Resources/Models/chest-ct-lung-nodule-bundle/models/model.pt \
		--iterations 1500 --train-cases 32 --case-seed 3000 --lr 1e-3 --nodule-weight 3 --nodule-share 0.45 --version 1.1.0
	$(PY) -m MedAIExtension.training.train --init Resources/Models/chest-ct-lung-nodule-bundle/models/model.pt \
		--iterations 3000 --train-cases 32 --case-seed 5000 --v2-share 0.75 --lr 1e-3 --nodule-weight 3 \
		--nodule-share 0.45 --max-diameter 30 --heldout 2 --version 2.0.0
	$(PY) -m MedAIExtension.training.train --init Resources/Models/chest-ct-lung-nodule-bundle/models/model.pt \
		--iterations 2400 --train-cases 40 --case-seed 5200 --v2-share 0.875 --lr 7e-4 --nodule-weight 3 \
		--nodule-share 0.6 --max-diameter 30 --v2-max-nodules 7 --v2-diameter 3 20 --flip --heldout 2 --version 2.1.0
	$(PY) -m MedAIExtension.training.train_lesion_filter --model chest-ct-lung-nodule \
		--train-seeds 6000-6047 --val-seeds 6100-6131 --max-fp-per-scan 1.0
	$(PY) -m MedAIExtension.training.train_lesion_extent --model chest-ct-lung-nodule --seeds 6100-6115
	$(PY) -m MedAIExtension.training.train_classifier

clean:
	rm -rf $(VENV) medai-demo .pytest_cache
