package cli

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roostdb/roost/config"
	"github.com/roostdb/roost/node"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("%s holds no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func wantMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != want {
		t.Errorf("%s has mode %v, want %v", path, got, want)
	}
}

func TestCertsCAAndNode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	code, stdout, stderr := runCLI(t, testApp(), "certs", "ca", "--dir", dir)
	if code != exitOK {
		t.Fatalf("certs ca: exit %d, stderr %q", code, stderr)
	}
	if !strings.Contains(stdout, filepath.Join(dir, "ca.crt")) {
		t.Errorf("certs ca does not say what it wrote: %q", stdout)
	}
	code, stdout, stderr = runCLI(t, testApp(), "certs", "node", "n1", "--dir", dir, "--hosts", "n1, 127.0.0.1", "--hosts", "roost-1.internal")
	if code != exitOK {
		t.Fatalf("certs node: exit %d, stderr %q", code, stderr)
	}
	if want := "--tls-cert " + filepath.Join(dir, "n1.crt"); !strings.Contains(stdout, want) {
		t.Errorf("certs node output lacks %q: %q", want, stdout)
	}
	for name, mode := range map[string]os.FileMode{"ca.crt": 0o644, "ca.key": 0o600, "n1.crt": 0o644, "n1.key": 0o600} {
		wantMode(t, filepath.Join(dir, name), mode)
	}

	// The chain verifies for every host given, for serving and dialing,
	// and for no other host.
	ca, leaf := readCert(t, filepath.Join(dir, "ca.crt")), readCert(t, filepath.Join(dir, "n1.crt"))
	if !ca.IsCA {
		t.Error("ca.crt is not a CA")
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, host := range []string{"n1", "127.0.0.1", "roost-1.internal"} {
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
				t.Errorf("n1.crt for %s (usage %v): %v", host, usage, err)
			}
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "n2"}); err == nil {
		t.Error("n1.crt verifies for n2")
	}
	if len(leaf.IPAddresses) != 1 || len(leaf.DNSNames) != 2 {
		t.Errorf("SANs: IPs %v, DNS %v", leaf.IPAddresses, leaf.DNSNames)
	}

	// A node accepts the files.
	cfg := node.DefaultClusterConfig("n1")
	cfg.GRPCAddr = "127.0.0.1:8790"
	cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSCAFile = filepath.Join(dir, "n1.crt"), filepath.Join(dir, "n1.key"), filepath.Join(dir, "ca.crt")
	if _, err := node.New(cfg, testApp()); err != nil {
		t.Fatalf("node.New with the files roost certs wrote: %v", err)
	}

	// Nothing is overwritten without --force...
	before, _ := os.ReadFile(filepath.Join(dir, "n1.key"))
	for _, args := range [][]string{
		{"certs", "ca", "--dir", dir},
		{"certs", "node", "n1", "--dir", dir, "--hosts", "127.0.0.1"},
	} {
		code, _, stderr := runCLI(t, testApp(), args...)
		if code != exitFailure || !strings.Contains(stderr, "exists; not overwriting it (give --force") {
			t.Errorf("%v over existing files: exit %d, stderr %q", args, code, stderr)
		}
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "n1.key")); !bytes.Equal(before, after) {
		t.Error("n1.key changed without --force")
	}
	// ...and with it the key is replaced and 0600 again, even if it was not.
	os.Chmod(filepath.Join(dir, "n1.key"), 0o644)
	if code, _, stderr := runCLI(t, testApp(), "certs", "node", "n1", "--dir", dir, "--hosts", "127.0.0.1", "--force"); code != exitOK {
		t.Fatalf("--force: exit %d, %q", code, stderr)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "n1.key")); bytes.Equal(before, after) {
		t.Error("--force did not replace n1.key")
	}
	wantMode(t, filepath.Join(dir, "n1.key"), 0o600)
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".roost-certs-*")); len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

