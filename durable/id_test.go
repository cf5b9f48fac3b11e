package durable

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
)

var lowerHex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

func TestIDFromNameDeterministic(t *testing.T) {
	k := DeriveNamespaceKey("Counter", "")
	for _, name := range []string{"", "A", "a", "Zürich 東京", strings.Repeat("x", 10000), "with\x00nul"} {
		a, b := IDFromName(k, name), IDFromName(k, name)
		if !a.Equal(b) || a.String() != b.String() {
			t.Errorf("IDFromName(%q) is not deterministic: %s vs %s", name, a, b)
		}
		// A fresh key derived the same way gives the same ID (nothing per process).
		if c := IDFromName(DeriveNamespaceKey("Counter", ""), name); !a.Equal(c) {
			t.Errorf("IDFromName(%q) differs across equal keys: %s vs %s", name, a, c)
		}
		if a.Kind() != KindName {
			t.Errorf("IDFromName(%q).Kind() = %d, want KindName", name, a.Kind())
		}
		if a.Name() != name {
			t.Errorf("IDFromName(%q).Name() = %q", name, a.Name())
		}
		if a.IsZero() {
			t.Errorf("IDFromName(%q) is zero", name)
		}
	}
}

func TestIDFromNameDistinct(t *testing.T) {
	counter := DeriveNamespaceKey("Counter", "")
	tests := []struct {
		desc   string
		k1, k2 NamespaceKey
		n1, n2 string
	}{
		{"different names", counter, counter, "A", "B"},
		{"case matters", counter, counter, "a", "A"},
		{"empty vs non-empty", counter, counter, "", "A"},
		{"prefix", counter, counter, "A", "AA"},
		{"different classes", counter, DeriveNamespaceKey("Chat", ""), "A", "A"},
		{"class name case", counter, DeriveNamespaceKey("counter", ""), "A", "A"},
		{"unique_key separates deployments", counter, DeriveNamespaceKey("Counter", "prod"), "A", "A"},
		// DeriveNamespaceKey separates class and unique key with a NUL byte.
		{"class/unique_key boundary", DeriveNamespaceKey("ab", "c"), DeriveNamespaceKey("a", "bc"), "A", "A"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			a, b := IDFromName(tc.k1, tc.n1), IDFromName(tc.k2, tc.n2)
			if a.Equal(b) || a.String() == b.String() {
				t.Fatalf("same ID %s for (%q) and (%q)", a, tc.n1, tc.n2)
			}
		})
	}
}

func TestNewUniqueID(t *testing.T) {
	k := DeriveNamespaceKey("Counter", "")
	seen := make(map[string]bool)
	for i := 0; i < 1000; i++ {
		id := NewUniqueID(k)
		s := id.String()
		if seen[s] {
			t.Fatalf("NewUniqueID returned %s twice", s)
		}
		seen[s] = true
		if id.Kind() != KindUnique {
			t.Fatalf("Kind() = %d, want KindUnique", id.Kind())
		}
		if id.Name() != "" {
			t.Fatalf("unique ID has name %q", id.Name())
		}
		got, err := ParseID(k, s)
		if err != nil {
			t.Fatalf("ParseID(NewUniqueID().String()) = %v", err)
		}
		if !got.Equal(id) || got.String() != s {
			t.Fatalf("round trip: %s became %s", s, got)
		}
		if _, err := ParseID(DeriveNamespaceKey("Chat", ""), s); !errors.Is(err, ErrWrongNamespace) {
			t.Fatalf("unique ID accepted by another namespace: %v", err)
		}
	}
}

func TestIDString(t *testing.T) {
	k := DeriveNamespaceKey("Counter", "")
	for _, id := range []ID{IDFromName(k, "A"), IDFromName(k, ""), NewUniqueID(k)} {
		s := id.String()
		if len(s) != IDStringLen || !lowerHex64.MatchString(s) {
			t.Errorf("String() = %q, want 64 lowercase hex digits", s)
		}
		b := id.Bytes()
		if got := fmt.Sprintf("%x", b[:]); got != s {
			t.Errorf("String() = %s, Bytes() = %s", s, got)
		}
		if r := IDFromBytes(b); !r.Equal(id) {
			t.Errorf("IDFromBytes(Bytes()) = %s, want %s", r, id)
		}
		// The kind is the first byte: name IDs start "01", unique ones "02".
		if want := fmt.Sprintf("%02x", byte(id.Kind())); s[:2] != want {
			t.Errorf("String() = %s, want prefix %s", s, want)
		}
	}
	if !(ID{}).IsZero() {
		t.Error("zero ID is not IsZero")
	}
}

