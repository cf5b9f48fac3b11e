package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roostdb/roost/durable"
)

// kvUser is an object that writes to a KV namespace and reads it back,
// as in the seed "Use KV from Durable Objects".
func kvUser(state *durable.State, env *durable.Env) durable.Object {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kv, err := env.KV("CACHE")
		if err != nil {
			durable.WriteError(w, err)
			return
		}
		key := r.URL.Query().Get("name")
		if err := kv.Put(r.Context(), key, []byte("written by "+state.ID.String()[:8]), durable.KVPutOptions{}); err != nil {
			durable.WriteError(w, err)
			return
		}
		v, found, err := kv.Get(r.Context(), key)
		if err != nil || !found {
			durable.WriteError(w, fmt.Errorf("read back: found=%v err=%v", found, err))
			return
		}
		w.Write(v)
	})
}

// startKVNode starts a dev node with the KV namespace CACHE (id cache-1),
// a second binding SAME of the same id, OTHER of another, and the KVUSER
// class.
func startKVNode(t *testing.T, dir string) *Node {
	return startNode(t, dir, func(cfg *Config, n *Node) {
		cfg.KVNamespaces = []durable.KVBinding{{Binding: "CACHE", ID: "cache-1"}, {Binding: "SAME", ID: "cache-1"}, {Binding: "OTHER", ID: "other"}}
		n.app.Classes["KVUser"] = kvUser
		cfg.Bindings = append(cfg.Bindings, durable.Binding{Name: "KVUSER", ClassName: "KVUser"})
	})
}

