package node

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roostdb/roost/durable"
)

// TestConfigValidate: Validate refuses what cannot work, among it settings
// that would fail only once the node ran (after it had claimed its data
// dir), and the security settings given by halves.
func TestConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		name    string
		mutate  func(*Config)
		wantErr string // "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"data dir of spaces", func(c *Config) { c.DataDir = "   " }, `data dir "   " has spaces around it`},
		{"data dir ending in a space", func(c *Config) { c.DataDir = "d " }, `data dir "d " has spaces around it`},
		{"all three", func(c *Config) { c.TLSCertFile, c.TLSKeyFile, c.TLSCAFile = "c", "k", "ca" }, ""},
		{"cert only", func(c *Config) { c.TLSCertFile = "c" }, "tls cert set but tls key, tls ca not"},
		{"no ca", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = "c", "k" }, "tls cert, tls key set but tls ca not"},
		{"ca only", func(c *Config) { c.TLSCAFile = "ca" }, "tls ca set but tls cert, tls key not"},
		{"16-byte key", func(c *Config) { c.GossipKey = make([]byte, 16) }, ""},
		{"24-byte key", func(c *Config) { c.GossipKey = make([]byte, 24) }, ""},
		{"32-byte key", func(c *Config) { c.GossipKey = make([]byte, 32) }, ""},
		{"15-byte key", func(c *Config) { c.GossipKey = make([]byte, 15) }, "gossip key is 15 bytes"},
		{"64-byte key", func(c *Config) { c.GossipKey = make([]byte, 64) }, "gossip key is 64 bytes"},
		{"port out of range", func(c *Config) { c.HTTPAddr = "127.0.0.1:99999" }, `http address "127.0.0.1:99999": the port must be a number from 0 to 65535`},
		{"port not a number", func(c *Config) { c.GossipAddr = "127.0.0.1:gossip" }, `gossip address "127.0.0.1:gossip": the port must be a number`},
		{"no port", func(c *Config) { c.AdminAddr = "127.0.0.1" }, `admin address "127.0.0.1"`},
		{"two listeners on one address", func(c *Config) { c.GRPCAddr = c.HTTPAddr }, "http and grpc both listen on 127.0.0.1:8787"},
		{"any free port twice", func(c *Config) { c.HTTPAddr, c.AdminAddr = "127.0.0.1:0", "127.0.0.1:0" }, ""},
		{"token with a space", func(c *Config) { c.AdminToken = "abc " }, "the admin token has spaces around it"},
		{"token of spaces", func(c *Config) { c.AdminToken = " " }, "the admin token has spaces around it"},
		{"token with a line break", func(c *Config) { c.AdminToken = "abc\ndef" }, `the admin token holds '\n' at byte 3: a control character`},
		{"token with a NUL", func(c *Config) { c.AdminToken = "abc\x00" }, "the admin token holds '\\x00' at byte 3: a control character"},
		{"token beyond ASCII", func(c *Config) { c.AdminToken = "tök€n" }, "the admin token holds 'ö' at byte 1: a character beyond ASCII, which a browser cannot send"},
		{"token with inner space and tab", func(c *Config) { c.AdminToken = "a b\tc" }, ""},
		{"node id of capitals", func(c *Config) { c.NodeID = "N1" }, `node id "N1": use 1 to 64 of a-z`},
		{"node id ..", func(c *Config) { c.NodeID = ".." }, `node id "..": use 1 to 64 of a-z, 0-9, '-', '_' and '.', other than '.' and '..'`},
		{"node id .", func(c *Config) { c.NodeID = "." }, `node id ".": use 1 to 64`},
		{"node id with dots", func(c *Config) { c.NodeID = "n1.dc.example" }, ""},
		{"no body stall timeout", func(c *Config) { c.BodyStallTimeout = 0 }, "body stall timeout must be positive"},
		{"KV binding named like an object binding", func(c *Config) {
			c.Bindings = []durable.Binding{{Name: "COUNTER", ClassName: "Counter"}}
			c.KVNamespaces = []durable.KVBinding{{Binding: "COUNTER", ID: "x"}}
		}, `"COUNTER" is both a Durable Object binding and a KV binding`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultClusterConfig("n1")
			tt.mutate(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig saying %q", err, tt.wantErr)
			}
		})
	}
}

// TestFailedStartLeavesDataDirAlone: a node whose listener cannot be
// opened (another process holds the port) fails before it writes its
// identity and layout, so a second start with other settings is not
// refused as a different node's data dir.
func TestFailedStartLeavesDataDirAlone(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	for _, which := range []string{"app", "admin", "grpc"} {
		t.Run(which, func(t *testing.T) {
			cfg := DefaultClusterConfig("typo")
			cfg.DataDir = filepath.Join(t.TempDir(), "data")
			cfg.HTTPAddr, cfg.AdminAddr, cfg.GRPCAddr, cfg.GossipAddr = freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
			cfg.Logger = quietLogger
			switch which {
			case "app":
				cfg.HTTPAddr = held.Addr().String()
			case "admin":
				cfg.AdminAddr = held.Addr().String()
			case "grpc":
				cfg.GRPCAddr = held.Addr().String()
			}
			n, err := New(cfg, clusterApp(&turnRegistry{active: map[string]string{}}))
			if err != nil {
				t.Fatal(err)
			}
			if err := n.Start(context.Background()); err == nil || !strings.Contains(err.Error(), which+" listener") {
				n.Close(context.Background())
				t.Fatalf("Start with the %s port taken: %v", which, err)
			}
			if _, err := os.Stat(cfg.DataDir); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("the failed start left %s behind (%v)", cfg.DataDir, err)
			}
			// The listeners it opened are closed again.
			for _, addr := range []string{cfg.HTTPAddr, cfg.AdminAddr, cfg.GRPCAddr} {
				if addr == held.Addr().String() {
					continue
				}
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					t.Fatalf("%s still held after the failed start: %v", addr, err)
				}
				ln.Close()
			}
		})
	}
}
