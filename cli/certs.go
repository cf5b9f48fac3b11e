package cli

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/roostdb/roost/config"
	"github.com/roostdb/roost/internal/devca"
)

// `roost certs` makes what docs/security.md sets up: a development CA, a
// certificate per node, a gossip key. It writes files and prints; it
// touches no node.

// File names in --dir. A node's files are <name>.crt and <name>.key.
const (
	caCertName = "ca.crt"
	caKeyName  = "ca.key"
	// gossipKeyBytes makes AES-256 keys.
	gossipKeyBytes = 32
	day            = 24 * time.Hour
	// maxDays is the longest --days a time.Duration holds (about 292
	// years): more would wrap around to a short or negative validity.
	maxDays = int(math.MaxInt64 / int64(day))
)

// checkDays vets --days.
func checkDays(cmd *cobra.Command, days int) error {
	switch {
	case days < 1:
		return &usageError{cmd: cmd, err: fmt.Errorf("--days must be at least 1, got %d", days)}
	case days > maxDays:
		return &usageError{cmd: cmd, err: fmt.Errorf("--days must be at most %d, got %d", maxDays, days)}
	}
	return nil
}

func newCertsCommand(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make a development CA, node certificates and a gossip key",
		Long: `Make what securing a cluster needs (docs/security.md): a development CA, a
certificate and key for each node, signed by it, for mutual TLS between
nodes (roost node --tls-cert, --tls-key, --tls-ca), and a gossip encryption
key (ROOST_GOSSIP_KEY or [cluster] gossip_key).

Keys are ECDSA P-256, written with mode 0600; certificates are written with
mode 0644. Existing files are never overwritten unless --force is given.

This CA is for development and tests: its key lies in a file next to the
certificates, and nothing is revoked or rotated. For production, use
certificates from your own PKI; roost only reads PEM files.`,
		Example: `  # three nodes on 127.0.0.1
  roost certs ca --dir certs
  roost certs node n1 --dir certs --hosts 127.0.0.1
  roost certs node n2 --dir certs --hosts 127.0.0.1
  roost certs node n3 --dir certs --hosts 127.0.0.1
  (umask 077; roost certs gossip-key > certs/gossip.key)
  # then each node: ROOST_GOSSIP_KEY=$(cat certs/gossip.key) roost node ... \
  #   --tls-cert certs/n1.crt --tls-key certs/n1.key --tls-ca certs/ca.crt

  # containers that dial each other by service name (docker-compose)
  roost certs node n1 --dir certs --hosts n1`,
	}
	asGroup(cmd)
	cmd.AddCommand(newCertsCACommand(stdout), newCertsNodeCommand(stdout), newCertsGossipKeyCommand(stdout))
	return cmd
}

func newCertsCACommand(stdout io.Writer) *cobra.Command {
	var dir string
	var days int
	var force bool
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Make a development CA: ca.crt and ca.key in --dir",
		Long: `Make a self-signed development CA: DIR/ca.crt (give it to every node as
--tls-ca) and DIR/ca.key (keep it to sign node certificates with 'roost
certs node'; no node needs it). The directory is created if needed.`,
		Example: `  roost certs ca --dir certs
  roost certs ca --dir certs --days 30 --force   # replace it (then re-issue every node's)`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkDays(cmd, days); err != nil {
				return err
			}
			certPath, keyPath := filepath.Join(dir, caCertName), filepath.Join(dir, caKeyName)
			if err := checkFree(force, certPath, keyPath); err != nil {
				return err
			}
			ca, err := devca.NewCA("roost development CA", time.Duration(days)*day)
			if err != nil {
				return err
			}
			keyPEM, err := devca.KeyPEM(ca.Key)
			if err != nil {
				return err
			}
			if err := writeFiles(dir, []outFile{{certPath, devca.CertPEM(ca.Cert), 0o644}, {keyPath, keyPEM, 0o600}}); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "wrote %s (the CA certificate: every node's --tls-ca)\nwrote %s (the CA key: keep it safe; only 'roost certs node' needs it)\nvalid until %s\n",
				certPath, keyPath, ca.Cert.NotAfter.UTC().Format(time.DateOnly))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "certs", "directory to write ca.crt and ca.key in")
	decimalIntVar(f, &days, "days", 3650, "days the CA is valid")
	f.BoolVar(&force, "force", false, "overwrite existing files")
	return cmd
}

