package felix

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// CommandRunner runs a command and returns its standard output; stdin may be nil. felix
// runs iptables-save/-restore and ipset through one, so that tests can fake them.
type CommandRunner interface {
	Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)
}

var _ CommandRunner = Runner{}

// Runner is the real CommandRunner: it runs a command, optionally inside a network
// namespace, and returns its standard output. stdin may be nil.
type Runner struct {
	// NetNS, when set, runs commands with "ip netns exec NetNS".
	NetNS string
}

// Run runs name with args.
func (r Runner) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	if r.NetNS != "" {
		args = append([]string{"netns", "exec", r.NetNS, name}, args...)
		name = "ip"
	}
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
