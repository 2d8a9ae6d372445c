# Everything a fresh machine needs: `make demo` or `make test` create .venv and install first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := demo_output

.PHONY: demo test install samples readme-images clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the package metadata changes; the package itself is installed editable,
# with the test tools and matplotlib (the [plot] extra, for --report).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,plot]'
	touch $(STAMP)

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
	rm -rf $(VENV) $(DEMO) .pytest_cache
