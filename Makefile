# tabby: build, test and demo. `make demo` runs tabby for real; `make test` runs every test.
GO       ?= go
BIN      := bin
VERSION  := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
# Debian packages the tests use; `make deps` installs those that are missing.
# qemu-system-x86 and xz-utils: internal/vmtest boots Debian's kernel for what this one lacks (ipip).
# tcpdump: the encapsulation tests capture the underlay; iperf3: the encapsulation benchmark.
# systemd: the install test runs systemd-analyze verify on the units.
APT_PACKAGES := iproute2 iputils-ping curl dnsutils dnsmasq-base iptables ipset nftables conntrack bird2 frr gobgpd qemu-system-x86 xz-utils tcpdump iperf3 systemd
# What `make demo` needs and no more: the tools examples/demo.sh checks for (ip, ping, dig,
# curl, nft) and those the agent runs (iptables, ipset). TestDemoPackages keeps the two
# lists in step.
DEMO_PACKAGES := iproute2 iputils-ping dnsutils curl nftables iptables ipset
# Empty: each fuzz target runs a count of inputs (about 15 s here); FUZZTIME=10m runs each
# that long.
FUZZTIME ?=

# make install: PREFIX and DESTDIR as usual; the CNI plugin and its configuration go where
# container runtimes look, the units where the distribution's own go.
PREFIX       ?= /usr/local
BINDIR       := $(PREFIX)/bin
CNI_BIN_DIR  ?= /opt/cni/bin
CNI_CONF_DIR ?= /etc/cni/net.d
SYSTEMD_DIR  ?= /lib/systemd/system
CONF_DIR     ?= /etc/tabby

# apt-install installs the Debian packages of $(1) that are missing, quietly.
apt-install = @missing=""; for p in $(1); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) $$missing >/dev/null; fi

.PHONY: build test deps demo-deps lint fuzz demo bench install clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

deps:
	$(call apt-install,$(APT_PACKAGES))

demo-deps:
	$(call apt-install,$(DEMO_PACKAGES),--no-install-recommends)

# What an operator installs on a node: tabby-node, tabbyctl, the CNI plugin and its
# configuration, the systemd units and the agent's environment file. tabby-lab, a
# development tool, stays in bin/. Configuration files that exist are kept.
install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(CNI_BIN_DIR) $(DESTDIR)$(CNI_CONF_DIR) $(DESTDIR)$(SYSTEMD_DIR)
	install -d -m 0755 $(DESTDIR)$(CONF_DIR)
	install -m 0755 $(BIN)/tabby-node $(BIN)/tabbyctl $(DESTDIR)$(BINDIR)/
	install -m 0755 $(BIN)/tabby-cni $(DESTDIR)$(CNI_BIN_DIR)/
	for u in dist/systemd/*.service; do \
		sed 's|/usr/local/bin/|$(BINDIR)/|g' $$u > $(DESTDIR)$(SYSTEMD_DIR)/$${u##*/} && \
		chmod 0644 $(DESTDIR)$(SYSTEMD_DIR)/$${u##*/} || exit 1; done
	@for f in $(CNI_CONF_DIR)/10-tabby.conflist:dist/cni/10-tabby.conflist:0644 \
		$(CONF_DIR)/tabby-node.env:dist/tabby-node.env:0600; do \
		dst=$(DESTDIR)$${f%%:*}; rest=$${f#*:}; \
		if [ -e $$dst ]; then echo "kept $$dst (exists; the new one is $${rest%%:*})"; \
		else install -m $${rest#*:} $${rest%%:*} $$dst && echo "installed $$dst"; fi; done

lint:
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then \
		echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# Each fuzz target runs briefly on every test run; longer runs: make fuzz FUZZTIME=10m.
# The short runs count inputs (Nx) rather than time: Go 1.26's fuzz coordinator can fail
# a run with "context deadline exceeded" when its -fuzztime ends while a worker is busy
# (golang/go#75804, fixed in Go 1.27), which a count never reaches.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(or $(FUZZTIME),300000x) ./policy/selector
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(or $(FUZZTIME),20000x) ./api
	$(GO) test -run '^$$' -fuzz '^FuzzZoneAnswer$$' -fuzztime $(or $(FUZZTIME),150000x) ./dns
	$(GO) test -run '^$$' -fuzz '^FuzzServeDNS$$' -fuzztime $(or $(FUZZTIME),150000x) ./dns

test: deps lint
	$(GO) test -count=1 -timeout 15m ./...
	$(MAKE) fuzz

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
	TABBY_VM_BENCH=1 $(GO) test -run '^TestIPIPThroughputVM$$' -v ./felix

demo: demo-deps build
	$(GO) build -o $(BIN)/ ./examples/demo/demo-web
	./examples/demo.sh

clean:
	rm -rf $(BIN)
