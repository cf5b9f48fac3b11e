package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/roostdb/roost/internal/devca"
	"github.com/roostdb/roost/internal/fakeclock"
	"github.com/roostdb/roost/loglimit"
	"github.com/roostdb/roost/proto"
	"github.com/roostdb/roost/raftstore"
)

// testPKI is a CA and where its files are.
type testPKI struct {
	t   *testing.T
	dir string
	ca  *devca.CA
}

func newTestPKI(t *testing.T, name string) *testPKI {
	t.Helper()
	ca, err := devca.NewCA(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{t: t, dir: t.TempDir(), ca: ca}
	p.write("ca.crt", devca.CertPEM(ca.Cert))
	return p
}

func (p *testPKI) write(name string, data []byte) string {
	p.t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// issue writes name.crt and name.key for hosts and returns their paths.
func (p *testPKI) issue(name string, hosts ...string) (certFile, keyFile string) {
	p.t.Helper()
	cert, key, err := p.ca.Issue(name, hosts, time.Hour)
	if err != nil {
		p.t.Fatal(err)
	}
	keyPEM, err := devca.KeyPEM(key)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.write(name+".crt", devca.CertPEM(cert)), p.write(name+".key", keyPEM)
}

func (p *testPKI) caFile() string { return filepath.Join(p.dir, "ca.crt") }

// configure gives cfg TLS files from p for its node ID, at 127.0.0.1.
func (p *testPKI) configure(cfg *Config) {
	cfg.TLSCertFile, cfg.TLSKeyFile = p.issue(cfg.NodeID, "127.0.0.1")
	cfg.TLSCAFile = p.caFile()
}

// tlsConfig is a client or server configuration from p's files.
func (p *testPKI) peer(name string, hosts ...string) *peerTLS {
	p.t.Helper()
	cfg := DefaultClusterConfig(name)
	cfg.GRPCAddr, cfg.Advertise = "127.0.0.1:1", hosts[0]
	cfg.TLSCertFile, cfg.TLSKeyFile = p.issue(name, hosts...)
	cfg.TLSCAFile = p.caFile()
	pt, err := loadPeerTLS(cfg)
	if err != nil {
		p.t.Fatal(err)
	}
	return pt
}

// TestLoadPeerTLSRefuses checks that files that cannot work are refused
// when the node starts, with an error naming the file.
func TestLoadPeerTLSRefuses(t *testing.T) {
	p := newTestPKI(t, "test CA")
	other := newTestPKI(t, "other CA")
	cert, key := p.issue("n1", "127.0.0.1", "n1")
	otherCert, otherKey := other.issue("n1", "127.0.0.1")
	garbage := p.write("garbage.pem", []byte("not a PEM file\n"))
	serverOnlyCert, serverOnlyKey := p.serverOnly("srv", "127.0.0.1")

	for _, tt := range []struct {
		name            string
		cert, key, ca   string
		advertise, grpc string
		want            []string // substrings of the error
	}{
		{name: "missing cert", cert: filepath.Join(p.dir, "nope.crt"), key: key, ca: p.caFile(), want: []string{"tls cert", "nope.crt", "no such file"}},
		{name: "missing key", cert: cert, key: filepath.Join(p.dir, "nope.key"), ca: p.caFile(), want: []string{"tls key", "nope.key"}},
		{name: "missing ca", cert: cert, key: key, ca: filepath.Join(p.dir, "nope-ca.crt"), want: []string{"tls ca", "nope-ca.crt"}},
		{name: "garbage cert", cert: garbage, key: key, ca: p.caFile(), want: []string{"garbage.pem"}},
		{name: "garbage ca", cert: cert, key: key, ca: garbage, want: []string{"tls ca", "garbage.pem", "no PEM certificate"}},
		{name: "node cert as ca", cert: cert, key: key, ca: cert, want: []string{"tls ca", cert, "not a CA certificate"}},
		{name: "key of another cert", cert: cert, key: otherKey, ca: p.caFile(), want: []string{cert, otherKey}},
		{name: "cert of another CA", cert: otherCert, key: otherKey, ca: p.caFile(), want: []string{otherCert, "does not verify against tls ca", p.caFile()}},
		{name: "server auth only", cert: serverOnlyCert, key: serverOnlyKey, ca: p.caFile(), want: []string{serverOnlyCert, "client auth"}},
		{name: "advertised host not in cert", cert: cert, key: key, ca: p.caFile(), advertise: "n2", want: []string{cert, "does not name n2"}},
		{name: "grpc host not in cert", cert: cert, key: key, ca: p.caFile(), grpc: "127.0.0.2:8790", want: []string{"does not name 127.0.0.2"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultClusterConfig("n1")
			cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSCAFile = tt.cert, tt.key, tt.ca
			cfg.Advertise = tt.advertise
			cfg.GRPCAddr = "127.0.0.1:8790"
			if tt.grpc != "" {
				cfg.GRPCAddr = tt.grpc
			}
			_, err := loadPeerTLS(cfg)
			if !errors.Is(err, ErrInvalidTLS) {
				t.Fatalf("loadPeerTLS = %v, want ErrInvalidTLS", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}

	// The good files load; a wildcard listener leaves the host unchecked
	// (only --advertise says what others dial), and a DNS name is checked
	// against DNS SANs.
	for _, tt := range []struct{ grpc, advertise string }{{"127.0.0.1:8790", ""}, {"0.0.0.0:8790", ""}, {"0.0.0.0:8790", "n1"}} {
		cfg := DefaultClusterConfig("n1")
		cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSCAFile = cert, key, p.caFile()
		cfg.GRPCAddr, cfg.Advertise = tt.grpc, tt.advertise
		if pt, err := loadPeerTLS(cfg); err != nil || pt == nil {
			t.Errorf("grpc %s advertise %q: loadPeerTLS = %v, %v", tt.grpc, tt.advertise, pt, err)
		}
	}
	// And a node with bad files fails in New, before it opens anything.
	cfg := DefaultClusterConfig("n1")
	cfg.GRPCAddr = "127.0.0.1:8790"
	cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSCAFile = otherCert, otherKey, p.caFile()
	if _, err := New(cfg, testApp()); !errors.Is(err, ErrInvalidTLS) {
		t.Fatalf("New with another CA's certificate = %v, want ErrInvalidTLS", err)
	}
}

// serverOnly writes a certificate of p's CA that may only serve.
func (p *testPKI) serverOnly(name string, host string) (certFile, keyFile string) {
	p.t.Helper()
	_, key, err := p.ca.Issue(name, []string{host}, time.Hour)
	if err != nil {
		p.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP(host)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca.Cert, &key.PublicKey, p.ca.Key)
	if err != nil {
		p.t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	keyPEM, _ := devca.KeyPEM(key)
	return p.write(name+".crt", devca.CertPEM(cert)), p.write(name+".key", keyPEM)
}

// logBuffer collects a node's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestTLSCluster runs three nodes with mutual TLS and gossip encryption,
// then checks that the counter works through every node (forwarding and
// Raft over TLS), and that a peer of another CA, a plaintext client and a
// node with another gossip key are all kept out.
func TestTLSCluster(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, "cluster CA")
	gossipKey := bytes.Repeat([]byte{0x5a}, 32)
	n1Log := &logBuffer{}
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 3, 4, reg, func(cfg *Config) {
		pki.configure(cfg)
		cfg.GossipKey = gossipKey
		if cfg.NodeID == "n1" {
			cfg.Logger = slog.New(slog.NewTextHandler(n1Log, &slog.HandlerOptions{Level: slog.LevelWarn}))
		}
	})
	for i, nd := range c.nodes {
		if nd.peerTLS == nil {
			t.Fatalf("node %d runs without TLS", i+1)
		}
	}
	n1 := c.cfgs[0].GRPCAddr
	counterWorks := func(t *testing.T, from int) {
		t.Helper()
		for i := range 6 {
			code, body, err := c.doRetrying(i%3, "/increment", "tls")
			if err != nil || code != 200 || body != strconv.Itoa(from+i+1) {
				t.Fatalf("increment %d via node %d: %d %q %v", from+i+1, i%3+1, code, body, err)
			}
		}
	}

	t.Run("counter through every node", func(t *testing.T) { counterWorks(t, 0) })

	t.Run("peer of another CA is refused", func(t *testing.T) {
		other := newTestPKI(t, "other CA")
		rogue := other.peer("rogue", "127.0.0.1")
		// Its client certificate is of another CA, though it trusts ours.
		cl := rogue.client.Clone()
		cl.RootCAs = pki.pool(t)
		cc, err := grpc.NewClient(n1, grpc.WithTransportCredentials(credentials.NewTLS(cl)))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := proto.NewForwardClient(cc).GroupStatus(ctx, &proto.ForwardGroupStatusRequest{GroupId: 1}); status.Code(err) != codes.Unavailable {
			t.Errorf("GroupStatus with another CA's client certificate: %v, want Unavailable", err)
		}
		if _, err := proto.NewRaftTransportClient(cc).RequestVote(ctx, &proto.RaftRequestVoteRequest{}); status.Code(err) != codes.Unavailable {
			t.Errorf("RequestVote with another CA's client certificate: %v, want Unavailable", err)
		}
		// The other way round: the node's clients (forwarding and Raft)
		// refuse a server with a certificate of another CA...
		addr := serveTLS(t, rogue.server)
		nd := c.nodes[0]
		fc, err := nd.manager.forwarder.client(peer{id: "rogue", addr: addr})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fc.GroupStatus(ctx, &proto.ForwardGroupStatusRequest{GroupId: 1}); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Errorf("forwarding to a server of another CA: %v, want an unknown-authority error", err)
		}
		gt := nd.cluster.trans.Group(99)
		defer gt.(raft.WithClose).Close()
		var resp raft.RequestVoteResponse
		err = gt.RequestVote("rogue", raft.ServerAddress(addr), &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ID: []byte("n1"), Addr: []byte(n1)}}, &resp)
		if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Errorf("raft to a server of another CA: %v, want an unknown-authority error", err)
		}
		// ...and one of our CA whose certificate does not name the host
		// dialed (127.0.0.1), while one that names it is reached.
		wrongHost := serveTLS(t, pki.peer("elsewhere", "elsewhere.example").server)
		fc, _ = nd.manager.forwarder.client(peer{id: "elsewhere", addr: wrongHost})
		if _, err := fc.GroupStatus(ctx, &proto.ForwardGroupStatusRequest{GroupId: 1}); err == nil || !strings.Contains(err.Error(), "certificate for 127.0.0.1") {
			t.Errorf("forwarding to a server named elsewhere.example: %v, want a host name error", err)
		}
		rightHost := serveTLS(t, pki.peer("right", "127.0.0.1").server)
		fc, _ = nd.manager.forwarder.client(peer{id: "right", addr: rightHost})
		if _, err := fc.GroupStatus(ctx, &proto.ForwardGroupStatusRequest{GroupId: 1}); status.Code(err) != codes.Unimplemented {
			t.Errorf("forwarding to a server of our CA named 127.0.0.1: %v, want Unimplemented (reached, no service)", err)
		}
	})

	t.Run("plaintext client is refused", func(t *testing.T) {
		cc, err := grpc.NewClient(n1, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := proto.NewForwardClient(cc).GroupStatus(ctx, &proto.ForwardGroupStatusRequest{GroupId: 1}); status.Code(err) != codes.Unavailable {
			t.Errorf("plaintext GroupStatus: %v, want Unavailable", err)
		}
		// Raw garbage too.
		if conn, err := net.Dial("tcp", n1); err == nil {
			conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			conn.Read(make([]byte, 64))
			conn.Close()
		}
		if !strings.Contains(n1Log.String(), "refused a node-to-node connection") {
			t.Errorf("n1 did not log the refused handshakes; log:\n%s", n1Log.String())
		}
		// The node still serves, through TLS.
		c.waitReady()
		counterWorks(t, 6)
	})

	t.Run("gossip with another key does not join", func(t *testing.T) {
		cfg := DefaultClusterConfig("n4")
		cfg.DataDir, cfg.Logger, cfg.Shards = t.TempDir(), quietLogger, 4
		cfg.HTTPAddr, cfg.AdminAddr, cfg.GRPCAddr, cfg.GossipAddr = freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
		cfg.Join = []string{c.cfgs[0].GossipAddr}
		pki.configure(&cfg)
		cfg.GossipKey = bytes.Repeat([]byte{0x33}, 32)
		nd, err := New(cfg, c.app)
		if err != nil {
			t.Fatal(err)
		}
		if err := nd.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			nd.Close(ctx)
		}()
		deadline := time.Now().Add(10 * time.Second)
		for {
			ok, why := nd.cluster.ready()
			if ok {
				t.Fatal("n4 with another gossip key became ready")
			}
			if strings.Contains(why, "cannot join") && strings.Contains(why, "gossip key") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("n4's readiness reason never named the failed join: %q", why)
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, m := range c.nodes[0].cluster.members.Members() {
			if m.ID == "n4" {
				t.Fatalf("n1 lists n4 as a member: %+v", m)
			}
		}
		if len(nd.cluster.members.Members()) != 1 {
			t.Fatalf("n4 merged the cluster's members: %+v", nd.cluster.members.Members())
		}
	})
}

// pool is a pool holding p's CA.
func (p *testPKI) pool(t *testing.T) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca.Cert)
	return pool
}