func newCertsNodeCommand(stdout io.Writer) *cobra.Command {
	var dir string
	var hosts []string
	var days int
	var force bool
	cmd := &cobra.Command{
		Use:   "node NAME --hosts HOST[,HOST...]",
		Short: "Make a node certificate signed by the CA in --dir",
		Long: `Make a key and a certificate for the node NAME, signed by DIR/ca.crt and
DIR/ca.key, written to DIR/NAME.crt and DIR/NAME.key. The certificate is
good for serving and for dialing (server and client auth), as every node
does both.

--hosts lists the DNS names and IP addresses other nodes dial this node at:
its --advertise host, or the host of its --grpc listener when it does not
advertise. Nodes check the certificate of the node they dial against the
host they dialed, so 127.0.0.1 must be an IP address here and a container
name like n1 a DNS name; both kinds may be given.`,
		Example: `  roost certs node n1 --dir certs --hosts 127.0.0.1
  roost certs node n1 --dir certs --hosts n1,n1.example.internal,10.0.0.1`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return &usageError{cmd: cmd, err: fmt.Errorf("give one node name, got %d arguments", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := checkCertName(name); err != nil {
				return &usageError{cmd: cmd, err: err}
			}
			hosts = splitList(strings.Join(hosts, ","))
			if len(hosts) == 0 {
				return &usageError{cmd: cmd, err: errors.New("give --hosts: the DNS names and IPs other nodes dial this node at (e.g. --hosts 127.0.0.1, or --hosts n1 in docker-compose)")}
			}
			for _, h := range hosts {
				if err := config.CheckHost(h); err != nil {
					return &usageError{cmd: cmd, err: fmt.Errorf("--hosts %s: %w", h, err)}
				}
				if err := devca.CheckHost(h); err != nil {
					return &usageError{cmd: cmd, err: fmt.Errorf("--hosts %s: %w", h, err)}
				}
			}
			if err := checkDays(cmd, days); err != nil {
				return err
			}
			ca, err := readCA(dir)
			if err != nil {
				return err
			}
			certPath, keyPath := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
			if err := checkFree(force, certPath, keyPath); err != nil {
				return err
			}
			cert, key, err := ca.Issue(name, hosts, time.Duration(days)*day)
			if err != nil {
				return err
			}
			keyPEM, err := devca.KeyPEM(key)
			if err != nil {
				return err
			}
			if err := writeFiles(dir, []outFile{{certPath, devca.CertPEM(cert), 0o644}, {keyPath, keyPEM, 0o600}}); err != nil {
				return err
			}
			capped := ""
			if cert.NotAfter.Equal(ca.Cert.NotAfter) && cert.NotAfter.Before(time.Now().Add(time.Duration(days)*day)) {
				capped = fmt.Sprintf(" (the CA's expiry: --days %d would outlast it)", days)
			}
			fmt.Fprintf(stdout, "wrote %s and %s for %s, valid until %s%s\nrun the node with: --tls-cert %s --tls-key %s --tls-ca %s\n",
				certPath, keyPath, strings.Join(hosts, ", "), cert.NotAfter.UTC().Format(time.DateOnly), capped,
				certPath, keyPath, filepath.Join(dir, caCertName))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "certs", "directory holding ca.crt and ca.key, and where the node's files are written")
	f.StringSliceVar(&hosts, "hosts", nil, "DNS names and IPs other nodes dial this node at, comma-separated (required)")
	decimalIntVar(f, &days, "days", 365, "days the certificate is valid; one that would outlast the CA ends with it")
	f.BoolVar(&force, "force", false, "overwrite existing files")
	return cmd
}

func newCertsGossipKeyCommand(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "gossip-key",
		Short: "Print a new random gossip encryption key (base64, 32 bytes)",
		Long: `Print a new random 32-byte (AES-256) gossip encryption key in base64, for
ROOST_GOSSIP_KEY or [cluster] gossip_key. Every node of a cluster needs the
same key. It is printed, not written, so that you choose where it is kept.`,
		Example: `  export ROOST_GOSSIP_KEY=$(roost certs gossip-key)
  (umask 077; roost certs gossip-key > certs/gossip.key)`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error {
			key := make([]byte, gossipKeyBytes)
			if _, err := rand.Read(key); err != nil {
				return err
			}
			fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(key))
			return nil
		},
	}
}

// checkCertName accepts a node name that is safe as a file name and does
// not collide with the CA's files.
func checkCertName(name string) error {
	if name == "" || len(name) > 64 || name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("node name %q: use 1 to 64 of a-z, A-Z, 0-9, '-', '_' and '.', not starting with '.' or '-'", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("node name %q: use 1 to 64 of a-z, A-Z, 0-9, '-', '_' and '.', not starting with '.' or '-'", name)
		}
	}
	if name == "ca" {
		return errors.New(`node name "ca" would overwrite the CA's files: choose another`)
	}
	return nil
}

// readCA reads the CA that `roost certs ca` wrote in dir.
func readCA(dir string) (*devca.CA, error) {
	certPath, keyPath := filepath.Join(dir, caCertName), filepath.Join(dir, caKeyName)
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no CA in %s: %s does not exist (make one with 'roost certs ca --dir %s')", dir, certPath, dir)
		}
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("the CA key: %w", err)
	}
	ca, err := devca.ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s and %s: %w", certPath, keyPath, err)
	}
	return ca, nil
}

// checkFree refuses to go on if any of paths exists, unless force.
func checkFree(force bool, paths ...string) error {
	if force {
		return nil
	}
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s exists; not overwriting it (give --force to replace it)", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

type outFile struct {
	path string
	data []byte
	perm os.FileMode
}

// writeFiles writes each file through a temporary file renamed into place,
// so a replaced key gets perm even if the old file had a looser mode, and
// no reader sees half a file.
func writeFiles(dir string, files []outFile) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		tmp, err := os.CreateTemp(dir, ".roost-certs-*")
		if err != nil {
			return err
		}
		_, werr := tmp.Write(f.data)
		cerr := tmp.Close()
		if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), f.perm)); err != nil {
			os.Remove(tmp.Name())
			return fmt.Errorf("writing %s: %w", f.path, err)
		}
		if err := os.Rename(tmp.Name(), f.path); err != nil {
			os.Remove(tmp.Name())
			return fmt.Errorf("writing %s: %w", f.path, err)
		}
	}
	return nil
}
