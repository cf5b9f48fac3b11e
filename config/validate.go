package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"unicode"

	"github.com/roostdb/roost/durable"
)

// Validate reports every setting that cannot work, in one error wrapping
// ErrInvalidConfig. Zero values mean "not set" and are accepted; Parse has
// already refused the ones written out as zero.
func (f *File) Validate() error {
	if p := f.problems(); len(p) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, strings.Join(p, "; "))
	}
	return nil
}

// problems lists all that is wrong rather than the first thing, so one
// edit can fix a file instead of one edit per run.
func (f *File) problems() []string {
	var p []string
	bad := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

	seen := make(map[string]bool, len(f.Bindings))
	for i, b := range f.Bindings {
		switch {
		case b.Name == "":
			bad("durable_objects.bindings[%d] (class %q) has no name", i, b.ClassName)
		case durable.CheckBindingName(b.Name) != nil:
			bad("durable_objects.bindings[%d]: %v", i, durable.CheckBindingName(b.Name))
		case seen[b.Name]:
			bad("durable_objects.bindings: %q is bound twice", b.Name)
		}
		seen[b.Name] = true
		if b.ClassName == "" {
			bad("durable_objects.bindings[%d] (%q) has no class_name", i, b.Name)
		}
	}
	seenKV := make(map[string]bool, len(f.KVNamespaces))
	objectsOf := make(map[string]int, len(f.KVNamespaces)) // by id
	for i, kv := range f.KVNamespaces {
		switch {
		case kv.Binding == "":
			bad("kv_namespaces[%d] has no binding", i)
		case durable.CheckBindingName(kv.Binding) != nil:
			bad("kv_namespaces[%d]: %v", i, durable.CheckBindingName(kv.Binding))
		case seenKV[kv.Binding]:
			bad("kv_namespaces: %q is bound twice", kv.Binding)
		}
		seenKV[kv.Binding] = true
		if kv.ID == "" {
			bad("kv_namespaces[%d] (%q) has no id", i, kv.Binding)
		} else if strings.ContainsFunc(kv.ID, unicode.IsControl) {
			bad("kv_namespaces[%d] (%q): id %q holds a control character", i, kv.Binding, kv.ID)
		}
		objects := max(kv.Objects, 1)
		if kv.Objects < 0 || kv.Objects > durable.KVMaxObjects {
			bad("kv_namespaces[%d] (%q): objects = %d is not between 1 and %d", i, kv.Binding, kv.Objects, durable.KVMaxObjects)
		} else if n, ok := objectsOf[kv.ID]; ok && n != objects {
			bad("kv_namespaces[%d] (%q): id %q is bound with objects = %d and %d; bindings of one namespace must agree", i, kv.Binding, kv.ID, n, objects)
		}
		objectsOf[kv.ID] = objects
	}

	// Listeners may leave the host out (":8787", every interface) or ask
	// for any port (":0"); addresses other nodes dial need both.
	for _, a := range []struct {
		key, addr string
	}{
		{"node.http", f.Node.HTTP},
		{"node.admin", f.Node.Admin},
		{"node.grpc", f.Node.GRPC},
		{"node.gossip", f.Node.Gossip},
	} {
		if a.addr == "" {
			continue
		}
		if err := CheckHostPort(a.addr, false); err != nil {
			bad("%s: %v", a.key, err)
		}
	}
	if f.Node.Advertise != "" {
		if err := CheckHost(f.Node.Advertise); err != nil {
			bad("node.advertise: %v", err)
		}
	}
	for i, j := range f.Node.Join {
		if err := CheckHostPort(j, true); err != nil {
			bad("node.join[%d]: %v", i, err)
		}
	}

	for _, n := range []struct {
		key string
		v   int
	}{
		{"cluster.bootstrap_expect", f.Cluster.BootstrapExpect},
		{"cluster.shards", f.Cluster.Shards},
		{"cluster.replicas", f.Cluster.Replicas},
		{"storage.max_key_bytes", f.Storage.MaxKeyBytes},
		{"storage.max_entry_bytes", f.Storage.MaxEntryBytes},
		{"storage.max_batch_keys", f.Storage.MaxBatchKeys},
	} {
		if n.v < 0 {
			bad("%s must be at least 1, got %d", n.key, n.v)
		}
	}
	if k, e := f.Storage.MaxKeyBytes, f.Storage.MaxEntryBytes; k > 0 && e > 0 && e < k {
		bad("storage.max_entry_bytes (%d) is below storage.max_key_bytes (%d): no key could be stored", e, k)
	}
	if f.Cluster.GossipKey != "" {
		if _, err := ParseGossipKey(f.Cluster.GossipKey); err != nil {
			bad("cluster.gossip_key: %v", err)
		}
	}
	if f.Runtime.IdleTimeout < 0 {
		bad("runtime.idle_timeout must be positive, got %s", f.Runtime.IdleTimeout)
	}
	if f.Cluster.DeadNodeGrace < 0 {
		bad("cluster.dead_node_grace must be positive, or \"0s\" for no automatic healing, got %s", f.Cluster.DeadNodeGrace)
	}
	return p
}

// CheckHostPort accepts host:port with a numeric port. dialed addresses
// are ones another machine connects to, so they need a host and a port.
// The command line checks flags and environment variables with it, so
// that they are held to the same rules as the file.
func CheckHostPort(addr string, dialed bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
	}
	if dialed && (host == "" || n == 0) {
		return fmt.Errorf("%q: other nodes connect to this address, so it needs a host and a port other than 0", addr)
	}
	return nil
}

// CheckHost accepts what node.advertise holds: the host (IP address or DNS
// name) other nodes use to reach this one, without a port, since each
// listener keeps its own port.
func CheckHost(host string) error {
	if ip := net.ParseIP(host); ip != nil {
		if ip.IsUnspecified() {
			return fmt.Errorf("%q means every interface, not an address other nodes can reach", host)
		}
		return nil
	}
	if _, port, err := net.SplitHostPort(host); err == nil && isDigits(port) {
		return fmt.Errorf("%q: give the host alone, without a port (each listener keeps its own port)", host)
	}
	if !IsHostname(host) {
		return fmt.Errorf("%q is not an IP address or a host name", host)
	}
	return nil
}

// IsHostname reports whether h is a DNS name: dot-separated labels of
// letters, digits, '_' and inner hyphens, 1 to 63 bytes each, 253 in all.
// '_' is not in RFC 1123, but Go's resolver and Docker's DNS accept it
// (compose names containers project_service_1).
func IsHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}
