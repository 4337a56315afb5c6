package main

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"
)

// envPrefix starts the environment variable of every flag: --etcd-endpoints is
// TABBY_ETCD_ENDPOINTS. An EnvironmentFile (dist/systemd) sets flags this way.
const envPrefix = "TABBY_"

// envName is the environment variable that sets the flag called name.
func envName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// setFromEnv sets every flag that is not on the command line from its environment
// variable, when that is set and not empty: flags win over the environment. A value the
// flag refuses is an error naming the variable.
func setFromEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "help" || f.Name == "version" {
			return
		}
		name := envName(f.Name)
		v, ok := lookup(name)
		if !ok || v == "" {
			return
		}
		if serr := fs.Set(f.Name, v); serr != nil {
			err = fmt.Errorf("environment %s=%q (--%s): %w", name, v, f.Name, serr)
		}
	})
	return err
}

// noteEnv adds "(env TABBY_…)" to every flag's help.
func noteEnv(fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		f.Usage += " (env " + envName(f.Name) + ")"
	})
}
