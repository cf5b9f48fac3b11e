package node

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/roostdb/roost/loglimit"
	"github.com/roostdb/roost/raftstore"
)

// Node-to-node gRPC (Raft of every group, forwarding, GroupStatus) runs
// over mutual TLS when Config gives the three PEM files: the server
// demands a client certificate signed by the CA, and a client checks that
// the server's certificate is signed by the CA and names the host it
// dialed. The host dialed is the peer's advertised host (grpc takes the
// TLS server name from the target's host), so a node's certificate must
// hold its advertised host as a SAN: an IP SAN for 127.0.0.1, a DNS SAN
// for a container name. Any certificate the CA signed is a member: the CA
// is the trust boundary, so give a cluster a CA of its own.

// ErrInvalidTLS is wrapped by the errors about TLS files that cannot be
// read or used; the error names the file.
var ErrInvalidTLS = errors.New("invalid TLS files")

// peerTLS is the TLS configuration of a node's gRPC server and clients.
type peerTLS struct {
	server, client *tls.Config
}

// loadPeerTLS reads cfg's TLS files, or returns nil when none is set. It
// checks what would otherwise fail later and obscurely, at every
// handshake: the pair matches, the CA signed the certificate, and the
// certificate may serve and dial.
func loadPeerTLS(cfg Config) (*peerTLS, error) {
	if cfg.TLSCertFile == "" {
		return nil, nil
	}
	read := func(setting, path string) ([]byte, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrInvalidTLS, setting, err)
		}
		return b, nil
	}
	certPEM, err := read("tls cert", cfg.TLSCertFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := read("tls key", cfg.TLSKeyFile)
	if err != nil {
		return nil, err
	}
	caPEM, err := read("tls ca", cfg.TLSCAFile)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: tls cert %s with tls key %s: %v", ErrInvalidTLS, cfg.TLSCertFile, cfg.TLSKeyFile, err)
	}
	pool, err := caPool(cfg.TLSCAFile, caPEM)
	if err != nil {
		return nil, err
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%w: tls cert %s: %v", ErrInvalidTLS, cfg.TLSCertFile, err)
		}
	}
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return nil, fmt.Errorf("%w: tls cert %s does not verify against tls ca %s for %s (a node serves and dials, so it needs both server and client auth): %v",
				ErrInvalidTLS, cfg.TLSCertFile, cfg.TLSCAFile, usageName(usage), err)
		}
	}
	if host := advertisedHost(cfg); host != "" {
		if err := leaf.VerifyHostname(host); err != nil {
			return nil, fmt.Errorf("%w: tls cert %s does not name %s, the host other nodes dial this node at (--advertise or the grpc listener's host): %v",
				ErrInvalidTLS, cfg.TLSCertFile, host, err)
		}
	}
	return &peerTLS{
		server: &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{pair},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
		},
		// ServerName stays empty: grpc sets it per connection to the
		// dialed host, the peer's advertised host.
		client: &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{pair},
			RootCAs:      pool,
		},
	}, nil
}

// caPool reads the certificates of a tls ca file. Each must be a CA
// certificate: Go accepts a leaf that is itself in the root pool, so a
// node's own certificate given as the CA would verify that node and no
// other, and the cluster would fail only at its peers' handshakes.
func caPool(file string, caPEM []byte) (*x509.CertPool, error) {
	pool, n := x509.NewCertPool(), 0
	for rest := caPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: tls ca %s: %v", ErrInvalidTLS, file, err)
		}
		if !c.BasicConstraintsValid || !c.IsCA {
			return nil, fmt.Errorf("%w: tls ca %s: certificate %q is not a CA certificate; give the CA that signed the nodes' certificates (roost certs ca), not a node's certificate",
				ErrInvalidTLS, file, c.Subject.CommonName)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: tls ca %s: no PEM certificate in it", ErrInvalidTLS, file)
	}
	return pool, nil
}

func usageName(u x509.ExtKeyUsage) string {
	if u == x509.ExtKeyUsageServerAuth {
		return "server auth"
	}
	return "client auth"
}

// advertisedHost is the host other nodes dial this node's gRPC listener
// at, or "" when it is every interface (then only --advertise can say).
func advertisedHost(cfg Config) string {
	if cfg.Advertise != "" {
		return cfg.Advertise
	}
	host, _, err := net.SplitHostPort(cfg.GRPCAddr)
	if err != nil || host == "" {
		return ""
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return ""
	}
	return host
}

// grpcServerOptions are the options of the node's gRPC server: the
// transport's, plus TLS when configured.
func (p *peerTLS) grpcServerOptions(log *slog.Logger) []grpc.ServerOption {
	opts := raftstore.TransportServerOptions()
	if p != nil {
		limit := loglimit.New(refusalLogInterval, maxRefusalHosts, time.Now)
		opts = append(opts, grpc.Creds(loggingCreds{credentials.NewTLS(p.server), log, limit}))
	}
	return opts
}

// grpcDialOptions are what every gRPC client of the node adds: TLS when
// configured, else plaintext.
func (p *peerTLS) grpcDialOptions() []grpc.DialOption {
	if p == nil {
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(p.client))}
}

// loggingCreds logs the connections the server refuses in the handshake
// (plaintext, another CA, no client certificate), which grpc itself only
// reports at a level it does not print by default: a node that cannot
// reach its peers should say why on both ends. The lines are limited per
// remote host: a peer of another CA retries every second or two, and
// garbage sent to the port can come far faster.
type loggingCreds struct {
	credentials.TransportCredentials
	log   *slog.Logger
	limit *loglimit.Limiter
}

// refusalLogInterval is how often at most a refused handshake is logged
// per remote host.
const refusalLogInterval = 10 * time.Second

// maxRefusalHosts bounds how many remote hosts the refusal log keeps
// count of.
const maxRefusalHosts = 1024

func (c loggingCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		remote := conn.RemoteAddr().String()
		// The host, not the address: every connection comes from a new port.
		host := remote
		if h, _, serr := net.SplitHostPort(remote); serr == nil {
			host = h
		}
		if ok, held, elsewhere := c.limit.Allow(host); ok {
			attrs := []any{"remote", remote, "err", err, "not_logged", held, "log_interval", refusalLogInterval}
			if elsewhere > 0 {
				attrs = append(attrs, "not_logged_other_hosts", elsewhere)
			}
			c.log.Warn("refused a node-to-node connection: TLS handshake failed", attrs...)
		}
	}
	return out, info, err
}

func (c loggingCreds) Clone() credentials.TransportCredentials {
	return loggingCreds{c.TransportCredentials.Clone(), c.log, c.limit}
}
