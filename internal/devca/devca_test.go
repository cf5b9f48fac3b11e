package devca

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"testing"
	"time"
)

func TestIssueVerifies(t *testing.T) {
	ca, err := NewCA("test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue("n1", []string{"n1", "127.0.0.1", "::1", "roost-1.internal"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, tt := range []struct {
		name  string
		usage x509.ExtKeyUsage
		ok    bool
	}{
		{"n1", x509.ExtKeyUsageServerAuth, true},
		{"127.0.0.1", x509.ExtKeyUsageServerAuth, true},
		{"::1", x509.ExtKeyUsageServerAuth, true},
		{"roost-1.internal", x509.ExtKeyUsageServerAuth, true},
		{"n1", x509.ExtKeyUsageClientAuth, true},
		{"n2", x509.ExtKeyUsageServerAuth, false},
		{"127.0.0.2", x509.ExtKeyUsageServerAuth, false},
	} {
		_, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: tt.name, KeyUsages: []x509.ExtKeyUsage{tt.usage}})
		if (err == nil) != tt.ok {
			t.Errorf("verify as %s (usage %v): err = %v, want ok %v", tt.name, tt.usage, err, tt.ok)
		}
	}
	if !slices.Equal(cert.DNSNames, []string{"n1", "roost-1.internal"}) {
		t.Errorf("DNS SANs %v", cert.DNSNames)
	}
	if len(cert.IPAddresses) != 2 || !cert.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Errorf("IP SANs %v", cert.IPAddresses)
	}
	if cert.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("node certificate outlives its CA: %v > %v", cert.NotAfter, ca.Cert.NotAfter)
	}

	// Another CA's pool does not verify it.
	other, err := NewCA("other CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherPool := x509.NewCertPool()
	otherPool.AddCert(other.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: otherPool, DNSName: "n1"}); err == nil {
		t.Error("another CA verified the node certificate")
	}

	// The PEM forms round-trip into a key pair crypto/tls accepts, and a
	// CA read back from PEM issues certificates the first pool verifies.
	keyPEM, err := KeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(CertPEM(cert), keyPEM); err != nil {
		t.Fatalf("tls.X509KeyPair: %v", err)
	}
	caKeyPEM, _ := KeyPEM(ca.Key)
	back, err := ParseCA(CertPEM(ca.Cert), caKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	c2, _, err := back.Issue("n2", []string{"n2"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Verify(x509.VerifyOptions{Roots: pool, DNSName: "n2"}); err != nil {
		t.Errorf("certificate from the re-read CA: %v", err)
	}
}

func TestBadInputs(t *testing.T) {
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewCA("other", time.Hour)
	otherKey, _ := KeyPEM(other.Key)
	caKey, _ := KeyPEM(ca.Key)
	node, nodeKey, _ := ca.Issue("n1", []string{"n1"}, time.Hour)
	nodeKeyPEM, _ := KeyPEM(nodeKey)
	for name, f := range map[string]func() error{
		"no hosts":       func() error { _, _, err := ca.Issue("n1", nil, time.Hour); return err },
		"bad host":       func() error { _, _, err := ca.Issue("n1", []string{"n 1"}, time.Hour); return err },
		"host with port": func() error { _, _, err := ca.Issue("n1", []string{"n1:8790"}, time.Hour); return err },
		"no name":        func() error { _, _, err := ca.Issue("", []string{"n1"}, time.Hour); return err },
		// A name with the trailing dot never matches the host dialed.
		"fully qualified host": func() error { _, _, err := ca.Issue("n1", []string{"n1.example."}, time.Hour); return err },
		// Its certificate would end before it began.
		"expired CA": func() error {
			old, err := NewCA("old", time.Hour)
			if err != nil {
				return err
			}
			old.Cert.NotAfter = time.Now().Add(-time.Minute)
			_, _, err = old.Issue("n1", []string{"n1"}, time.Hour)
			return err
		},
		"CA not yet valid": func() error {
			early, err := NewCA("early", time.Hour)
			if err != nil {
				return err
			}
			early.Cert.NotBefore = time.Now().Add(24 * time.Hour)
			_, _, err = early.Issue("n1", []string{"n1"}, time.Hour)
			return err
		},
		"no validity":  func() error { _, err := NewCA("x", 0); return err },
		"key mismatch": func() error { _, err := ParseCA(CertPEM(ca.Cert), otherKey); return err },
		"not a CA":     func() error { _, err := ParseCA(CertPEM(node), nodeKeyPEM); return err },
		"no cert":      func() error { _, err := ParseCA(caKey, caKey); return err },
	} {
		if err := f(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}
