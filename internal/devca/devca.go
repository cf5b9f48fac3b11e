// Package devca makes a development certificate authority and the node
// certificates that `roost node` uses for mutual TLS between nodes
// (`roost certs`).
//
// Every key is ECDSA P-256 and every node certificate is good for both
// server and client authentication, because each node is both: it serves
// Raft and forwarded requests, and it dials the other nodes. A node
// certificate's SANs must hold the host other nodes dial it at (its
// advertised host): an IP address for 127.0.0.1, a DNS name for a container
// name like n1.
//
// It is a development CA: its key sits in a file next to the certificates,
// nothing is revoked and nothing is rotated. For production use certificates
// from your own PKI; roost only needs PEM files.
package devca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"

	"github.com/roostdb/roost/config"
)

// ErrInvalid is wrapped by errors about the inputs: a bad host, an empty
// name, files that hold no CA.
var ErrInvalid = errors.New("devca")

// backdate is how far before now certificates become valid, so a node
// whose clock is a little behind accepts a certificate made just now.
const backdate = time.Hour

// CA is a certificate authority that can issue node certificates.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA makes a self-signed CA valid for validFor, named name.
func NewCA(name string, validFor time.Duration) (*CA, error) {
	if name == "" || validFor <= 0 {
		return nil, fmt.Errorf("%w: a CA needs a name and a positive validity", ErrInvalid)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"roost development"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validFor),
		IsCA:                  true,
		BasicConstraintsValid: true,
		// It signs node certificates and nothing under them.
		MaxPathLenZero: true,
		KeyUsage:       x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// ParseCA reads a CA from its PEM certificate and PEM key (as CertPEM and
// KeyPEM write them) and checks that they belong together.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%w: certificate %q is not a CA", ErrInvalid, cert.Subject.CommonName)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("%w: the CA key does not match the CA certificate", ErrInvalid)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// CheckHost reports whether h can be a node certificate's SAN: an IP
// address or a DNS name (a wildcard names the labels below it), without
// the trailing dot of a fully qualified name, which a certificate's names
// are never matched with (the host dialed has none).
func CheckHost(h string) error {
	if net.ParseIP(h) != nil {
		return nil
	}
	if strings.HasSuffix(h, ".") && config.IsHostname(h) {
		return fmt.Errorf("%w: %q ends in a dot, and the host a node dials has none, so it would never match: give %q", ErrInvalid, h, strings.TrimSuffix(h, "."))
	}
	if !config.IsHostname(strings.TrimPrefix(h, "*.")) {
		return fmt.Errorf("%w: %q is neither an IP address nor a DNS name", ErrInvalid, h)
	}
	return nil
}

// Issue makes a key and a certificate for a node named name, valid for
// validFor (but not past the CA), for server and client authentication,
// with hosts as its SANs: each is an IP address or a DNS name.
func (ca *CA) Issue(name string, hosts []string, validFor time.Duration) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	if name == "" || validFor <= 0 {
		return nil, nil, fmt.Errorf("%w: a node certificate needs a name and a positive validity", ErrInvalid)
	}
	if len(hosts) == 0 {
		return nil, nil, fmt.Errorf("%w: node %s: no hosts: give the hosts or IPs other nodes dial it at", ErrInvalid, name)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name, Organization: []string{"roost development"}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if err := CheckHost(h); err != nil {
			return nil, nil, err
		}
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			continue
		}
		tmpl.DNSNames = append(tmpl.DNSNames, h)
	}
	now := time.Now()
	if !ca.Cert.NotAfter.After(now) {
		return nil, nil, fmt.Errorf("%w: the CA expired on %s: make a new CA (roost certs ca --force) and every node's certificate from it", ErrInvalid, ca.Cert.NotAfter.UTC().Format(time.DateOnly))
	}
	if ca.Cert.NotBefore.After(now) {
		return nil, nil, fmt.Errorf("%w: the CA is valid only from %s: nodes would refuse what it signs until then (is this machine's clock right?)", ErrInvalid, ca.Cert.NotBefore.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return nil, nil, err
	}
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-backdate), now.Add(validFor)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// CertPEM encodes a certificate as PEM.
func CertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// KeyPEM encodes a private key as PKCS #8 PEM, which crypto/tls reads.
func KeyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCert reads the first certificate of PEM data.
func ParseCert(data []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, fmt.Errorf("%w: no PEM certificate found", ErrInvalid)
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

// ParseKey reads an ECDSA private key (PKCS #8 or SEC 1) from PEM data.
func ParseKey(data []byte) (*ecdsa.PrivateKey, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, fmt.Errorf("%w: no PEM private key found", ErrInvalid)
		}
		switch b.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, err
			}
			ek, ok := k.(*ecdsa.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("%w: the private key is a %T, not ECDSA", ErrInvalid, k)
			}
			return ek, nil
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(b.Bytes)
		}
	}
}

// newSerial is a random 128-bit serial number, as RFC 5280 asks (positive,
// at most 20 octets, unique per CA).
func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}
