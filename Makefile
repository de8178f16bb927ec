# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned: on these machines 2.13.0 is a local CPU wheel; unpinned, pip would fetch CUDA builds
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
OUT    := out

MODEL  ?= models/shapes-64
TRAIN  ?= train-runs

.PHONY: install demo stories eval eval-tasks test bench train-demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The main job: a story script → video + storyboard + sidecar JSON, then the analyser's verdict.
demo: $(STAMP)
	mkdir -p $(OUT)
	$(BIN)/phenaki story prompts/shapes/three_friends.txt -o $(OUT)/demo.mp4 --model $(MODEL) --storyboard --overwrite
	$(BIN)/phenaki eval $(OUT)/demo.mp4
	@echo "demo outputs: $(OUT)/demo.mp4, $(OUT)/demo.storyboard.png, $(OUT)/demo.json"

# Every Shapes World script in prompts/ (the paper's stories need a real-world model: MODEL=...).
stories: $(STAMP)
	mkdir -p $(OUT)/stories
	for script in prompts/shapes/*.txt; do \
		$(BIN)/phenaki story $$script -o $(OUT)/stories/$$(basename $$script .txt).mp4 --model $(MODEL) \
			--storyboard --overwrite --quiet || exit 1; \
	done
	$(BIN)/phenaki eval --suite $(OUT)/stories

# The evaluation suite of the model card: 50 unseen stories, then 50 with held-out compositions, then
# the same 50 test stories through the tokenizer alone (the ceiling any transformer can reach with it).
eval: $(STAMP)
	$(BIN)/phenaki eval --generate 50 --split test --model $(MODEL)
	$(BIN)/phenaki eval --generate 50 --split heldout --model $(MODEL)
	$(BIN)/phenaki eval --generate 50 --split test --ceiling --model $(MODEL)

# Completion tasks on 30 Shapes World test scenes each (README: Completing and editing video).
eval-tasks: $(STAMP)
	for task in predict rewind infill image inpaint edit; do \
		$(BIN)/phenaki eval --generate 30 --task $$task --model $(MODEL) --quiet || exit 1; \
	done

# Reproduce the shipped model from scratch with the project's own commands, stage by stage as it was
# trained (about 15 hours of CPU time in bf16, one core per stage; MODEL_CARD.md, "Training"). Each
# stage stops where the shipped one did (--until-step, on its own schedule) and resumes with --resume.
TASKS := predict=0.1,rewind=0.1,infill=0.1,box=0.1
train-demo: $(STAMP)
	$(BIN)/phenaki train-tokenizer shapes -o $(TRAIN)/tokenizer --preset shapes --config configs/shapes-64/tokenizer.json \
		--time-encoding stationary --encoder-window 1 --decoder-window 1 --refine-channels 32 --lr 5e-4 \
		--batch-size 8 --frames 17 --steps 6000 --until-step 2000 --resume
	$(BIN)/phenaki train-tokenizer shapes -o $(TRAIN)/decoder --init-from $(TRAIN)/tokenizer --decoder-only \
		--lr 3e-4 --batch-size 8 --frames 17 --steps 3000 --until-step 2147 --resume
	test -d $(TRAIN)/text || $(BIN)/phenaki data text-encoder -o $(TRAIN)/text
	test -d $(TRAIN)/tokens || $(BIN)/phenaki data encode shapes -o $(TRAIN)/tokens --tokenizer $(TRAIN)/tokenizer \
		--text-encoder $(TRAIN)/text --clips 8000 --frames 21 --prime-frames 5
	$(BIN)/phenaki train $(TRAIN)/tokens -o $(TRAIN)/model --tokenizer $(TRAIN)/tokenizer \
		--config configs/shapes-64/transformer.json --attention factorized --positions rotary --frames 21 \
		--prime-frames 5 --batch-size 8 --lr 1e-3 --steps 30000 --until-step 21131 --tasks $(TASKS) --resume
	$(BIN)/phenaki train $(TRAIN)/tokens -o $(TRAIN)/annealed --init-from $(TRAIN)/model --batch-size 8 --lr 5e-4 \
		--steps 400 --corrupt 0.2 --tasks $(TASKS) --resume
	$(BIN)/phenaki export $(TRAIN)/annealed -o $(TRAIN)/shapes-64 --tokenizer $(TRAIN)/decoder --guidance 2 \
		--card $(MODEL)/MODEL_CARD.md --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/tokenizer.py
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/sampling.py
	$(BIN)/python bench/token_locality.py
	$(BIN)/python bench/transformer_probe.py
	$(BIN)/python bench/long_story.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