func TestParseID(t *testing.T) {
	k := DeriveNamespaceKey("Counter", "")
	valid := IDFromName(k, "A").String()
	other := IDFromName(DeriveNamespaceKey("Chat", ""), "A").String()
	otherDeployment := IDFromName(DeriveNamespaceKey("Counter", "prod"), "A").String()
	rawBytes := IDFromName(k, "A").Bytes()
	rawA := string(rawBytes[:])

	// flip changes the hex digit at position i to another valid hex digit.
	flip := func(s string, i int) string {
		c := byte('0')
		if s[i] == '0' {
			c = '1'
		}
		return s[:i] + string(c) + s[i+1:]
	}
	// withKind replaces the kind byte of s and re-seals the mac with k, so
	// only the kind can be wrong.
	withKind := func(kind byte) string {
		b := IDFromName(k, "A").Bytes()
		b[0] = kind
		id := IDFromBytes(b)
		r := NewIDKeyring(k)
		r.seal(r.hmac(), &id)
		return id.String()
	}

	tests := []struct {
		desc string
		in   string
		want error // nil: parses and round-trips to strings.ToLower(in)
	}{
		{"valid name ID", valid, nil},
		{"uppercase hex is accepted and normalized", strings.ToUpper(valid), nil},
		{"mixed case is accepted and normalized", strings.ToUpper(valid[:10]) + valid[10:], nil},
		{"empty", "", ErrInvalidID},
		{"one digit short", valid[:63], ErrInvalidID},
		{"one digit long", valid + "0", ErrInvalidID},
		{"twice as long", valid + valid, ErrInvalidID},
		{"odd length", valid[:33], ErrInvalidID},
		{"raw 32 bytes", rawA, ErrInvalidID},
		{"non-hex letter", "g" + valid[1:], ErrInvalidID},
		{"non-hex at the end", valid[:63] + "z", ErrInvalidID},
		{"space", " " + valid[1:], ErrInvalidID},
		{"0x prefix", "0x" + valid[2:], ErrInvalidID},
		{"64 bytes of multibyte runes", strings.Repeat("é", 32), ErrInvalidID},
		{"NUL bytes", strings.Repeat("\x00", 64), ErrInvalidID},
		{"all zeros (kind 0)", strings.Repeat("0", 64), ErrInvalidID},
		{"kind 0 with valid mac", withKind(0), ErrInvalidID},
		{"kind 3 with valid mac", withKind(3), ErrInvalidID},
		{"kind 0xff with valid mac", withKind(0xff), ErrInvalidID},
		{"kind 1 re-sealed is valid", withKind(1), nil},
		{"flipped last mac digit", flip(valid, 63), ErrWrongNamespace},
		{"flipped first mac digit", flip(valid, 48), ErrWrongNamespace},
		{"flipped payload digit", flip(valid, 10), ErrWrongNamespace},
		{"kind byte swapped 1→2 without re-sealing", "02" + valid[2:], ErrWrongNamespace},
		{"ID of another class", other, ErrWrongNamespace},
		{"ID of another deployment (unique_key)", otherDeployment, ErrWrongNamespace},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			id, err := ParseID(k, tc.in)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("ParseID(%q) = %v, want success", tc.in, err)
				}
				if got, want := id.String(), strings.ToLower(tc.in); got != want {
					t.Fatalf("String() = %s, want %s", got, want)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("ParseID(%q) = %v, want %v", tc.in, err, tc.want)
			}
			if tc.want == ErrInvalidID && errors.Is(err, ErrWrongNamespace) {
				t.Fatalf("ParseID(%q) = %v: both invalid and wrong namespace", tc.in, err)
			}
			if !id.IsZero() {
				t.Fatalf("ParseID(%q) returned non-zero ID %s with an error", tc.in, id)
			}
		})
	}
}

func TestParseIDRoundTripsName(t *testing.T) {
	k := DeriveNamespaceKey("Counter", "")
	id := IDFromName(k, "A")
	got, err := ParseID(k, id.String())
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(id) {
		t.Fatalf("ParseID(%s) = %s", id, got)
	}
	// As in Workers, the name is not recoverable from the string form.
	if got.Name() != "" {
		t.Fatalf("parsed ID has name %q", got.Name())
	}
	if got.Kind() != KindName {
		t.Fatalf("parsed Kind() = %d", got.Kind())
	}
}

