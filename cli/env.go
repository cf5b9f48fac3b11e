package cli

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/roostdb/roost/config"
)

// A ROOST_* variable roost does not know is refused rather than ignored:
// a misspelt one (ROOST_GOSIP_KEY) would otherwise leave its setting at the
// default and the operator would find out in production, as config does for
// a misspelt key in roost.toml.

// errUnknownEnv is the error of a ROOST_* variable that no roost command
// reads.
var errUnknownEnv = errors.New("unknown environment variable")

// envPrefix is the prefix of roost's variables.
const envPrefix = "ROOST_"

// envUsedElsewhere are ROOST_* variables that the repository's own
// scripts, Makefile, docker-compose.yml and benchmarks read, not the
// command line. They are exported in shells that also run roost, so they
// must not stop it.
var envUsedElsewhere = []string{
	"ROOST_BIN",                // scripts/bench-compare.sh, the Makefile
	"ROOST_COMPOSE_APP_PORT",   // docker-compose.yml's host ports
	"ROOST_COMPOSE_ADMIN_PORT", // docker-compose.yml's host ports
	"ROOST_BENCH_INFLIGHT",     // node's benchmarks
}

// envTestPrefix is the prefix of variables that tests set for themselves
// (ROOST_TEST_LEAK_CHILD).
const envTestPrefix = "ROOST_TEST_"

// k8sServiceEnv matches the variables Kubernetes puts in every pod for each
// Service of its namespace (service links): the shipped manifests'
// "roost-app" Service gives ROOST_APP_SERVICE_HOST, ROOST_APP_PORT_8787_TCP
// and so on. A bare NAME_PORT is only one when its value is a URL
// (tcp://10.0.0.1:8787), so that ROOST_HTTP_PORT=9000, a likely mistake, is
// still refused.
var (
	k8sServiceEnv     = regexp.MustCompile(`^ROOST(_[A-Z0-9_]+)?_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)$`)
	k8sServicePortEnv = regexp.MustCompile(`^ROOST(_[A-Z0-9_]+)?_PORT$`)
)

// knownEnv are the variables roost's commands read: every setting's, the
// gossip and id keys, and the operator commands' address and token.
func knownEnv() []string {
	known := append(settingEnvs(nodeSettings), gossipKeyEnv, idKeyEnv, envAdminAddr, envAdminToken)
	sort.Strings(known)
	return known
}

// checkEnv returns an error naming every ROOST_* variable of environ
// ("NAME=value" entries, as os.Environ gives them) that roost does not
// know, with the known one it probably meant, if one is close.
func checkEnv(environ []string) error {
	known := knownEnv()
	allowed := map[string]bool{}
	for _, k := range append(known, envUsedElsewhere...) {
		allowed[k] = true
	}
	var bad []string
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) || allowed[name] || strings.HasPrefix(name, envTestPrefix) ||
			k8sServiceEnv.MatchString(name) || k8sServicePortEnv.MatchString(name) && strings.Contains(value, "://") {
			continue
		}
		msg := name
		if near := closestEnv(name, known); near != "" {
			msg += " (did you mean " + near + "?)"
		}
		bad = append(bad, msg)
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	return fmt.Errorf("%w: %s: roost reads only the ROOST_* variables its commands' --help lists; correct the name or unset it",
		errUnknownEnv, strings.Join(bad, ", "))
}

// envCheck is a PersistentPreRunE that refuses to run a command, and its
// subcommands, while environ holds an unknown ROOST_* variable.
func envCheck(environ func() []string) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		if err := checkEnv(environ()); err != nil {
			return &usageError{cmd: cmd, err: err}
		}
		return nil
	}
}

// closestEnv is the name in known nearest to name, if it is close enough
// to be a typo of it (at most a third of its letters edited, at most 3),
// else "".
func closestEnv(name string, known []string) string {
	best, bestDist := "", 0
	for _, k := range known {
		d := config.EditDistance(name, k)
		if d <= 3 && d*3 <= len(k)-len(envPrefix) && (best == "" || d < bestDist) {
			best, bestDist = k, d
		}
	}
	return best
}