// The first KV calls of a process, made at once by turns of one object,
// all answer. The check of the namespace's number of objects, which the
// first call makes, was made under a mutex held across its fetch: the
// fetch opened the turn's gate, a second turn came in and waited for the
// mutex holding the gate, and the first could never take the gate back —
// every KV call of the process hung from then on.
func TestFirstKVCallsOfATurnsObjectAllAnswer(t *testing.T) {
	t.Parallel()
	n := startKVNode(t, t.TempDir())
	client := &http.Client{Timeout: 15 * time.Second}
	errs := make(chan error, 10)
	for range cap(errs) {
		go func() {
			q := url.Values{"ns": {"KVUSER"}, "name": {"first"}}
			resp, err := client.Get("http://" + n.HTTPAddr().String() + "/?" + q.Encode())
			if err == nil {
				if resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
				resp.Body.Close()
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Fatalf("a first KV call: %v", err)
		}
	}
}

// KV over the real runtime and storage: the API round-trips, bindings of
// one id share keys and others do not, bad input is refused and changes
// nothing, values past the storage limit are refused, an object can use
// KV, and everything survives a restart.
func TestKVNamespaces(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	n := startKVNode(t, dir)
	ctx := context.Background()
	env := n.Env()
	cache, err := env.KV("CACHE")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.KV("NOPE"); !errors.Is(err, durable.ErrUnknownBinding) || !strings.Contains(err.Error(), "CACHE") {
		t.Fatalf("unknown binding: %v", err)
	}

	if err := cache.Put(ctx, "todo/1", []byte("write docs"), durable.KVPutOptions{Metadata: map[string]string{"by": "ann"}}); err != nil {
		t.Fatal(err)
	}
	if err := cache.Put(ctx, "todo/2", []byte("ship"), durable.KVPutOptions{ExpirationTTL: 3600e9}); err != nil {
		t.Fatal(err)
	}
	v, meta, found, err := cache.GetWithMetadata(ctx, "todo/1")
	if err != nil || !found || string(v) != "write docs" || string(meta) != `{"by":"ann"}` {
		t.Fatalf("GetWithMetadata: %q %s %v %v", v, meta, found, err)
	}
	if _, found, err := cache.Get(ctx, "todo/3"); err != nil || found {
		t.Fatalf("missing key: found=%v err=%v", found, err)
	}
	page, err := cache.List(ctx, durable.KVListOptions{Prefix: "todo/"})
	if err != nil || len(page.Keys) != 2 || !page.ListComplete || page.Keys[1].Expiration == 0 {
		t.Fatalf("List: %+v %v", page, err)
	}

	same, _ := env.KV("SAME")
	other, _ := env.KV("OTHER")
	if v, found, _ := same.Get(ctx, "todo/1"); !found || string(v) != "write docs" {
		t.Fatalf("a binding of the same id does not see the key: %q %v", v, found)
	}
	if _, found, _ := other.Get(ctx, "todo/1"); found {
		t.Fatal("a binding of another id sees the key")
	}

	bad := []struct {
		name string
		err  error
		want error
	}{
		{"empty key", cache.Put(ctx, "", []byte("x"), durable.KVPutOptions{}), durable.ErrInvalidOption},
		{"long key", cache.Put(ctx, strings.Repeat("k", 513), []byte("x"), durable.KVPutOptions{}), durable.ErrKeyTooLarge},
		{"short ttl", cache.Put(ctx, "todo/1", []byte("x"), durable.KVPutOptions{ExpirationTTL: 1e9}), durable.ErrInvalidOption},
		{"value over 25 MiB", cache.Put(ctx, "todo/1", make([]byte, durable.KVMaxValueBytes+1), durable.KVPutOptions{}), durable.ErrValueTooLarge},
	}
	for _, b := range bad {
		if !errors.Is(b.err, b.want) {
			t.Errorf("%s: %v, want %v", b.name, b.err, b.want)
		}
		if strings.Count(b.err.Error(), b.want.Error()) != 1 {
			t.Errorf("%s: %q says %q other than once", b.name, b.err, b.want)
		}
	}
	if v, _, _ := cache.Get(ctx, "todo/1"); string(v) != "write docs" {
		t.Fatalf("bad input changed todo/1 to %q", v)
	}

	// A value of 25 MiB, kept in chunks committed as the put goes; a
	// smaller value replaces it and its chunks go.
	big := make([]byte, durable.KVMaxValueBytes)
	for i := range big {
		big[i] = byte(i * 7 / 5)
	}
	if err := cache.Put(ctx, "blob", big, durable.KVPutOptions{Metadata: "big"}); err != nil {
		t.Fatalf("put of %d bytes: %v", len(big), err)
	}
	if v, meta, found, err := cache.GetWithMetadata(ctx, "blob"); err != nil || !found || !bytes.Equal(v, big) || string(meta) != `"big"` {
		t.Fatalf("get of the 25 MiB value: %d bytes, %s, %v, %v", len(v), meta, found, err)
	}
	if err := cache.Put(ctx, "blob", []byte("small now"), durable.KVPutOptions{}); err != nil {
		t.Fatal(err)
	}
	if v, _, err := cache.Get(ctx, "blob"); err != nil || string(v) != "small now" {
		t.Fatalf("after replacing the large value: %q %v", v, err)
	}
	if left := kvChunkKeys(t, n, "CACHE"); left != 0 {
		t.Fatalf("%d chunks left after the large value was replaced", left)
	}
	if err := cache.Put(ctx, "blob", big[:3<<20], durable.KVPutOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := kvChunkKeys(t, n, "CACHE"); got != 3 {
		t.Fatalf("a 3 MiB value in %d chunks, want 3", got)
	}
	if err := cache.Delete(ctx, "blob"); err != nil {
		t.Fatal(err)
	}
	if left := kvChunkKeys(t, n, "CACHE"); left != 0 {
		t.Fatalf("%d chunks left after the large value was deleted", left)
	}

	// From inside an object, through the Worker.
	code, body := get(t, n, "/", url.Values{"ns": {"KVUSER"}, "name": {"from-object"}})
	if code != http.StatusOK || !strings.HasPrefix(body, "written by ") {
		t.Fatalf("object using KV: %d %q", code, body)
	}

	// Through the admin API, a put with a bad body is refused and stores
	// nothing.
	for _, tc := range []struct{ name, body, want string }{
		{"no value", `{}`, `needs "value"`},
		{"null", `null`, `not null`},
		{"ttl of 0", `{"value":"aGk=","expiration_ttl":0}`, "expiration_ttl 0 is out of range"},
		{"expiration of 0", `{"value":"aGk=","expiration":0}`, "expiration 0 is out of range"},
		{"data after the JSON", `{"value":"aGk="} more`, "data after the JSON value"},
		{"ttl that would wrap around", `{"value":"aGk=","expiration_ttl":18446744134}`, "expiration_ttl 18446744134 is out of range"},
		{"ttl past a century", `{"value":"aGk=","expiration_ttl":9223372037}`, "expiration_ttl 9223372037 is out of range"},
		{"negative ttl", `{"value":"aGk=","expiration_ttl":-5}`, "out of range"},
		{"expiration past year 9999", `{"value":"aGk=","expiration":9223372036854775807}`, "expiration 9223372036854775807 is out of range"},
	} {
		var e struct {
			Error string `json:"error"`
		}
		if code := adminDo(t, n.AdminAddr().String(), "", "PUT", "/v1/kv/CACHE/values/bad", tc.body, &e); code != http.StatusBadRequest || !strings.Contains(e.Error, tc.want) {
			t.Errorf("admin put, %s: %d %q, want 400 with %q", tc.name, code, e.Error, tc.want)
		}
	}
	// A value too large for KV to take is refused as that, whatever its
	// encoding made of the body's size.
	huge := `{"value":"` + strings.Repeat("A", maxKVAdminBody) + `"}`
	var tooLarge struct {
		Error string `json:"error"`
	}
	if code := adminDo(t, n.AdminAddr().String(), "", "PUT", "/v1/kv/CACHE/values/bad", huge, &tooLarge); code != http.StatusRequestEntityTooLarge || !strings.Contains(tooLarge.Error, "larger than a KV value may be") {
		t.Errorf("admin put of a value over the limit: %d %q, want 413 naming the value limit", code, tooLarge.Error)
	}
	// A body whose Content-Length is over the limit is answered before
	// any of it is sent: the client gets the 413, not a reset mid-upload.
	conn, err := net.Dial("tcp", n.AdminAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PUT /v1/kv/CACHE/values/bad HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", maxKVAdminBody+1)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	early, err := http.ReadResponse(bufio.NewReader(conn), nil)
	conn.Close()
	if err != nil || early.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("a body announced over the limit, none of it sent: %v %v, want 413 at once", early, err)
	}
	// A value one byte over, in a body under the body's limit: 413 too.
	justOver := `{"value":"` + base64.StdEncoding.EncodeToString(make([]byte, durable.KVMaxValueBytes+1)) + `"}`
	if len(justOver) > maxKVAdminBody {
		t.Fatalf("the test's body of %d bytes is over the limit %d", len(justOver), maxKVAdminBody)
	}
	if code := adminDo(t, n.AdminAddr().String(), "", "PUT", "/v1/kv/CACHE/values/bad", justOver, &tooLarge); code != http.StatusRequestEntityTooLarge || !strings.Contains(tooLarge.Error, "larger than a KV value may be") {
		t.Errorf("admin put of a value one byte over the limit: %d %q, want 413 naming the value limit", code, tooLarge.Error)
	}
	// One message for every limit out of range, naming the range.
	for _, limit := range []string{"0", "-1", "x", "1001"} {
		var e struct {
			Error string `json:"error"`
		}
		if code := adminDo(t, n.AdminAddr().String(), "", "GET", "/v1/kv/CACHE/keys?limit="+limit, nil, &e); code != http.StatusBadRequest || !strings.Contains(e.Error, "from 1 to 1000") {
			t.Errorf("admin list with limit=%s: %d %q, want 400 naming the range", limit, code, e.Error)
		}
	}
	// A prefix no key can have, or a cursor of another listing, is refused
	// rather than answered with an empty page.
	otherCursor := base64.RawURLEncoding.EncodeToString([]byte("todo/1"))
	for _, tc := range []struct{ name, query, want string }{
		{"prefix not UTF-8", "prefix=%ff", "prefix must be UTF-8"},
		{"cursor of another prefix", "prefix=from&cursor=" + otherCursor, "another prefix"},
	} {
		var e struct {
			Error string `json:"error"`
		}
		if code := adminDo(t, n.AdminAddr().String(), "", "GET", "/v1/kv/CACHE/keys?"+tc.query, nil, &e); code != http.StatusBadRequest || !strings.Contains(e.Error, tc.want) {
			t.Errorf("admin list, %s: %d %q, want 400 with %q", tc.name, code, e.Error, tc.want)
		}
	}
	if _, found, err := cache.Get(ctx, "bad"); err != nil || found {
		t.Fatalf("a refused admin put stored the key: found=%v err=%v", found, err)
	}

	if err := cache.Delete(ctx, "todo/2"); err != nil {
		t.Fatal(err)
	}
	closeNode(t, n)
	n = startKVNode(t, dir)
	defer closeNode(t, n)
	cache, _ = n.Env().KV("CACHE")
	page, err = cache.List(ctx, durable.KVListOptions{})
	if err != nil || len(page.Keys) != 2 || page.Keys[0].Name != "from-object" || page.Keys[1].Name != "todo/1" {
		t.Fatalf("after a restart: %+v %v", page, err)
	}
}

// An admin call refuses query parameters it does not take, and one given
// twice, rather than ignoring them: a put's ?expiration_ttl=3600 stored
// the key for good, and a list's misspelt ?limt=1 listed every key.
func TestAdminRefusesQueryItDoesNotTake(t *testing.T) {
	n := startKVNode(t, t.TempDir())
	defer closeNode(t, n)
	addr := n.AdminAddr().String()
	for _, tc := range []struct{ method, path, body, want string }{
		{"PUT", "/v1/kv/CACHE/values/k?expiration_ttl=3600", `{"value":"aGk="}`, `unknown query parameter "expiration_ttl": PUT /v1/kv/CACHE/values/k takes none`},
		{"GET", "/v1/kv/CACHE/keys?limt=1", "", `unknown query parameter "limt": GET /v1/kv/CACHE/keys takes prefix, limit, cursor`},
		{"GET", "/v1/kv/CACHE/keys?limit=1&limit=1000", "", `"limit" given 2 times`},
		{"GET", "/v1/kv/CACHE/keys?prefix=%zz", "", "malformed query"},
		{"GET", "/v1/status?verbose=1", "", `unknown query parameter "verbose"`},
		{"DELETE", "/v1/kv/CACHE/values/k?all=1", "", `unknown query parameter "all"`},
	} {
		var body any
		if tc.body != "" {
			body = tc.body
		}
		var e apiErrorJSON
		if code := adminDo(t, addr, "", tc.method, tc.path, body, &e); code != http.StatusBadRequest || !strings.Contains(e.Error, tc.want) {
			t.Errorf("%s %s: %d %q, want 400 with %q", tc.method, tc.path, code, e.Error, tc.want)
		}
	}
	cache, _ := n.Env().KV("CACHE")
	if _, found, err := cache.Get(context.Background(), "k"); err != nil || found {
		t.Fatalf("a refused put stored the key: found=%v err=%v", found, err)
	}
	var page durable.KVListResult
	if code := adminDo(t, addr, "", "GET", "/v1/kv/CACHE/keys?prefix=a&limit=5&cursor=", nil, &page); code != http.StatusOK {
		t.Fatalf("list with the parameters it takes: %d", code)
	}
}

// A call that does not exist is 404 with a query too, as without one
// (docs/admin-api.md), not 400 for a parameter it "does not take".
func TestAdminUnknownCallWithQueryIs404(t *testing.T) {
	n := startKVNode(t, t.TempDir())
	defer closeNode(t, n)
	for _, path := range []string{"/v1/nope?x=1", "/v1/kv/CACHE/nope?limit=1", "/v1/nope"} {
		var e apiErrorJSON
		if code := adminDo(t, n.AdminAddr().String(), "", "GET", path, nil, &e); code != http.StatusNotFound || !strings.Contains(e.Error, "no admin call") {
			t.Errorf("GET %s: %d %q, want 404", path, code, e.Error)
		}
	}
}

// An admin body naming a field twice, or in another case than its own,
// is refused and changes nothing: encoding/json took the last of two and
// matched names whatever their case.
func TestAdminBodyFieldNamesAreExact(t *testing.T) {
	n := startKVNode(t, t.TempDir())
	defer closeNode(t, n)
	addr := n.AdminAddr().String()
	for _, tc := range []struct{ body, want string }{
		{`{"value":"aGk=","value":"Ynll"}`, `field "value" given twice`},
		{`{"Value":"Ynll"}`, `unknown field "Value" (this call takes value, expiration_ttl, expiration, metadata, spelt exactly so)`},
		{`{"value":"aGk=","EXPIRATION_TTL":3600}`, `unknown field "EXPIRATION_TTL"`},
	} {
		var e apiErrorJSON
		if code := adminDo(t, addr, "", "PUT", "/v1/kv/CACHE/values/k", tc.body, &e); code != http.StatusBadRequest || !strings.Contains(e.Error, tc.want) {
			t.Errorf("put %s: %d %q, want 400 with %q", tc.body, code, e.Error, tc.want)
		}
	}
	cache, _ := n.Env().KV("CACHE")
	if v, found, err := cache.Get(context.Background(), "k"); err != nil || found {
		t.Fatalf("a refused put stored %q (found=%v err=%v)", v, found, err)
	}
	if code := adminDo(t, addr, "", "PUT", "/v1/kv/CACHE/values/k", `{"value":"aGk=","expiration_ttl":3600,"metadata":{"Value":1,"value":2}}`, nil); code != http.StatusOK {
		t.Fatalf("a put with its fields as written, metadata free-form: %d", code)
	}
}

// In a cluster a KV namespace is one object like any other: what one node
// puts, every node reads (forwarded to the object's shard leader), with its
// metadata; a missing key is missing everywhere.
func TestKVAcrossTheCluster(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 4, &turnRegistry{active: map[string]string{}}, func(cfg *Config) {
		cfg.KVNamespaces = []durable.KVBinding{{Binding: "CACHE", ID: "cache-1"}}
	})
	ctx := context.Background()
	kvOf := func(i int) *durable.KVNamespace {
		kv, err := c.nodes[i].Env().KV("CACHE")
		if err != nil {
			t.Fatal(err)
		}
		return kv
	}
	for i := range c.nodes {
		key := fmt.Sprintf("from-n%d", i+1)
		if err := kvOf(i).Put(ctx, key, []byte(key), durable.KVPutOptions{Metadata: i}); err != nil {
			t.Fatalf("put via node %d: %v", i+1, err)
		}
	}
	for i := range c.nodes {
		for j := range c.nodes {
			key := fmt.Sprintf("from-n%d", j+1)
			v, meta, found, err := kvOf(i).GetWithMetadata(ctx, key)
			if err != nil || !found || string(v) != key || string(meta) != fmt.Sprint(j) {
				t.Fatalf("node %d reads %s: %q %s %v %v", i+1, key, v, meta, found, err)
			}
		}
		if _, found, err := kvOf(i).Get(ctx, "never-put"); err != nil || found {
			t.Fatalf("node %d reads a missing key: found=%v err=%v", i+1, found, err)
		}
		if page, err := kvOf(i).List(ctx, durable.KVListOptions{}); err != nil || len(page.Keys) != 3 {
			t.Fatalf("node %d lists: %+v %v", i+1, page, err)
		}
	}
}

// kvChunkKeys counts the chunk keys ("c" prefix) in the storage of the
// object that keeps KV binding's namespace on node n.
func kvChunkKeys(t *testing.T, n *Node, binding string) int {
	t.Helper()
	var id string
	for _, kv := range n.cfg.KVNamespaces {
		if kv.Binding == binding {
			id = kv.ID
		}
	}
	obj := durable.IDFromName(durable.DeriveNamespaceKey(durable.KVClassName, ""), id).Bytes()
	sh := n.shards[shardOf(obj, len(n.shards))]
	kvs, err := n.store.List(sh.id, obj, durable.ListOptions{Prefix: "c"})
	if err != nil {
		t.Fatal(err)
	}
	return len(kvs)
}

// A namespace spread over several objects: keys land in every object,
// List pages through all of them in order, and a restart with another
// number of objects is refused rather than losing sight of keys.
func TestKVSpreadNamespace(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	start := func(objects int) (*Node, *durable.KVNamespace) {
		n := startNode(t, dir, func(cfg *Config, _ *Node) {
			cfg.KVNamespaces = []durable.KVBinding{{Binding: "SPREAD", ID: "spread-1", Objects: objects}}
		})
		kv, err := n.Env().KV("SPREAD")
		if err != nil {
			t.Fatal(err)
		}
		return n, kv
	}
	n, kv := start(4)
	const count = 300
	for i := range count {
		key := fmt.Sprintf("k%03d", i)
		if err := kv.Put(ctx, key, []byte(key), durable.KVPutOptions{}); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	key := durable.DeriveNamespaceKey(durable.KVClassName, "")
	for i := range 4 {
		name := "spread-1"
		if i > 0 {
			name += "\x00" + fmt.Sprint(i)
		}
		obj := durable.IDFromName(key, name).Bytes()
		kvs, err := n.store.List(n.shards[shardOf(obj, len(n.shards))].id, obj, durable.ListOptions{Prefix: "k"})
		if err != nil || len(kvs) < count/8 {
			t.Fatalf("object %d keeps %d of %d keys (%v)", i, len(kvs), count, err)
		}
	}
	var listed []string
	cursor := ""
	for pages := 0; ; pages++ {
		page, err := kv.List(ctx, durable.KVListOptions{Limit: 7, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range page.Keys {
			listed = append(listed, k.Name)
		}
		if page.ListComplete {
			break
		}
		if pages > count {
			t.Fatal("List does not end")
		}
		cursor = page.Cursor
	}
	if len(listed) != count || !slices.IsSorted(listed) || listed[0] != "k000" || listed[count-1] != fmt.Sprintf("k%03d", count-1) {
		t.Fatalf("listed %d keys (sorted: %v), want %d", len(listed), slices.IsSorted(listed), count)
	}
	if v, found, err := kv.Get(ctx, "k123"); err != nil || !found || string(v) != "k123" {
		t.Fatalf("get: %q %v %v", v, found, err)
	}
	closeNode(t, n)

	n, kv = start(1)
	if _, _, err := kv.Get(ctx, "k123"); !errors.Is(err, durable.ErrKVObjectsChanged) || !strings.Contains(err.Error(), "4 objects") {
		t.Fatalf("get with another number of objects: %v", err)
	}
	if err := kv.Put(ctx, "k999", []byte("x"), durable.KVPutOptions{}); !errors.Is(err, durable.ErrKVObjectsChanged) {
		t.Fatalf("put with another number of objects: %v", err)
	}
	// The admin API says it is the configuration's conflict, not the call's.
	var e apiErrorJSON
	if code := adminDo(t, n.AdminAddr().String(), "", "GET", "/v1/kv/SPREAD/values/k123", "", &e); code != http.StatusConflict || !strings.Contains(e.Error, "keeps its keys in 4 objects") {
		t.Fatalf("admin get with another number of objects: %d %q", code, e.Error)
	}
	closeNode(t, n)

	n, kv = start(4)
	defer closeNode(t, n)
	if v, found, err := kv.Get(ctx, "k299"); err != nil || !found || string(v) != "k299" {
		t.Fatalf("get after returning to 4 objects: %q %v %v", v, found, err)
	}
	if _, found, _ := kv.Get(ctx, "k999"); found {
		t.Fatal("the refused put wrote")
	}
}

// TestKVFarExpirationDoesNotSpin: a KV key put with an expiration far in
// the future must not make the namespace's alarm fire over and over.
func TestKVFarExpirationDoesNotSpin(t *testing.T) {
	n := startKVNode(t, t.TempDir())
	defer closeNode(t, n)
	ctx := context.Background()
	cache, err := n.Env().KV("CACHE")
	if err != nil {
		t.Fatal(err)
	}
	err = cache.Put(ctx, "far", []byte("v"), durable.KVPutOptions{Expiration: time.Unix(1<<62, 0)})
	if err != nil {
		t.Logf("put refused: %v", err)
	}
	before := counterValue(t, n.metrics.alarmsFired)
	time.Sleep(time.Second)
	if fired := counterValue(t, n.metrics.alarmsFired) - before; fired > 2 {
		t.Fatalf("%v alarm deliveries in one second after a put with a far expiration (err %v)", fired, err)
	}
	v, found, gerr := cache.Get(ctx, "far")
	switch {
	case gerr != nil:
		t.Fatalf("get: %v", gerr)
	case err != nil && found:
		t.Fatalf("the put was refused (%v) but stored its value %q", err, v)
	case err == nil && (!found || string(v) != "v"):
		t.Fatalf("the put succeeded but get finds %q, %v", v, found)
	}
}

// startKVNodeWithKeyLimit starts a node whose storage keys may be at most
// maxKeyBytes, and returns its KV namespace CACHE; the node stops with t.
func startKVNodeWithKeyLimit(t *testing.T, maxKeyBytes int) *durable.KVNamespace {
	n := startNode(t, t.TempDir(), func(cfg *Config, n *Node) {
		cfg.KVNamespaces = []durable.KVBinding{{Binding: "CACHE", ID: "cache-1"}}
		cfg.Limits.MaxKeyBytes = maxKeyBytes
	})
	t.Cleanup(func() { closeNode(t, n) })
	cache, err := n.Env().KV("CACHE")
	if err != nil {
		t.Fatal(err)
	}
	return cache
}

// TestKVPutRefusedByStorageLimitsChangesNothing: with [storage]
// max_key_bytes below what the KV object's own keys need, a put the
// storage refuses (ErrKeyTooLarge) leaves the key as it was.
func TestKVPutRefusedByStorageLimitsChangesNothing(t *testing.T) {
	cache := startKVNodeWithKeyLimit(t, 100)
	ctx := context.Background()
	key := strings.Repeat("k", 90) // "k"+key fits in 100 bytes, its expiration index key does not
	if err := cache.Put(ctx, key, []byte("old"), durable.KVPutOptions{}); err != nil {
		t.Fatalf("plain put: %v", err)
	}
	err := cache.Put(ctx, key, []byte("new"), durable.KVPutOptions{ExpirationTTL: time.Hour})
	if !errors.Is(err, durable.ErrKeyTooLarge) {
		t.Fatalf("a put whose expiration index key is over the limit: %v, want ErrKeyTooLarge", err)
	}
	t.Logf("put with an expiration: %v", err)
	v, found, gerr := cache.Get(ctx, key)
	if gerr != nil || !found || string(v) != "old" {
		t.Fatalf("after a refused put: %q, %v, %v; want the old value", v, found, gerr)
	}
	page, err := cache.List(ctx, durable.KVListOptions{})
	if err != nil || len(page.Keys) != 1 || page.Keys[0].Expiration != 0 {
		t.Fatalf("after a refused put, list: %+v, %v", page, err)
	}
}

// TestKVLargePutRefusedByStorageLimitsLeavesNamespaceUsable: a large put
// whose chunk keys [storage] max_key_bytes refuses fails, and the
// namespace's other puts still work afterwards.
func TestKVLargePutRefusedByStorageLimitsLeavesNamespaceUsable(t *testing.T) {
	cache := startKVNodeWithKeyLimit(t, 100)
	ctx := context.Background()
	key := strings.Repeat("k", 90) // "p"+key fits in 100 bytes, its chunks' keys do not
	err := cache.Put(ctx, key, make([]byte, 1<<20+1), durable.KVPutOptions{})
	t.Logf("large put: %v", err)
	if err := cache.Put(ctx, "other", []byte("v"), durable.KVPutOptions{}); err != nil {
		t.Fatalf("a put after the refused large put: %v", err)
	}
	if err := cache.Delete(ctx, "other"); err != nil {
		t.Fatalf("a delete after the refused large put: %v", err)
	}
}
