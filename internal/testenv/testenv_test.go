package testenv

import (
	"testing"
)

// recorder is a testing.TB that records whether the test skipped or failed, and stops
// the goroutine as the real methods do.
type recorder struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (r *recorder) Helper() {}
func (r *recorder) Skip(args ...any) {
	r.skipped, r.msg = true, args[0].(string)
	panic(r)
}
func (r *recorder) Fatal(args ...any) {
	r.failed, r.msg = true, args[0].(string)
	panic(r)
}

func run(f func(testing.TB)) (r *recorder) {
	r = &recorder{}
	defer func() {
		if p := recover(); p != nil && p != r {
			panic(p)
		}
	}()
	f(r)
	return r
}

func TestMissingSkipsOutsideCIAndFailsUnderCI(t *testing.T) {
	t.Setenv("CI", "")
	if r := run(func(tb testing.TB) { Missing(tb, "x is missing") }); !r.skipped || r.failed {
		t.Errorf("outside CI: skipped=%v failed=%v", r.skipped, r.failed)
	}
	t.Setenv("CI", "true")
	if r := run(func(tb testing.TB) { Missing(tb, "x is missing") }); !r.failed || r.skipped {
		t.Errorf("under CI: skipped=%v failed=%v", r.skipped, r.failed)
	}
}

func TestRequireTools(t *testing.T) {
	t.Setenv("CI", "true")
	r := run(func(tb testing.TB) { RequireTools(tb, Tool{"sh", "dash"}, Tool{"no-such-command-tabby", "tabby-pkg"}) })
	if !r.failed || r.msg != "no-such-command-tabby is missing: install the Debian package tabby-pkg (make deps) (CI is set: this is a failure)" {
		t.Errorf("failed=%v msg=%q", r.failed, r.msg)
	}
	if r := run(func(tb testing.TB) { RequireTools(tb, Tool{"sh", "dash"}) }); r.failed || r.skipped {
		t.Errorf("a present tool: failed=%v skipped=%v", r.failed, r.skipped)
	}
}