// A node certificate asked to outlast its CA ends with the CA, and the
// command says so rather than print the shorter date alone (found by QA).
func TestCertsNodeCappedByTheCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	if code, _, stderr := runCLI(t, testApp(), "certs", "ca", "--dir", dir, "--days", "30"); code != exitOK {
		t.Fatalf("certs ca: exit %d, stderr %q", code, stderr)
	}
	code, stdout, stderr := runCLI(t, testApp(), "certs", "node", "n1", "--dir", dir, "--hosts", "127.0.0.1", "--days", "60")
	if code != exitOK || !strings.Contains(stdout, "(the CA's expiry: --days 60 would outlast it)") {
		t.Fatalf("certs node --days 60 under a 30-day CA: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, testApp(), "certs", "node", "n2", "--dir", dir, "--hosts", "127.0.0.1", "--days", "10")
	if code != exitOK || strings.Contains(stdout, "outlast") {
		t.Fatalf("certs node --days 10 under a 30-day CA: exit %d, stdout %q", code, stdout)
	}
}

func TestCertsRefusals(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	empty := t.TempDir()
	if code, _, stderr := runCLI(t, testApp(), "certs", "ca", "--dir", dir); code != exitOK {
		t.Fatal(stderr)
	}
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no hosts", []string{"node", "n1", "--dir", dir}, exitUsage, "give --hosts"},
		{"bad host", []string{"node", "n1", "--dir", dir, "--hosts", "127.0.0.1:8790"}, exitUsage, `"127.0.0.1:8790": give the host alone, without a port`},
		{"every interface", []string{"node", "n1", "--dir", dir, "--hosts", "n1,0.0.0.0"}, exitUsage, `"0.0.0.0" means every interface`},
		{"no name", []string{"node", "--dir", dir, "--hosts", "n1"}, exitUsage, "give one node name"},
		{"name ca", []string{"node", "ca", "--dir", dir, "--hosts", "n1"}, exitUsage, `"ca" would overwrite the CA's files`},
		{"name with a slash", []string{"node", "../n1", "--dir", dir, "--hosts", "n1"}, exitUsage, `node name "../n1"`},
		{"no CA", []string{"node", "n1", "--dir", empty, "--hosts", "n1"}, exitFailure, "no CA in " + empty},
		{"zero days", []string{"ca", "--dir", empty, "--days", "0"}, exitUsage, "--days must be at least 1"},
		// 213504 days overflow a time.Duration to about 25 minutes: a CA
		// valid until today, printed as if asked for.
		{"days past what a duration holds", []string{"ca", "--dir", empty, "--days", "213504"}, exitUsage, "--days must be at most 106751, got 213504"},
		{"node days past what a duration holds", []string{"node", "n2", "--dir", dir, "--hosts", "n2", "--days", "213504"}, exitUsage, "--days must be at most 106751, got 213504"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, testApp(), append([]string{"certs"}, tt.args...)...)
			if code != tt.code || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, stderr, tt.code, tt.want)
			}
		})
	}
	if files, _ := os.ReadDir(empty); len(files) != 0 {
		t.Errorf("refused commands wrote files: %v", files)
	}
}

func TestCertsGossipKey(t *testing.T) {
	seen := map[string]bool{}
	for range 2 {
		code, stdout, stderr := runCLI(t, testApp(), "certs", "gossip-key")
		if code != exitOK {
			t.Fatalf("exit %d: %q", code, stderr)
		}
		key, err := config.ParseGossipKey(stdout)
		if err != nil || len(key) != 32 {
			t.Fatalf("gossip-key printed %q: %d bytes, %v", stdout, len(key), err)
		}
		seen[stdout] = true
	}
	if len(seen) != 2 {
		t.Error("two gossip keys were the same")
	}
}

