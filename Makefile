# livesplice: make build test lint bench demo
GO ?= go

.PHONY: build test check setup fuzz lint bench corpus demo clean kernel-test

# Every parser of untrusted bytes, fuzzed briefly (found crashers land in testdata/fuzz/).
FUZZ = ./internal/update:FuzzUnmarshal ./internal/state:FuzzDecode ./internal/unwind:FuzzUnwind \
	./internal/objdiff:FuzzLoadObject ./internal/elfsym:FuzzLoad ./internal/layout:FuzzLayout
FUZZ += ./internal/klp:FuzzModule ./internal/clobber:FuzzLoad
FUZZ += ./internal/kernel:FuzzKallsyms ./internal/kernel:FuzzKcore ./internal/kernel:FuzzNewFuncs ./internal/kernel:FuzzMatch
FUZZ += ./internal/repo:FuzzMetadata ./internal/repo:FuzzParseEntry ./internal/agent:FuzzParseConfig ./internal/fleet:FuzzParse
FUZZTIME ?= 5s

build:
	$(GO) build -o bin/livesplice ./cmd/livesplice

# Everything: installs what the tests need first (scripts/setup.sh, as root;
# idempotent), then every test, the kernel lab's QEMU boots and the Debian
# package builds included, then the fuzz targets briefly.
test: setup
	$(GO) test -count=1 -timeout 70m ./...
	$(MAKE) fuzz

setup:
	scripts/setup.sh

# The development loop: unit tests and the fast e2e cases (-short skips the
# kernel lab, the browser, apt and Debian builds, the crash sweeps and the
# compiler matrix; each skip says so). No set-up, no network.
check:
	$(GO) test -short -count=1 -timeout 10m ./...

fuzz:
	@for t in $(FUZZ); do pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$pkg $$fn"; \
		GO=$(GO) scripts/fuzz-one.sh $$pkg $$fn $(FUZZTIME) || exit 1; \
	done

lint:
	gofmt -l . | (! grep .)
	$(GO) mod tidy -diff
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	$(GO) test -race -count=1 ./internal/ptrace/ ./internal/unwind/ ./internal/build/ ./internal/process/ ./internal/server/ ./internal/agent/

bench:
	$(GO) run ./bench

# Real Debian security uploads (docs/corpus.tsv): create --deb --split, apply,
# undo, per fix; writes docs/corpus.md. Long (a Debian build per upload); as
# root, not part of make test. CORPUS=xz-utils,redis runs some.
corpus:
	$(GO) run ./bench/corpus $(if $(CORPUS),-only $(CORPUS))

# The kernel target end to end: fetch the Debian kernel (scripts/kernel-lab.sh),
# build updates, boot them under QEMU. Also part of `make test`.
kernel-test:
	$(GO) test -count=1 -timeout 40m -run 'TestKernel' -v ./e2e/

demo: build
	./scripts/demo.sh

clean:
	rm -rf bin
