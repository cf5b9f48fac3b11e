package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/spf13/cobra"

	"github.com/roostdb/roost/durable"
)

// Exit codes. Usage mistakes get their own code so scripts can tell "you
// called it wrong" from "it ran and failed".
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// Run runs the roost command line with args (without the program name)
// serving app, and returns the process exit code:
//
//	func main() { os.Exit(cli.Run(os.Args[1:], app)) }
func Run(args []string, app *durable.App) int {
	return run(context.Background(), args, app, os.Stdout, os.Stderr)
}

// run is Run with its context and writers supplied, for tests.
func run(ctx context.Context, args []string, app *durable.App, stdout, stderr io.Writer) int {
	root := newRootCommand(app, stdout, stderr)
	root.SetArgs(normalizeArgs(root, args))
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	// Commands return errors instead of printing them (SilenceErrors), so
	// each failure is reported exactly once, here, on one line.
	fmt.Fprintf(stderr, "roost: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", ue.cmd.CommandPath())
		return exitUsage
	}
	if strings.HasPrefix(err.Error(), "unknown command") {
		// cobra's own error for `roost frobnicate`; it has no type to match.
		fmt.Fprintln(stderr, "Run 'roost --help' for usage.")
		return exitUsage
	}
	return exitFailure
}

// newRootCommand wires every command. It is the one place that knows the
// whole command tree.
func newRootCommand(app *durable.App, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "roost",
		Short: "roost runs Durable Objects on your own machines",
		Long: `roost is a self-hosted Durable Objects cluster. It serves an app — a Worker
and the Durable Object classes compiled into this binary — over HTTP, keeps
exactly one live instance of each object, and stores each object's data
durably before a response that reports a write is sent.

Start with 'roost dev', which runs a single node on this machine. Run a
cluster with 'roost node' on each machine, and operate it with 'roost status',
'roost members', 'roost shards', 'roost rebalance', 'roost drain',
'roost activate', 'roost operation', 'roost remove' and 'roost kv', which talk
to any node's admin listener. 'roost certs' makes a development CA, node
certificates and a gossip key to secure the traffic between nodes
(docs/security.md).`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	// The func is inherited by every subcommand, so all flag errors become
	// usage errors (exit 2 and a pointer to --help).
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &usageError{cmd: c, err: explainNegativeNumber(err)}
	})
	root.AddGroup(
		&cobra.Group{ID: groupServe, Title: "Run roost:"},
		&cobra.Group{ID: groupOperate, Title: "Operate a cluster (through a node's admin API):"},
	)
	for _, c := range []*cobra.Command{
		newDev(app, stdout, stderr, os.LookupEnv).cmd,
		newNode(app, stdout, stderr, os.LookupEnv).cmd,
	} {
		c.GroupID = groupServe
		c.PersistentPreRunE = envCheck(os.Environ)
		root.AddCommand(c)
	}
	for _, c := range newAdminCommands(stdout, stderr, os.LookupEnv) {
		c.GroupID = groupOperate
		// The operator commands read ROOST_ADDR and ROOST_ADMIN_TOKEN: a
		// misspelt ROOST_ADDR would send the call to the default node.
		c.PersistentPreRunE = envCheck(os.Environ)
		root.AddCommand(c)
	}
	root.AddCommand(
		newCertsCommand(stdout),
		newBenchCommand(stdout, stderr),
		newVersionCommand(stdout),
	)
	// cobra's own completion command, made now rather than at Execute so
	// that a mistyped shell is an unknown command, not help and exit 0.
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			asGroup(c)
		}
	}
	return root
}

// Groups of commands in the root's help; the rest are listed under
// "Additional Commands".
const (
	groupServe   = "serve"
	groupOperate = "operate"
)

// usageError is a mistake in how a command was called.
type usageError struct {
	cmd *cobra.Command
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// noArgs is cobra.NoArgs reported as a usage error.
// asGroup makes cmd, a command that only holds subcommands, answer a
// mistyped subcommand as one ("unknown command"), flags or not, and show
// its help when run alone. (A command that cannot run shows help for
// anything; one that parses flags fails on the subcommand's flags first.)
func asGroup(cmd *cobra.Command) *cobra.Command {
	cmd.Args = noArgs
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		// The words before the flag that failed: a mistyped subcommand
		// whose flags the group does not have. A subcommand inherits this
		// func; its words are its own arguments, and the flag is the fault.
		if args := c.Flags().Args(); c == cmd && len(args) > 0 {
			return noArgs(c, args)
		}
		return &usageError{cmd: c, err: explainNegativeNumber(err)}
	})
	return cmd
}

// negativeNumberFlag matches pflag's error for an argument such as -1,
// which it reads as short flags.
var negativeNumberFlag = regexp.MustCompile(`^unknown shorthand flag: '[0-9]' in (-[0-9][0-9.]*)$`)

// explainNegativeNumber says why "-1" was "unknown shorthand flag: '1'":
// every number a command takes is 0 or more.
func explainNegativeNumber(err error) error {
	if m := negativeNumberFlag.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Errorf("%s is not a number this command takes (shards, counts and durations are 0 or more; a word starting with - is read as flags)", m[1])
	}
	return err
}

func noArgs(cmd *cobra.Command, args []string) error {
	if err := cobra.NoArgs(cmd, args); err != nil {
		return &usageError{cmd: cmd, err: err}
	}
	return nil
}

// singleDashAnnotation marks commands that also accept Go-flag-style long
// flags (-url for --url), so that commands copied from Go benchmark tools
// and older docs keep working.
const singleDashAnnotation = "roost/single-dash-long-flags"

// normalizeArgs rewrites -name and -name=value to --name for the long flags
// of the command args select, if that command opts in. pflag would read
// -url as -u -r -l, so this has to happen before cobra parses. Shorthands
// (-c 8) and everything after "--" are left alone.
func normalizeArgs(root *cobra.Command, args []string) []string {
	cmd, _, err := root.Find(args)
	if err != nil || cmd.Annotations[singleDashAnnotation] == "" {
		return args
	}
	cmd.InitDefaultHelpFlag() // so that -help is recognised too
	out := make([]string, len(args))
	copy(out, args)
	for i, a := range out {
		if a == "--" {
			break
		}
		if len(a) < 3 || a[0] != '-' || a[1] == '-' {
			continue
		}
		name, _, _ := strings.Cut(a[1:], "=")
		if len(name) > 1 && cmd.Flags().Lookup(name) != nil {
			out[i] = "-" + a
		}
	}
	return out
}
