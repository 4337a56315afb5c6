# tabby: build, test and demo. `make demo` runs tabby for real; `make test` runs every test.
GO       ?= go
BIN      := bin
VERSION  := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
# Debian packages the tests use; `make deps` installs those that are missing.
# qemu-system-x86 and xz-utils: internal/vmtest boots Debian's kernel for what this one lacks (ipip).
# tcpdump: the encapsulation tests capture the underlay; iperf3: the encapsulation benchmark.
APT_PACKAGES := iproute2 iputils-ping curl dnsutils dnsmasq-base iptables ipset conntrack bird2 frr gobgpd qemu-system-x86 xz-utils tcpdump iperf3
FUZZTIME ?= 15s

.PHONY: build test deps lint fuzz demo bench clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

lint:
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then \
		echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# Each fuzz target runs briefly on every test run; longer runs: make fuzz FUZZTIME=10m.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./policy/selector
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./api
	$(GO) test -run '^$$' -fuzz '^FuzzZoneAnswer$$' -fuzztime $(FUZZTIME) ./dns
	$(GO) test -run '^$$' -fuzz '^FuzzServeDNS$$' -fuzztime $(FUZZTIME) ./dns

test: deps lint
	$(GO) test -count=1 -timeout 15m ./...
	$(MAKE) fuzz

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
	TABBY_VM_BENCH=1 $(GO) test -run '^TestIPIPThroughputVM$$' -v ./felix

demo: deps build
	$(GO) build -o $(BIN)/ ./examples/demo/demo-web
	./examples/demo.sh

clean:
	rm -rf $(BIN)
