# Everything a fresh machine needs: `make demo` or `make test` create .venv and install first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := demo_output

# The venv's own Python and pip, whatever the environment says: another Python's modules or
# home (PYTHONPATH, PYTHONHOME) would stand in for the venv's, and pip's user installs
# (PIP_USER, pip.conf's `user = true`) cannot go into a venv.
unexport PYTHONPATH PYTHONHOME
export PIP_USER := 0

.DEFAULT_GOAL := help
.PHONY: help demo test install samples readme-images clean

help:
	@echo "make demo           set up $(VENV) (the first time: a few minutes) and restore a sample photo"
	@echo "make test           set up $(VENV) if needed and run the tests"
	@echo "make install        set up $(VENV) only"
	@echo "make samples        redraw the bundled sample images"
	@echo "make readme-images  the README's before/after pictures (about 4 minutes)"
	@echo "make clean          remove $(VENV) and the demo's output"

# The venv is (re)made where it cannot serve: no Python that runs (a venv whose Python was
# removed or upgraded away), one older than 3.10, or one made for another folder (a clone
# moved after its set-up: its scripts name the old path; the stamp names the folder it was
# installed for, as the shell's `pwd -P` writes it: make's $(CURDIR) in a command broke on a
# folder named with a quote or a dollar sign). One without pip (killed while it was made, or
# made without) gets pip. The check runs when make reads this file, to decide whether the
# stamp is stale, and again in the recipe (after `make clean`, say).
RUNS   := import sys; sys.exit(sys.version_info < (3, 10))
STALE  := s="$$(cat $(STAMP) 2>/dev/null)"; [ -n "$$s" ] && [ "$$s" != "$$(pwd -P)" ]
HERE   := $(shell env -u PYTHONPATH -u PYTHONHOME $(BIN)/python -c 'import pip; $(RUNS)' \
            >/dev/null 2>&1 && ! { $(STALE); } && echo yes)
ifneq ($(HERE),yes)
.PHONY: $(STAMP)
endif

# (Re)install when the package metadata changes: the package itself editable, with the test
# tools and matplotlib (the [plot] extra, for --report).
$(STAMP): pyproject.toml
	@if ! $(BIN)/python -c '$(RUNS)' 2>/dev/null || { $(STALE); }; then \
	  $(PYTHON) -c '$(RUNS)' 2>/dev/null || { \
	    echo "dip needs Python 3.10 or newer, and '$(PYTHON)' is" \
	         "$$(command -v $(PYTHON) >/dev/null && $(PYTHON) --version 2>&1 || echo 'not found');" \
	         "name one that is: make $(or $(MAKECMDGOALS),install) PYTHON=python3.12" >&2; \
	    exit 1; }; \
	  if [ -e $(VENV) ]; then echo "remaking $(VENV): its Python does not run, is older than 3.10, or was set up in another folder"; fi; \
	  rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); \
	elif ! $(BIN)/python -c 'import pip' 2>/dev/null; then \
	  $(BIN)/python -m ensurepip --default-pip >/dev/null; \
	fi
	$(BIN)/python -m pip install --quiet -e '.[test,plot]'
	@pwd -P > $(STAMP)

install: $(STAMP)

# Default settings (the fast preset on a CPU: two fits averaged, the paper's and SURE's),
# automatic stop: about 80 s on a 2-core CPU, with the report.
demo: $(STAMP)
	@echo "Denoising sample_images/landscape_noisy.png (128x128, sigma 25) until dip decides to stop..."
	$(BIN)/dip denoise sample_images/landscape_noisy.png -o $(DEMO)/landscape_denoise.png \
		--reference sample_images/landscape.png --overwrite --report
	@echo "Restored image: $(DEMO)/landscape_denoise.png (noisy input: sample_images/landscape_noisy.png)"
	@echo "What happened, as a picture: $(DEMO)/landscape_denoise_report.png"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# Redraw the bundled sample images (deterministic: same bytes every time).
samples: $(STAMP)
	$(BIN)/python sample_images/make_samples.py

# The README's before/after pictures: each task on the bundled sample images with the default
# settings, its report kept in docs/images/ (about 4 minutes on a 2-core CPU).
READMEIMG := docs/images
readme-images: $(STAMP)
	$(BIN)/dip denoise sample_images/landscape_noisy.png --reference sample_images/landscape.png \
		-o $(READMEIMG)/denoise.png --report --overwrite -q
	$(BIN)/dip inpaint sample_images/landscape_holes.png --mask sample_images/landscape_holes_mask.png \
		--reference sample_images/landscape.png -o $(READMEIMG)/inpaint.png --report --overwrite -q
	$(BIN)/dip superres sample_images/landscape_small.png --factor 4 \
		--reference sample_images/landscape.png -o $(READMEIMG)/superres.png --report --overwrite -q
	@echo "wrote $(READMEIMG)/{denoise,inpaint,superres}_report.png"

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .ruff_cache dip_restore.egg-info