// serveTLS runs a gRPC server with no services behind cfg (which asks for
// no client certificate) on a loopback port.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	cfg = cfg.Clone()
	cfg.ClientAuth = tls.NoClientCert
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

// TestRefusalLogLimited sends garbage to a TLS gRPC server port over and
// over: the refusals from one host make one line per interval, the next
// with the count of those not logged.
func TestRefusalLogLimited(t *testing.T) {
	pki := newTestPKI(t, "cluster CA")
	buf := &logBuffer{}
	log := slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	clock := fakeclock.New(time.Unix(1000, 0))
	creds := loggingCreds{credentials.NewTLS(pki.peer("n1", "127.0.0.1").server), log, loglimit.New(refusalLogInterval, maxRefusalHosts, clock.Now)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	knock := func() {
		t.Helper()
		cl, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		sv, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer sv.Close()
		go cl.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		if _, _, err := creds.Clone().ServerHandshake(sv); err == nil {
			t.Fatal("a handshake of garbage succeeded")
		}
	}
	lines := func() []string {
		var out []string
		for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if strings.Contains(l, "refused a node-to-node connection") {
				out = append(out, l)
			}
		}
		return out
	}
	for range 20 {
		knock()
	}
	if got := lines(); len(got) != 1 || !strings.Contains(got[0], "not_logged=0") {
		t.Fatalf("20 refusals in no time logged as %d lines, want 1:\n%s", len(got), buf.String())
	}
	clock.Advance(refusalLogInterval)
	knock()
	if got := lines(); len(got) != 2 || !strings.Contains(got[1], "not_logged=19") {
		t.Fatalf("after the interval, want a second line counting 19 not logged:\n%s", buf.String())
	}
}

