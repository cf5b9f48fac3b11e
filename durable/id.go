package durable

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"sync"
)

// IDKind says how an ID was made; it is the first byte of the ID.
type IDKind byte

const (
	// KindName marks IDs derived from a name with IDFromName.
	KindName IDKind = 1
	// KindUnique marks random IDs made by NewUniqueID.
	KindUnique IDKind = 2
)

const (
	idLen      = 32
	payloadLen = 23
	macLen     = 8
	// IDStringLen is the length of an ID's string form: 64 hex digits.
	IDStringLen = 2 * idLen
)

// NamespaceKey is the secret from which a namespace derives and checks its
// IDs. Two namespaces with different keys never share an ID.
type NamespaceKey [32]byte

// DeriveNamespaceKey returns the key of the namespace that serves className.
// uniqueKey (optional) separates two deployments that use the same class name.
func DeriveNamespaceKey(className, uniqueKey string) NamespaceKey {
	m := hmac.New(sha256.New, []byte("roost/namespace/v1"))
	m.Write([]byte(className))
	m.Write([]byte{0})
	m.Write([]byte(uniqueKey))
	var k NamespaceKey
	copy(k[:], m.Sum(nil))
	return k
}

// KeyFingerprint names a deployment's unique key (DeriveNamespaceKey's
// uniqueKey) without revealing it: 16 hex digits of an HMAC under the
// key. Nodes compare fingerprints to find a peer, or a data dir, whose IDs
// were derived with another key; "" (no key) has one too.
func KeyFingerprint(uniqueKey string) string {
	m := hmac.New(sha256.New, []byte(uniqueKey))
	m.Write([]byte("roost/id-key-fingerprint/v1"))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

// ID identifies one Durable Object: kind(1) | payload(23) | mac(8), printed
// as 64 lowercase hex digits. The mac ties the ID to its namespace.
// The zero ID is not valid; IsZero reports it.
type ID struct {
	b    [idLen]byte
	name string
}

// IDFromName derives the ID of the object called name in the namespace with
// key k: the same name and namespace always give the same ID.
func IDFromName(k NamespaceKey, name string) ID { return NewIDKeyring(k).FromName(name) }

// NewUniqueID returns a random ID in the namespace with key k; it has never
// been returned before and cannot be guessed.
func NewUniqueID(k NamespaceKey) ID { return NewIDKeyring(k).NewUnique() }

// ParseID parses an ID's string form and checks that it belongs to the
// namespace with key k. A malformed string wraps ErrInvalidID; a well-formed
// ID whose mac does not match k wraps ErrWrongNamespace.
func ParseID(k NamespaceKey, s string) (ID, error) { return NewIDKeyring(k).Parse(s) }

// IDFromBytes rebuilds an ID from its 32 raw bytes without checking its
// namespace; the runtime uses it for IDs it stored itself.
func IDFromBytes(b [32]byte) ID { return ID{b: b} }

// IDKeyring makes and checks the IDs of one namespace, as IDFromName,
// NewUniqueID and ParseID do, for code that does so at every request: it
// keeps the key's HMAC state, which costs as much to set up (hmac.New) as
// the MAC of a short name does to compute, and allocates a kilobyte.
// Safe for concurrent use.
type IDKeyring struct {
	key  NamespaceKey
	macs sync.Pool // of hash.Hash: HMAC-SHA256 keyed with key
}

// NewIDKeyring returns the keyring of the namespace with key k.
func NewIDKeyring(k NamespaceKey) *IDKeyring { return &IDKeyring{key: k} }

// FromName is IDFromName in the keyring's namespace.
func (r *IDKeyring) FromName(name string) ID {
	var id ID
	id.b[0] = byte(KindName)
	h := r.hmac()
	h.Write([]byte("name\x00"))
	io.WriteString(h, name)
	var sum [sha256.Size]byte
	copy(id.b[1:1+payloadLen], h.Sum(sum[:0]))
	h.Reset()
	r.seal(h, &id)
	r.macs.Put(h)
	id.name = name
	return id
}

// NewUnique is NewUniqueID in the keyring's namespace.
func (r *IDKeyring) NewUnique() ID {
	var id ID
	id.b[0] = byte(KindUnique)
	if _, err := rand.Read(id.b[1 : 1+payloadLen]); err != nil {
		// crypto/rand never fails on supported platforms (Go 1.24+ panics itself).
		panic(fmt.Sprintf("durable: crypto/rand: %v", err))
	}
	h := r.hmac()
	r.seal(h, &id)
	r.macs.Put(h)
	return id
}

// Parse is ParseID in the keyring's namespace.
func (r *IDKeyring) Parse(s string) (ID, error) {
	id, err := parseIDBytes(s)
	if err != nil {
		return ID{}, err
	}
	if !r.valid(&id) {
		return ID{}, fmt.Errorf("%w: %q was not made by this namespace (it belongs to another namespace or was not made by roost)", ErrWrongNamespace, s)
	}
	return id, nil
}

// Check is Parse for an ID's 32 raw bytes, as another node sends them.
func (r *IDKeyring) Check(b [32]byte) (ID, error) {
	id := ID{b: b}
	if k := id.Kind(); k != KindName && k != KindUnique {
		return ID{}, fmt.Errorf("%w: unknown kind %d", ErrInvalidID, k)
	}
	if !r.valid(&id) {
		return ID{}, fmt.Errorf("%w: %s was not made by this namespace (it belongs to another namespace or was not made by roost)", ErrWrongNamespace, id)
	}
	return id, nil
}

// hmac returns a reset HMAC keyed with the namespace key; Put it back.
func (r *IDKeyring) hmac() hash.Hash {
	if h, ok := r.macs.Get().(hash.Hash); ok {
		h.Reset()
		return h
	}
	return hmac.New(sha256.New, r.key[:])
}

// mac is the MAC of id's kind and payload, which seals it to the
// namespace, computed with h, which must be reset.
func (r *IDKeyring) mac(h hash.Hash, id *ID, sum *[sha256.Size]byte) []byte {
	h.Write([]byte("mac\x00"))
	h.Write(id.b[:1+payloadLen])
	return h.Sum(sum[:0])[:macLen]
}

func (r *IDKeyring) seal(h hash.Hash, id *ID) {
	var sum [sha256.Size]byte
	copy(id.b[1+payloadLen:], r.mac(h, id, &sum))
}

func (r *IDKeyring) valid(id *ID) bool {
	h := r.hmac()
	defer r.macs.Put(h)
	var sum [sha256.Size]byte
	return hmac.Equal(id.b[1+payloadLen:], r.mac(h, id, &sum))
}

func parseIDBytes(s string) (ID, error) {
	if len(s) != IDStringLen {
		return ID{}, fmt.Errorf("%w: want %d hex digits, got %d characters", ErrInvalidID, IDStringLen, len(s))
	}
	var id ID
	if _, err := hex.Decode(id.b[:], []byte(s)); err != nil {
		return ID{}, fmt.Errorf("%w: %q is not hexadecimal", ErrInvalidID, s)
	}
	if k := IDKind(id.b[0]); k != KindName && k != KindUnique {
		return ID{}, fmt.Errorf("%w: unknown kind %d", ErrInvalidID, k)
	}
	return id, nil
}

// String returns the 64 lowercase hex digits of the ID.
func (id ID) String() string { return hex.EncodeToString(id.b[:]) }

// Bytes returns the 32 raw bytes of the ID.
func (id ID) Bytes() [32]byte { return id.b }

// Kind says whether the ID was derived from a name or made at random.
func (id ID) Kind() IDKind { return IDKind(id.b[0]) }

// Name returns the name an ID was derived from by IDFromName in this process,
// or "" (as Cloudflare's id.name, it is not recoverable from the string form).
func (id ID) Name() string { return id.name }

// Equal reports whether two IDs name the same object.
func (id ID) Equal(o ID) bool { return id.b == o.b }

// IsZero reports whether id is the zero value, which names no object.
func (id ID) IsZero() bool { return id.b == [idLen]byte{} }
