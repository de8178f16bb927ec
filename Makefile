# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned: on these machines 2.13.0 is a local CPU wheel; unpinned, pip would fetch CUDA builds
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
OUT    := out

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Until the text-to-video model ships, the demo renders a Shapes World story and round-trips
# it through the shipped tokenizer: tokens, reconstruction, side-by-side, PSNR/SSIM.
demo: $(STAMP)
	mkdir -p $(OUT)
	$(BIN)/phenaki data render prompts/shapes/three_friends.txt -o $(OUT)/demo-source.mp4 --overwrite
	$(BIN)/phenaki tokenize $(OUT)/demo-source.mp4 -o $(OUT)/demo-tokens.npz --overwrite
	$(BIN)/phenaki reconstruct $(OUT)/demo-source.mp4 -o $(OUT)/demo-reconstruction.mp4 \
		--compare $(OUT)/demo-side-by-side.mp4 --overwrite
	$(BIN)/phenaki eval $(OUT)/demo-source.mp4 --story prompts/shapes/three_friends.txt
	@echo "demo outputs are in $(OUT)/: demo-source.mp4, demo-tokens.npz, demo-reconstruction.mp4, demo-side-by-side.mp4"

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/tokenizer.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
