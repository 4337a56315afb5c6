// Package testenv owns one rule for tests that need something of the machine (root, a
// command from a Debian package, shared test data): outside CI, a test that lacks it
// skips with a message saying how to get it; under CI (env CI set, as .ci/run runs the
// tests) it fails, because CI provides everything and a skip there would hide a gap.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// InCI says whether the tests run under CI.
func InCI() bool { return os.Getenv("CI") != "" }

// Missing skips the test outside CI and fails it under CI, with msg saying what is
// missing and how to get it.
func Missing(t testing.TB, msg string) {
	t.Helper()
	if InCI() {
		t.Fatal(msg + " (CI is set: this is a failure)")
	}
	t.Skip(msg + " (set CI=1 to make this a failure)")
}

// RequireRoot needs the test to run as root, for what says why.
func RequireRoot(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, what+" needs root: run the tests as root")
	}
}

// Tool is a command and the Debian package that provides it.
type Tool struct{ Cmd, Package string }

// RequireTools needs every tool on PATH.
func RequireTools(t testing.TB, tools ...Tool) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool.Cmd); err != nil {
			Missing(t, fmt.Sprintf("%s is missing: install the Debian package %s (make deps)", tool.Cmd, tool.Package))
		}
	}
}
