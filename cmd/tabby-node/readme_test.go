package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestREADMEFlagTable: the README's tabby-node table has one row for every flag, with the
// flag's environment variable, and no row for a flag that does not exist.
func TestREADMEFlagTable(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const header = "| flag | environment | default | meaning |"
	readme := string(b)
	i := strings.Index(readme, header)
	if i < 0 {
		t.Fatalf("README.md has no table %q", header)
	}
	flagRE := regexp.MustCompile("`--([a-z0-9-]+)`")
	envRE := regexp.MustCompile("`(TABBY_[A-Z0-9_]+)`")
	rows := map[string]int{}
	for n, line := range strings.Split(readme[i:], "\n")[2:] {
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(line, " | ")
		if len(cells) < 4 {
			t.Errorf("row %d: want 4 cells: %s", n+1, line)
			continue
		}
		var flags, envs []string
		for _, m := range flagRE.FindAllStringSubmatch(cells[0], -1) {
			flags = append(flags, m[1])
		}
		for _, m := range envRE.FindAllStringSubmatch(cells[1], -1) {
			envs = append(envs, m[1])
		}
		var want []string
		for _, f := range flags {
			want = append(want, envName(f))
			rows[f]++
		}
		if len(flags) == 0 || !slices.Equal(envs, want) {
			t.Errorf("row %d: flags %v, environment %v, want %v: %s", n+1, flags, envs, want, line)
		}
	}
	fs := newRootCommand().Flags()
	fs.VisitAll(func(f *pflag.Flag) {
		if rows[f.Name] != 1 {
			t.Errorf("--%s has %d rows in the README's tabby-node table, want 1", f.Name, rows[f.Name])
		}
		delete(rows, f.Name)
	})
	for f := range rows {
		t.Errorf("the README's tabby-node table has a row for --%s, which tabby-node does not have", f)
	}
}
