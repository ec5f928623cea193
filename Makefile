# livesplice: make build test lint bench demo
GO ?= go

.PHONY: build test lint bench demo clean

build:
	$(GO) build -o bin/livesplice ./cmd/livesplice

test:
	$(GO) test -count=1 -timeout 40m ./...

lint:
	gofmt -l . | (! grep .)
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	$(GO) test -race -count=1 ./internal/ptrace/ ./internal/unwind/ ./internal/build/

bench:
	$(GO) run ./bench

demo: build
	./scripts/demo.sh

clean:
	rm -rf bin
