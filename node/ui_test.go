package node

import (
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The dashboard's files are served with their types and a CSP, the admin
// listener's root leads to it, and every admin call its script makes
// exists (in dev mode the cluster calls answer 409, not 404).
func TestDashboard(t *testing.T) {
	nd := startNode(t, t.TempDir(), func(c *Config, _ *Node) { c.AdminToken = testAdminToken })
	defer closeNode(t, nd)
	addr := nd.AdminAddr().String()
	get := func(path string) (*http.Response, string) {
		t.Helper()
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	for _, tc := range []struct{ path, typ, has string }{
		{"/ui/", "text/html", `<script src="app.js"`},
		{"/ui/app.js", "javascript", "/v1/status"},
		{"/ui/style.css", "text/css", "table"},
	} {
		resp, body := get(tc.path)
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), tc.typ) || !strings.Contains(body, tc.has) {
			t.Fatalf("GET %s: %d %q, body has %q: %v", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.has, strings.Contains(body, tc.has))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Fatalf("GET %s: Content-Security-Policy %q", tc.path, csp)
		}
	}
	if resp, _ := get("/ui/nope.js"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /ui/nope.js: %d, want 404", resp.StatusCode)
	}
	if resp, _ := get("/"); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET /: %d to %q, want a redirect to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}

	_, script := get("/ui/app.js")
	calls := regexp.MustCompile(`"(/v1/[a-z/]+)"`).FindAllStringSubmatch(script, -1)
	var paths []string
	for _, c := range calls {
		paths = append(paths, c[1])
	}
	slices.Sort(paths)
	paths = slices.Compact(paths)
	if want := []string{"/v1/members", "/v1/shards", "/v1/status"}; !slices.Equal(paths, want) {
		t.Fatalf("the script calls %v; this test checks %v", paths, want)
	}
	for _, p := range paths {
		var e apiErrorJSON
		if code := adminDo(t, addr, testAdminToken, "GET", p, nil, &e); code != 200 && code != http.StatusConflict {
			t.Fatalf("GET %s: %d %s", p, code, e.Error)
		}
	}
}