func TestNamespaceIDFromString(t *testing.T) {
	env := NewEnv(EnvConfig{Bindings: []Binding{
		{Name: "COUNTER", ClassName: "Counter"},
		{Name: "CHAT", ClassName: "Chat"},
		{Name: "COUNTER2", ClassName: "Counter"},
	}})
	counter, _ := env.Namespace("COUNTER")
	chat, _ := env.Namespace("CHAT")
	counter2, _ := env.Namespace("COUNTER2")

	id := counter.IDFromName("A")
	if got, err := counter.IDFromString(id.String()); err != nil || !got.Equal(id) {
		t.Fatalf("IDFromString(own ID) = %v, %v", got, err)
	}
	// Two bindings of one class are the same namespace.
	if got, err := counter2.IDFromString(id.String()); err != nil || !got.Equal(id) {
		t.Fatalf("IDFromString on a second binding of the class = %v, %v", got, err)
	}
	if !counter2.IDFromName("A").Equal(id) {
		t.Fatal("two bindings of one class derive different IDs")
	}
	_, err := chat.IDFromString(id.String())
	if !errors.Is(err, ErrWrongNamespace) {
		t.Fatalf("IDFromString(ID of another class) = %v, want ErrWrongNamespace", err)
	}
	if !strings.Contains(err.Error(), "CHAT") {
		t.Errorf("error %q does not name the namespace", err)
	}
	if _, err := chat.IDFromString("nope"); !errors.Is(err, ErrInvalidID) {
		t.Fatalf("IDFromString(nope) = %v, want ErrInvalidID", err)
	}
	u := chat.NewUniqueID()
	if got, err := chat.IDFromString(u.String()); err != nil || !got.Equal(u) {
		t.Fatalf("IDFromString(unique) = %v, %v", got, err)
	}

	// EnvConfig.Keys overrides the derived key (say with a unique_key).
	keyed := NewEnv(EnvConfig{
		Bindings: []Binding{{Name: "COUNTER", ClassName: "Counter"}},
		Keys:     map[string]NamespaceKey{"Counter": DeriveNamespaceKey("Counter", "prod")},
	})
	kns, _ := keyed.Namespace("COUNTER")
	if kns.IDFromName("A").Equal(id) {
		t.Fatal("EnvConfig.Keys was ignored")
	}
	if _, err := kns.IDFromString(id.String()); !errors.Is(err, ErrWrongNamespace) {
		t.Fatalf("ID of another deployment = %v, want ErrWrongNamespace", err)
	}
}

func FuzzParseID(f *testing.F) {
	k := DeriveNamespaceKey("Counter", "")
	f.Add(IDFromName(k, "A").String())
	f.Add(strings.ToUpper(IDFromName(k, "B").String()))
	f.Add(NewUniqueID(k).String())
	f.Add(IDFromName(DeriveNamespaceKey("Chat", ""), "A").String())
	f.Add("")
	f.Add(strings.Repeat("0", 64))
	f.Add(strings.Repeat("f", 64))
	f.Add(strings.Repeat("é", 32))
	f.Add("01" + strings.Repeat("zz", 31))
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(k, s)
		if err != nil {
			if !errors.Is(err, ErrInvalidID) && !errors.Is(err, ErrWrongNamespace) {
				t.Fatalf("ParseID(%q) = %v: neither ErrInvalidID nor ErrWrongNamespace", s, err)
			}
			if !id.IsZero() {
				t.Fatalf("ParseID(%q) returned %s with an error", s, id)
			}
			return
		}
		if got := id.String(); got != strings.ToLower(s) {
			t.Fatalf("ParseID(%q).String() = %q, want the lowercase input", s, got)
		}
		if id.Kind() != KindName && id.Kind() != KindUnique {
			t.Fatalf("ParseID(%q) accepted kind %d", s, id.Kind())
		}
		again, err := ParseID(k, id.String())
		if err != nil || !again.Equal(id) {
			t.Fatalf("reparse of %s = %v, %v", id, again, err)
		}
	})
}

// TestIDKeyring: a keyring makes the IDs the free functions make, checks
// raw bytes as ParseID checks strings, and keeps working when used from
// many goroutines at once (its HMAC state is pooled, never shared).
func TestIDKeyring(t *testing.T) {
	k := DeriveNamespaceKey("Counter", "")
	r := NewIDKeyring(k)
	other := NewIDKeyring(DeriveNamespaceKey("Chat", ""))

	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				name := fmt.Sprintf("obj-%d-%d", g, i)
				id := r.FromName(name)
				if want := IDFromName(k, name); id != want {
					t.Errorf("FromName(%q) = %s, IDFromName gives %s", name, id, want)
					return
				}
				if got, err := r.Check(id.Bytes()); err != nil || !got.Equal(id) {
					t.Errorf("Check(%s) = %s, %v", id, got, err)
					return
				}
				if _, err := other.Check(id.Bytes()); !errors.Is(err, ErrWrongNamespace) {
					t.Errorf("another namespace's Check(%s) = %v, want ErrWrongNamespace", id, err)
					return
				}
				u := r.NewUnique()
				if got, err := ParseID(k, u.String()); err != nil || !got.Equal(u) {
					t.Errorf("ParseID(NewUnique %s) = %s, %v", u, got, err)
					return
				}
			}
		}()
	}
	wg.Wait()

	id := r.FromName("A").Bytes()
	tampered := id
	tampered[5] ^= 1
	badKind := id
	badKind[0] = 9
	for _, tc := range []struct {
		desc string
		b    [32]byte
		want error
	}{
		{"payload changed", tampered, ErrWrongNamespace},
		{"unknown kind", badKind, ErrInvalidID},
		{"all zero", [32]byte{}, ErrInvalidID},
	} {
		if _, err := r.Check(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: Check = %v, want %v", tc.desc, err, tc.want)
		}
	}
}

func BenchmarkIDFromName(b *testing.B) {
	r := NewIDKeyring(DeriveNamespaceKey("Counter", ""))
	b.Run("keyring", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.FromName("bench-1")
		}
	})
	b.Run("free function", func(b *testing.B) {
		k := DeriveNamespaceKey("Counter", "")
		b.ReportAllocs()
		for b.Loop() {
			IDFromName(k, "bench-1")
		}
	})
}
