// Package config reads roost.toml, the file that describes a roost app and
// the node that serves it.
//
// The file uses wrangler's keys where wrangler has them — name,
// [[durable_objects.bindings]], [[kv_namespaces]], [vars] — so that a Workers
// user can bring what they know (and most of a wrangler.toml) across, and adds
// roost's own tables for what wrangler never needed: [node], [cluster],
// [storage] and [runtime].
//
// Parsing is strict on purpose. A misspelt key in a config file otherwise
// fails silently: the setting keeps its default and the operator finds out
// in production. So every key roost does not know is an error that names its
// full path, and every error wraps ErrInvalidConfig. The exceptions are
// [[migrations]] and a namespace's preview_id, which wrangler files
// routinely carry and which mean nothing to roost; they are accepted and
// reported in File.Notices.
//
// The package only reads and checks the file. A zero value in File means
// "not set": defaults belong to whoever consumes the file (the node's
// DefaultConfig, the CLI's flags), which is what lets flags and environment
// variables override the file without the file inventing values of its own.
package config
