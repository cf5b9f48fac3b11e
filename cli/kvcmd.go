package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/roostdb/roost/durable"
)

// `roost kv`: the KV namespaces a node binds, through its admin API's KV
// calls (docs/admin-api.md, "KV"), in dev mode and in a cluster alike.

const kvHelp = `

--binding names the namespace as the node's configuration binds it
([[kv_namespaces]] in roost.toml, or the app's defaults). roost dev's admin
listener serves these calls too.`

// kvOptions are the flags every kv subcommand has.
type kvOptions struct {
	*adminOptions
	binding string
}

func (e adminEnv) kvOptions(cmd *cobra.Command) *kvOptions {
	o := &kvOptions{adminOptions: e.options()}
	cmd.Flags().StringVar(&o.binding, "binding", "", "the KV namespace's binding name (required)")
	o.register(cmd)
	return o
}

// check checks the flags, --binding first.
func (o *kvOptions) check(cmd *cobra.Command) error {
	if o.binding == "" {
		return &usageError{cmd: cmd, err: errors.New("--binding is required: the KV namespace's binding name")}
	}
	_, err := o.adminOptions.client(cmd)
	return err
}

// client checks the flags and builds the admin client.
func (o *kvOptions) client(cmd *cobra.Command) (*adminClient, error) {
	if err := o.check(cmd); err != nil {
		return nil, err
	}
	return o.adminOptions.client(cmd)
}

// do makes one call of the admin API's KV calls: with -o json it prints
// the answer as it came, otherwise it decodes it into out and prints it
// with show.
func (o *kvOptions) do(cmd *cobra.Command, stdout io.Writer, method, path string, body, out any, show func()) error {
	c, err := o.client(cmd)
	if err != nil {
		return err
	}
	raw, err := c.call(cmd.Context(), method, path, body, out)
	if err != nil {
		return err
	}
	if o.json() {
		return writeJSON(stdout, raw)
	}
	show()
	return nil
}

func (o *kvOptions) valuePath(key string) string { return kvValuePath(o.binding, key) }

// kvValuePath is the admin API's path of key's value in binding's namespace.
func kvValuePath(binding, key string) string {
	return "/v1/kv/" + pathSegment(binding) + "/values/" + pathSegment(key)
}

// pathSegment escapes s as one path segment. PathEscape leaves "." and
// ".." as they are, which the server's path cleaning would take as the
// segment itself or its parent, answering another call. Node IDs, operation
// IDs and bindings go through it too: "." and ".." are valid node IDs.
func pathSegment(s string) string {
	if s == "." || s == ".." {
		return strings.Repeat("%2E", len(s))
	}
	return url.PathEscape(s)
}

// kvKeysPath is the admin API's path of a page of binding's keys.
func kvKeysPath(binding string, q url.Values) string {
	return "/v1/kv/" + pathSegment(binding) + "/keys?" + q.Encode()
}

// kvPutBody is the body of the admin API's put.
// minKVTTL is the shortest expiration_ttl KV takes, as in Workers KV.
const minKVTTL = 60 * time.Second

type kvPutBody struct {
	Value         []byte          `json:"value"`
	ExpirationTTL int64           `json:"expiration_ttl,omitempty"`
	Expiration    int64           `json:"expiration,omitempty"`
	Metadata      json.RawMessage `json:"metadata,omitempty"`
}

// newKVCommand is `roost kv` and its subcommands.
func (e adminEnv) newKVCommand() *cobra.Command {
	cmd := asGroup(&cobra.Command{
		Use:   "kv",
		Short: "Read and write the KV namespaces",
		Long: `Read and write a KV namespace, as a Worker does with Env.KV: get, put, delete
and list keys; copy one namespace into another.` + kvHelp,
	})
	cmd.AddCommand(e.newKVGetCommand(), e.newKVPutCommand(), e.newKVDeleteCommand(), e.newKVListCommand(), e.newKVCopyCommand())
	return cmd
}

func (e adminEnv) newKVGetCommand() *cobra.Command {
	var o *kvOptions
	cmd := &cobra.Command{
		Use:   "get KEY --binding NAME",
		Short: "Print a key's value",
		Long: `Print the value of KEY as it is stored, with nothing added (no newline). A key
that does not exist is an error. -o json prints the key, the value (base64)
and the metadata.` + kvHelp + adminConnectHelp,
		Example: `  roost kv get config/theme --binding SETTINGS`,
		Args:    exactArgs("KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var resp struct {
				Value []byte `json:"value"`
			}
			return o.do(cmd, e.stdout, http.MethodGet, o.valuePath(args[0]), nil, &resp, func() { e.stdout.Write(resp.Value) })
		},
	}
	o = e.kvOptions(cmd)
	return cmd
}