// TestNodeSecuritySettings checks the TLS files and the gossip key through
// every source: the file's relative paths are relative to the file, a
// flag beats the file, the environment beats both, and errors about the
// key never show it.
func TestNodeSecuritySettings(t *testing.T) {
	const fileKey, envKey = "AAECAwQFBgcICQoLDA0ODw==", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	fileTLS := "[cluster]\ntls_cert = \"certs/n1.crt\"\ntls_key = \"certs/n1.key\"\ntls_ca = \"/etc/roost/ca.crt\"\ngossip_key = \"" + fileKey + "\"\n"
	tlsOf := func(c node.Config) [3]string { return [3]string{c.TLSCertFile, c.TLSKeyFile, c.TLSCAFile} }

	// From the file, relative to its directory (roost.toml in the working dir).
	cfg, _, err := resolveNode(t, fileTLS, []string{"--id", "n1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tlsOf(cfg), [3]string{"certs/n1.crt", "certs/n1.key", "/etc/roost/ca.crt"}; got != want {
		t.Errorf("from the file: %v, want %v", got, want)
	}
	if len(cfg.GossipKey) != 16 {
		t.Errorf("gossip key from the file: %d bytes", len(cfg.GossipKey))
	}

	// --config elsewhere: relative to that file.
	dir := inTempDir(t, "", nil)
	os.MkdirAll(filepath.Join(dir, "deploy"), 0o755)
	writeFile(t, filepath.Join(dir, "deploy", "roost.toml"), fileTLS)
	c := newNode(testApp(), nil, nil, func(string) (string, bool) { return "", false })
	if err := c.cmd.ParseFlags([]string{"--id", "n1", "--config", "deploy/roost.toml"}); err != nil {
		t.Fatal(err)
	}
	if cfg, _, err = c.resolve(); err != nil || cfg.TLSCertFile != filepath.Join("deploy", "certs", "n1.crt") || cfg.TLSCAFile != "/etc/roost/ca.crt" {
		t.Errorf("--config deploy/roost.toml: %v, %v", tlsOf(cfg), err)
	}

	// Flags beat the file, the environment beats both.
	cfg, _, err = resolveNode(t, fileTLS, []string{"--id", "n1", "--tls-cert", "f.crt", "--tls-key", "f.key", "--tls-ca", "f-ca.crt"},
		map[string]string{"ROOST_TLS_CA": "env-ca.crt", "ROOST_GOSSIP_KEY": envKey})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tlsOf(cfg), [3]string{"f.crt", "f.key", "env-ca.crt"}; got != want {
		t.Errorf("flags and env: %v, want %v", got, want)
	}
	if len(cfg.GossipKey) != 32 {
		t.Errorf("ROOST_GOSSIP_KEY did not win: %d bytes", len(cfg.GossipKey))
	}

	// All from the environment; none at all is plaintext.
	cfg, _, err = resolveNode(t, "", []string{"--id", "n1"}, map[string]string{"ROOST_TLS_CERT": "e.crt", "ROOST_TLS_KEY": "e.key", "ROOST_TLS_CA": "e-ca.crt"})
	if err != nil || tlsOf(cfg) != [3]string{"e.crt", "e.key", "e-ca.crt"} || !cfg.TLS() {
		t.Errorf("from the environment: %v, %v", tlsOf(cfg), err)
	}
	if cfg, _, err = resolveNode(t, "", []string{"--id", "n1"}, nil); err != nil || cfg.TLS() || cfg.GossipKey != nil {
		t.Errorf("no security settings: TLS %v, key %v, err %v", cfg.TLS(), cfg.GossipKey, err)
	}

	for _, tt := range []struct {
		name string
		file string
		args []string
		env  map[string]string
		want string
	}{
		{"cert flag only", "", []string{"--tls-cert", "a.crt"}, nil, "TLS needs all of tls cert, tls key and tls ca, or none: tls cert set but tls key, tls ca not"},
		{"no ca from env", "", nil, map[string]string{"ROOST_TLS_CERT": "a.crt", "ROOST_TLS_KEY": "a.key"}, "tls cert, tls key set but tls ca not"},
		{"ca in file only", "[cluster]\ntls_ca = \"ca.crt\"\n", nil, nil, "tls ca set but tls cert, tls key not"},
		{"short key in env", "", nil, map[string]string{"ROOST_GOSSIP_KEY": "c2hvcnQ="}, "ROOST_GOSSIP_KEY: the gossip key is 5 bytes"},
		{"key in env not base64", "", nil, map[string]string{"ROOST_GOSSIP_KEY": "s3cret!"}, "ROOST_GOSSIP_KEY: the gossip key is not base64"},
		{"key in file not base64", "[cluster]\ngossip_key = \"s3cret!\"\n", nil, nil, "cluster.gossip_key: the gossip key is not base64"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := resolveNode(t, tt.file, append([]string{"--id", "n1"}, tt.args...), tt.env)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "c2hvcnQ") {
				t.Errorf("the error shows the key: %v", err)
			}
		})
	}
}