// A node with TLS that dials a plaintext node, its forwarding or its Raft
// transport, is told the other end does not speak TLS; the plaintext
// node goes on serving.
func TestTLSClientOfPlaintextNode(t *testing.T) {
	c := newTestCluster(t, 1, 1, &turnRegistry{active: map[string]string{}}, func(cfg *Config) {
		cfg.BootstrapExpect, cfg.Replicas = 1, 1
	})
	addr := c.cfgs[0].GRPCAddr
	pt := newTestPKI(t, "cluster CA").peer("tlsnode", "127.0.0.1")
	f := newForwarder(forwarderDialOptions(pt)...)
	defer f.close()
	fc, err := f.client(peer{id: "n1", addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const want = "first record does not look like a TLS handshake"
	if _, err := fc.GroupStatus(ctx, &proto.ForwardGroupStatusRequest{GroupId: 1}); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), want) {
		t.Errorf("GroupStatus over TLS to a plaintext node: %v, want Unavailable: %s", err, want)
	}
	tr := raftstore.NewTransport(raftstore.TransportConfig{LocalAddr: "127.0.0.1:1", DialOptions: pt.grpcDialOptions(), Timeout: 2 * time.Second})
	defer tr.Close()
	gt := tr.Group(metaGroup)
	var resp raft.RequestVoteResponse
	err = gt.RequestVote("n1", raft.ServerAddress(addr), &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ID: []byte("x"), Addr: []byte("127.0.0.1:1")}, Term: 1 << 40}, &resp)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("RequestVote over TLS to a plaintext node: %v, want: %s", err, want)
	}
	if code, body, err := c.doRetrying(0, "/increment", "tls-client"); err != nil || code != 200 || body != "1" {
		t.Fatalf("increment after TLS clients: %d %q %v", code, body, err)
	}
	if term := c.nodes[0].cluster.meta.Raft().CurrentTerm(); term >= 1<<40 {
		t.Fatalf("the refused RequestVote reached raft: term %d", term)
	}
}