func (e adminEnv) newKVPutCommand() *cobra.Command {
	var o *kvOptions
	var file, metadata string
	var ttl time.Duration
	var expiration int64
	cmd := &cobra.Command{
		Use:   "put KEY [VALUE] --binding NAME",
		Short: "Set a key's value",
		Long: `Set KEY to VALUE, or to the contents of --file (- for standard input),
replacing its value, metadata and expiration. --ttl or --expiration (not
both) make the key expire, at least 60 seconds from now; --metadata stores a
JSON value with the key (at most 1024 bytes).` + kvHelp + adminConnectHelp,
		Example: `  roost kv put config/theme dark --binding SETTINGS
  roost kv put session/42 --file session.json --ttl 1h --binding SESSIONS
  echo hello | roost kv put greeting --file - --metadata '{"lang":"en"}' --binding SETTINGS`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 0:
				return &usageError{cmd: cmd, err: errors.New("missing KEY")}
			case len(args) > 2:
				return &usageError{cmd: cmd, err: fmt.Errorf("KEY and VALUE expected, got %d arguments", len(args))}
			case (len(args) == 2) == (file != ""):
				return &usageError{cmd: cmd, err: errors.New("give the value as VALUE or with --file, one of the two")}
			case cmd.Flags().Changed("ttl") && cmd.Flags().Changed("expiration"):
				return &usageError{cmd: cmd, err: errors.New("give --ttl or --expiration, not both")}
			case cmd.Flags().Changed("ttl") && (ttl%time.Second != 0 || ttl < minKVTTL || ttl > durable.KVMaxExpirationTTL):
				return &usageError{cmd: cmd, err: fmt.Errorf("--ttl %s: whole seconds, at least %s and at most %s (a century)", ttl, minKVTTL, durable.KVMaxExpirationTTL)}
			case cmd.Flags().Changed("expiration") && (expiration <= 0 || expiration > durable.KVMaxExpirationUnix):
				return &usageError{cmd: cmd, err: fmt.Errorf("--expiration %d: a Unix time in seconds, at least 60 seconds from now and at most %d (the end of year 9999)", expiration, int64(durable.KVMaxExpirationUnix))}
			case cmd.Flags().Changed("metadata") && metadata == "":
				return &usageError{cmd: cmd, err: errors.New("--metadata is empty: give JSON, or leave it out for none")}
			case metadata != "" && !json.Valid([]byte(metadata)):
				return &usageError{cmd: cmd, err: fmt.Errorf("--metadata %q is not JSON", metadata)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			// The flags first: reading the value may wait on stdin.
			if err := o.check(cmd); err != nil {
				return err
			}
			value, err := readKVValue(cmd, args, file)
			if err != nil {
				return err
			}
			body := kvPutBody{Value: value, ExpirationTTL: int64(ttl / time.Second), Expiration: expiration}
			if metadata != "" {
				body.Metadata = json.RawMessage(metadata)
			}
			return o.do(cmd, e.stdout, http.MethodPut, o.valuePath(args[0]), body, nil, func() {
				fmt.Fprintf(e.stdout, "put %s (%s)\n", userCell(args[0]), byteCount(len(value)))
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&file, "file", "", "read the value from this file (- for standard input)")
	f.DurationVar(&ttl, "ttl", 0, "expire the key this long from now (at least 60s)")
	decimalInt64Var(f, &expiration, "expiration", 0, "expire the key at this Unix time (seconds)")
	f.StringVar(&metadata, "metadata", "", "JSON stored with the key")
	o = e.kvOptions(cmd)
	return cmd
}

// readKVValue reads put's value: VALUE, or --file (- for stdin). One over
// durable.KVMaxValueBytes is refused here, before it is sent (a third
// larger, in base64) for the node to refuse; the reading stops just past
// the limit.
func readKVValue(cmd *cobra.Command, args []string, file string) ([]byte, error) {
	if len(args) == 2 {
		if len(args[1]) > durable.KVMaxValueBytes {
			return nil, fmt.Errorf("the value is %s; a KV value may be at most %s", byteCount(len(args[1])), byteCount(durable.KVMaxValueBytes))
		}
		return []byte(args[1]), nil
	}
	var r io.Reader = cmd.InOrStdin()
	source := "standard input"
	if file != "-" {
		source = file
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("reading the value: %w", err)
		}
		defer f.Close()
		r = f
	}
	value, err := io.ReadAll(io.LimitReader(r, durable.KVMaxValueBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading the value: %w", err)
	}
	if len(value) > durable.KVMaxValueBytes {
		return nil, fmt.Errorf("the value in %s is over %s, the most a KV value may be", source, byteCount(durable.KVMaxValueBytes))
	}
	return value, nil
}

// byteCount is n bytes, in words.
func byteCount(n int) string {
	if n == 1 {
		return "1 byte"
	}
	return fmt.Sprintf("%d bytes", n)
}

func (e adminEnv) newKVDeleteCommand() *cobra.Command {
	var o *kvOptions
	cmd := &cobra.Command{
		Use:     "delete KEY --binding NAME",
		Short:   "Delete a key",
		Long:    `Delete KEY. Deleting a key that does not exist is not an error.` + kvHelp + adminConnectHelp,
		Example: `  roost kv delete session/42 --binding SESSIONS`,
		Args:    exactArgs("KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.do(cmd, e.stdout, http.MethodDelete, o.valuePath(args[0]), nil, nil, func() {
				fmt.Fprintf(e.stdout, "deleted %s\n", userCell(args[0]))
			})
		},
	}
	o = e.kvOptions(cmd)
	return cmd
}

func (e adminEnv) newKVListCommand() *cobra.Command {
	var o *kvOptions
	var prefix, cursor string
	var limit int
	cmd := &cobra.Command{
		Use:   "list --binding NAME",
		Short: "List keys in byte order",
		Long: `List the keys (not the values) in byte order, with their expiration and
metadata: at most --limit (1 to 1000, default 1000) of them, starting after
the page that --cursor continues. When there are more, the last line gives
the --cursor of the next page.` + kvHelp + adminConnectHelp,
		Example: `  roost kv list --binding SESSIONS --prefix session/ --limit 100`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || limit > 1000 {
				return &usageError{cmd: cmd, err: fmt.Errorf("--limit %d: 1 to 1000", limit)}
			}
			q := url.Values{"prefix": {prefix}, "cursor": {cursor}, "limit": {strconv.Itoa(limit)}}
			var page durable.KVListResult
			return o.do(cmd, e.stdout, http.MethodGet, kvKeysPath(o.binding, q), nil, &page, func() {
				tw := newTable(e.stdout)
				fmt.Fprintln(tw, "KEY\tEXPIRES\tMETADATA")
				for _, k := range page.Keys {
					exp := "-"
					if k.Expiration != 0 {
						exp = time.Unix(k.Expiration, 0).UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", userCell(k.Name), exp, userCell(strings.TrimSpace(string(k.Metadata))))
				}
				tw.Flush()
				if !page.ListComplete {
					// Quoted: a cursor can end in ".", which read as a full stop.
					fmt.Fprintf(e.stdout, "more keys: --cursor '%s'\n", page.Cursor)
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&prefix, "prefix", "", "only keys that start with this")
	decimalIntVar(f, &limit, "limit", 1000, "at most this many keys (1 to 1000)")
	f.StringVar(&cursor, "cursor", "", "continue after the page that printed it")
	o = e.kvOptions(cmd)
	return cmd
}

// kvCopied is what `roost kv copy` did.
type kvCopied struct {
	Copied   int `json:"copied"`
	Expiring int `json:"skipped_expiring"` // expire within durable.KVMinExpiration: not copied
	Vanished int `json:"skipped_vanished"` // deleted between the list and the get
}

func (e adminEnv) newKVCopyCommand() *cobra.Command {
	var o *kvOptions
	var to, prefix string
	cmd := &cobra.Command{
		Use:   "copy --binding FROM --to TO",
		Short: "Copy every key of one namespace into another",
		Long: `Copy every key of the namespace bound as --binding (only those starting with
--prefix, if given) into the one bound as --to, with its value, metadata and
expiration, page by page through the admin API. A key that expires within
60 seconds is left out (a put may not set so close an expiration), as is one
deleted while the copy runs; the summary counts both (with -o json, it is
{"copied", "skipped_expiring", "skipped_vanished"}, not an answer of the
API). Keys already in --to are overwritten; keys written to --binding during
the copy may be missed, so stop writing first.

This is how a namespace changes its number of objects ([[kv_namespaces]]
objects = N, fixed once the namespace holds keys): bind a new id with the
new N next to the old one on every node, copy, then give the new id the old
binding's name.` + kvHelp + adminConnectHelp,
		Example: `  roost kv copy --binding SESSIONS --to SESSIONS_NEW`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to == "" {
				return &usageError{cmd: cmd, err: errors.New("--to is required: the binding to copy into")}
			}
			if to == o.binding {
				return &usageError{cmd: cmd, err: fmt.Errorf("--to %s is --binding: nothing to copy", to)}
			}
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			done, err := kvCopy(cmd, c, o.binding, to, prefix, e.stderr)
			if err != nil {
				return fmt.Errorf("%w (%d keys copied before it)", err, done.Copied)
			}
			if o.json() {
				b, err := json.Marshal(done)
				if err != nil {
					return err
				}
				return writeJSON(e.stdout, b)
			}
			fmt.Fprintf(e.stdout, "copied %d keys from %s to %s", done.Copied, o.binding, to)
			if done.Expiring+done.Vanished > 0 {
				fmt.Fprintf(e.stdout, " (left out: %d expiring within a minute, %d deleted meanwhile)", done.Expiring, done.Vanished)
			}
			fmt.Fprintln(e.stdout)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&to, "to", "", "the binding of the namespace to copy into (required)")
	f.StringVar(&prefix, "prefix", "", "only keys that start with this")
	o = e.kvOptions(cmd)
	return cmd
}

// kvCopy copies the keys of binding from (with prefix) into binding to,
// printing its progress to progress every 1000 keys.
func kvCopy(cmd *cobra.Command, c *adminClient, from, to, prefix string, progress io.Writer) (kvCopied, error) {
	var done kvCopied
	// The target first: a binding the node does not have failed only at
	// the first put, and a copy with nothing to copy reported success.
	var probe durable.KVListResult
	if _, err := c.call(cmd.Context(), http.MethodGet, kvKeysPath(to, url.Values{"limit": {"1"}}), nil, &probe); err != nil {
		return done, fmt.Errorf("--to %s: %w", to, err)
	}
	for cursor := ""; ; {
		q := url.Values{"prefix": {prefix}, "cursor": {cursor}}
		var page durable.KVListResult
		if _, err := c.call(cmd.Context(), http.MethodGet, kvKeysPath(from, q), nil, &page); err != nil {
			return done, err
		}
		for _, k := range page.Keys {
			if k.Expiration != 0 && time.Until(time.Unix(k.Expiration, 0)) < durable.KVMinExpiration {
				done.Expiring++
				continue
			}
			var v struct {
				Value    []byte          `json:"value"`
				Metadata json.RawMessage `json:"metadata,omitempty"`
			}
			if _, err := c.call(cmd.Context(), http.MethodGet, kvValuePath(from, k.Name), nil, &v); err != nil {
				var ae *apiError
				if errors.As(err, &ae) && ae.status == http.StatusNotFound {
					done.Vanished++
					continue
				}
				return done, fmt.Errorf("reading %q: %w", k.Name, err)
			}
			body := kvPutBody{Value: v.Value, Expiration: k.Expiration, Metadata: v.Metadata}
			if _, err := c.call(cmd.Context(), http.MethodPut, kvValuePath(to, k.Name), body, nil); err != nil {
				// The check above ran on this clock, before the get: the
				// node, its clock ahead or later, may find the key within
				// the minute. A key that close to expiring, refused as bad
				// input, is left out as the check leaves it out.
				var ae *apiError
				if k.Expiration != 0 && errors.As(err, &ae) && ae.status == http.StatusBadRequest && time.Until(time.Unix(k.Expiration, 0)) < 2*durable.KVMinExpiration {
					done.Expiring++
					continue
				}
				return done, fmt.Errorf("writing %q: %w", k.Name, err)
			}
			done.Copied++
			if done.Copied%1000 == 0 {
				fmt.Fprintf(progress, "copied %d keys…\n", done.Copied)
			}
		}
		if page.ListComplete {
			return done, nil
		}
		cursor = page.Cursor
	}
}
