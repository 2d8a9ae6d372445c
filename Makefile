# Everything a fresh machine needs: `make demo` or `make test` create .venv and install first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := demo_output

.PHONY: demo test install samples clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the package metadata changes; the package itself is installed editable.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Default settings (the fast preset on a CPU), automatic stop: about 50 s on a 2-core CPU.
demo: $(STAMP)
	@echo "Denoising sample_images/landscape_noisy.png (128x128, sigma 25) until dip decides to stop..."
	$(BIN)/dip denoise sample_images/landscape_noisy.png -o $(DEMO)/landscape_denoise.png \
		--reference sample_images/landscape.png --overwrite
	@echo "Restored image: $(DEMO)/landscape_denoise.png (noisy input: sample_images/landscape_noisy.png)"

test: $(STAMP)
	$(BIN)/python -m pytest

# Redraw the bundled sample images (deterministic: same bytes every time).
samples: $(STAMP)
	$(BIN)/python sample_images/make_samples.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
