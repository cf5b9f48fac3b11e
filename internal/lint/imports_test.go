package lint

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/roostdb/roost"

// rule says which roost packages the packages matching pkg may import.
//
// Patterns are slash-separated paths relative to the module root: "*"
// matches one path element and a trailing "..." matches zero or more
// ("cmd/..." is cmd and everything under it; "..." alone is every package).
// In allow, "$1" stands for what the first "*" of pkg matched, so an
// example's main package may import its own example and no other.
type rule struct {
	pkg   string
	allow []string
}

// importRules is DESIGN §1 as a table. The first rule whose pkg matches a
// package applies to it; a package no rule matches is an error, so every new
// package states its place in the layering here.
var importRules = []rule{
	{"durable", nil},
	// Generated RPC code may be split into several packages under proto/;
	// they may import one another and nothing else of roost.
	{"proto/...", []string{"proto/..."}},
	{"raftstore", []string{"durable", "multiraft", "loglimit", "proto/..."}},
	// multiraft is the engine being built to run the shard groups
	// (docs/multiraft.md); it knows nothing of objects.
	{"multiraft", []string{"proto/..."}},
	{"placement", []string{"durable", "loglimit", "connlimit", "proto/..."}},
	{"config", []string{"durable"}},
	{"node", []string{"durable", "raftstore", "multiraft", "placement", "loglimit", "connlimit", "proto/..."}},
	// loadgen is a leaf: closed-loop load and its summary, for roost bench
	// and the etcd load of make bench-compare.
	{"loadgen", nil},
	// loglimit is a leaf: one log line per key per interval.
	{"loglimit", nil},
	// connlimit is a leaf: connections open at once against a bound.
	{"connlimit", nil},
	{"cli", []string{"node", "config", "durable", "loadgen", "internal/devca"}},
	{"cmd/...", []string{"cli", "durable", "examples/..."}},
	// An example's own binaries (examples/<name>/cmd/...) wire it into cli.Run.
	{"examples/*/cmd/...", []string{"durable", "cli", "examples/$1"}},
	// examples/all puts every example into the stock binary's one app.
	{"examples/all", []string{"durable", "examples/..."}},
	{"examples/...", []string{"durable"}},
	{"internal/...", []string{"..."}},
}

// testOnlyAllow lists what test files may import on top of their package's
// rule: shared test helpers (internal/...) and the examples as fixtures.
// A package's external tests (package x_test) may import x itself.
var testOnlyAllow = []string{"internal/...", "examples/..."}

// pkgImports is one roost package and the roost packages it imports, all as
// paths relative to the module root ("" is the root package).
type pkgImports struct {
	Path        string
	Imports     []string // by the package's non-test files
	TestImports []string // by its _test.go files, in-package and external
}

// match reports whether rel matches pattern and what its first "*" matched.
func match(pattern, rel string) (ok bool, star string) {
	if pattern == "..." {
		return true, ""
	}
	pe := strings.Split(pattern, "/")
	var re []string
	if rel != "" {
		re = strings.Split(rel, "/")
	}
	starSet := false
	for i, p := range pe {
		if p == "..." && i == len(pe)-1 {
			return true, star
		}
		if i >= len(re) {
			return false, ""
		}
		switch {
		case p == "*":
			if !starSet {
				star, starSet = re[i], true
			}
		case p != re[i]:
			return false, ""
		}
	}
	if len(pe) != len(re) {
		return false, ""
	}
	return true, star
}

// ruleFor returns the rule for rel and what its "*" matched, or nil.
func ruleFor(rel string) (*rule, string) {
	for i := range importRules {
		if ok, star := match(importRules[i].pkg, rel); ok {
			return &importRules[i], star
		}
	}
	return nil, ""
}

func allowedBy(patterns []string, star, to string) bool {
	for _, p := range patterns {
		if ok, _ := match(strings.ReplaceAll(p, "$1", star), to); ok {
			return true
		}
	}
	return false
}

func display(rel string) string {
	if rel == "" {
		return module
	}
	return rel
}

// checkImports returns one message per package missing from the table and
// per import edge the table forbids.
func checkImports(pkgs []pkgImports) []string {
	var bad []string
	for _, p := range pkgs {
		r, star := ruleFor(p.Path)
		if r == nil {
			bad = append(bad, fmt.Sprintf("package %s is not in the import-direction table: add a rule for it to importRules in internal/lint/imports_test.go (see DESIGN §1)", display(p.Path)))
			continue
		}
		allowed := "no roost package"
		if len(r.allow) > 0 {
			allowed = strings.Join(r.allow, ", ")
		}
		for _, to := range p.Imports {
			if !allowedBy(r.allow, star, to) {
				bad = append(bad, fmt.Sprintf("%s imports %s: rule %q allows only %s (DESIGN §1)", display(p.Path), display(to), r.pkg, allowed))
			}
		}
		for _, to := range p.TestImports {
			if to == p.Path || allowedBy(r.allow, star, to) || allowedBy(testOnlyAllow, "", to) {
				continue
			}
			bad = append(bad, fmt.Sprintf("tests of %s import %s: rule %q allows only %s, and tests also %s (DESIGN §1)", display(p.Path), display(to), r.pkg, allowed, strings.Join(testOnlyAllow, ", ")))
		}
	}
	return bad
}

// roostOnly keeps the roost packages of paths, relative to the module root, sorted and deduplicated.
func roostOnly(paths ...[]string) []string {
	var out []string
	for _, ps := range paths {
		for _, p := range ps {
			switch {
			case p == module:
				out = append(out, "")
			case strings.HasPrefix(p, module+"/"):
				out = append(out, strings.TrimPrefix(p, module+"/"))
			}
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// listPackages runs go list in the module root and returns every package of
// the module with its roost imports.
func listPackages(t *testing.T) []pkgImports {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not on PATH (go test puts GOROOT/bin there): %v", err)
	}
	gomod, err := exec.Command(goTool, "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	if root == "." || root == "" || strings.TrimSpace(string(gomod)) == "/dev/null" {
		t.Fatalf("not inside the roost module (GOMOD=%q)", gomod)
	}
	cmd := exec.Command(goTool, "list", "-e", "-json=ImportPath,Imports,TestImports,XTestImports,Error", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list ./... in %s: %v\n%s", root, err, stderr.String())
	}
	var pkgs []pkgImports
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath                         string
			Imports, TestImports, XTestImports []string
			Error                              *struct{ Err string }
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		if p.Error != nil {
			// The import list of a broken package may be incomplete.
			t.Errorf("go list: package %s: %s", p.ImportPath, p.Error.Err)
		}
		rel := roostOnly([]string{p.ImportPath})
		if len(rel) != 1 {
			t.Errorf("go list ./... returned %s, which is outside module %s", p.ImportPath, module)
			continue
		}
		pkgs = append(pkgs, pkgImports{
			Path:        rel[0],
			Imports:     roostOnly(p.Imports),
			TestImports: roostOnly(p.TestImports, p.XTestImports),
		})
	}
	if len(pkgs) == 0 {
		t.Fatal("go list ./... found no packages")
	}
	return pkgs
}

// TestImportDirection enforces DESIGN §1 on the code as it is.
func TestImportDirection(t *testing.T) {
	pkgs := listPackages(t)
	seen := make(map[string]bool)
	for _, p := range pkgs {
		seen[p.Path] = true
		t.Logf("%-24s → %v (tests: %v)", display(p.Path), p.Imports, p.TestImports)
	}
	// The check must see the packages it is meant to guard.
	for _, want := range []string{"durable", "internal/lint"} {
		if !seen[want] {
			t.Errorf("go list did not report %s; is the test running in the roost module?", want)
		}
	}
	for _, msg := range checkImports(pkgs) {
		t.Error(msg)
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, rel string
		ok           bool
		star         string
	}{
		{"durable", "durable", true, ""},
		{"durable", "durable/x", false, ""},
		{"durable", "durablex", false, ""},
		{"durable", "", false, ""},
		{"cmd/...", "cmd", true, ""},
		{"cmd/...", "cmd/roost", true, ""},
		{"cmd/...", "cmd/roost/x", true, ""},
		{"cmd/...", "cmdx/roost", false, ""},
		{"...", "", true, ""},
		{"...", "anything/at/all", true, ""},
		{"examples/*/cmd", "examples/counter/cmd", true, "counter"},
		{"examples/*/cmd", "examples/counter", false, ""},
		{"examples/*/cmd", "examples/counter/cmd/x", false, ""},
		{"examples/*/cmd", "examples/cmd", false, ""},
		{"examples/*", "examples/counter", true, "counter"},
		{"examples/*", "examples", false, ""},
	}
	for _, tc := range tests {
		ok, star := match(tc.pattern, tc.rel)
		if ok != tc.ok || star != tc.star {
			t.Errorf("match(%q, %q) = %v, %q; want %v, %q", tc.pattern, tc.rel, ok, star, tc.ok, tc.star)
		}
	}
}

// TestCheckImports runs the checker on made-up packages: it must pass the
// layering of DESIGN §1 and report every edge against it.
func TestCheckImports(t *testing.T) {
	good := []pkgImports{
		{Path: "durable"},
		{Path: "proto"},
		{Path: "proto/roostpb", Imports: []string{"proto"}},
		{Path: "raftstore", Imports: []string{"durable", "proto/roostpb"}},
		{Path: "placement", Imports: []string{"durable", "proto"}},
		{Path: "config", Imports: []string{"durable"}},
		{Path: "node", Imports: []string{"durable", "placement", "proto", "raftstore"}},
		{Path: "cli", Imports: []string{"config", "durable", "node"}},
		{Path: "cmd/roost", Imports: []string{"cli", "durable", "examples/chat", "examples/counter"}},
		{Path: "examples/counter", Imports: []string{"durable"}},
		{Path: "examples/counter/cmd", Imports: []string{"cli", "durable", "examples/counter"}},
		{Path: "internal/testcluster", Imports: []string{"cli", "durable", "node", "raftstore"}},
		{Path: "internal/lint"},
		// Tests may also use internal helpers and the examples, and external
		// tests import their own package.
		{Path: "node", TestImports: []string{"durable", "examples/counter", "internal/testcluster", "node"}},
		{Path: "durable", TestImports: []string{"durable"}},
	}
	if bad := checkImports(good); len(bad) != 0 {
		t.Fatalf("the allowed layering was rejected:\n%s", strings.Join(bad, "\n"))
	}

	tests := []struct {
		desc string
		pkg  pkgImports
		want []string // substrings of the one message expected
	}{
		{"durable imports nothing of roost", pkgImports{Path: "durable", Imports: []string{"node"}}, []string{"durable imports node"}},
		{"durable imports internal", pkgImports{Path: "durable", Imports: []string{"internal/testcluster"}}, []string{"durable imports internal/testcluster"}},
		{"proto imports durable", pkgImports{Path: "proto", Imports: []string{"durable"}}, []string{"proto imports durable"}},
		{"raftstore imports placement", pkgImports{Path: "raftstore", Imports: []string{"durable", "placement"}}, []string{"raftstore imports placement"}},
		{"placement imports raftstore", pkgImports{Path: "placement", Imports: []string{"raftstore"}}, []string{"placement imports raftstore"}},
		{"raftstore imports node (upwards)", pkgImports{Path: "raftstore", Imports: []string{"node"}}, []string{"raftstore imports node"}},
		{"config imports node", pkgImports{Path: "config", Imports: []string{"node"}}, []string{"config imports node"}},
		{"node imports cli", pkgImports{Path: "node", Imports: []string{"cli"}}, []string{"node imports cli"}},
		{"node imports config", pkgImports{Path: "node", Imports: []string{"config"}}, []string{"node imports config"}},
		{"cli imports raftstore", pkgImports{Path: "cli", Imports: []string{"raftstore"}}, []string{"cli imports raftstore"}},
		{"cli imports examples", pkgImports{Path: "cli", Imports: []string{"examples/counter"}}, []string{"cli imports examples/counter"}},
		{"cmd imports node", pkgImports{Path: "cmd/roost", Imports: []string{"node"}}, []string{"cmd/roost imports node"}},
		{"example imports node", pkgImports{Path: "examples/counter", Imports: []string{"node"}}, []string{"examples/counter imports node"}},
		{"example imports cli", pkgImports{Path: "examples/counter", Imports: []string{"cli"}}, []string{"examples/counter imports cli"}},
		{"example imports another example", pkgImports{Path: "examples/chat", Imports: []string{"examples/counter"}}, []string{"examples/chat imports examples/counter"}},
		{"example binary imports another example", pkgImports{Path: "examples/counter/cmd", Imports: []string{"examples/chat"}}, []string{"examples/counter/cmd imports examples/chat"}},
		{"example binary imports node", pkgImports{Path: "examples/counter/cmd", Imports: []string{"node"}}, []string{"examples/counter/cmd imports node"}},
		{"test of durable imports node", pkgImports{Path: "durable", TestImports: []string{"node"}}, []string{"tests of durable import node"}},
		{"test of raftstore imports cli", pkgImports{Path: "raftstore", TestImports: []string{"internal/x", "cli"}}, []string{"tests of raftstore import cli"}},
		{"unknown package", pkgImports{Path: "metrics", Imports: []string{"durable"}}, []string{"package metrics is not in the import-direction table", "importRules"}},
		{"unknown subpackage", pkgImports{Path: "node/internal/gate"}, []string{"package node/internal/gate is not in the import-direction table"}},
		{"root package", pkgImports{Path: ""}, []string{"package " + module + " is not in the import-direction table"}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			bad := checkImports(append(slices.Clone(good), tc.pkg))
			if len(bad) != 1 {
				t.Fatalf("got %d messages, want 1:\n%s", len(bad), strings.Join(bad, "\n"))
			}
			for _, w := range tc.want {
				if !strings.Contains(bad[0], w) {
					t.Errorf("message %q does not contain %q", bad[0], w)
				}
			}
		})
	}

	// Several bad edges of one package are all reported.
	bad := checkImports([]pkgImports{{Path: "durable", Imports: []string{"node", "raftstore"}}})
	if len(bad) != 2 {
		t.Fatalf("two bad edges gave %d messages: %v", len(bad), bad)
	}
}

func TestRoostOnly(t *testing.T) {
	got := roostOnly(
		[]string{"fmt", module + "/durable", "github.com/roostdb/roostx/y", module + "/node", module},
		[]string{module + "/durable", "net/http"},
	)
	want := []string{"", "durable", "node"}
	if !slices.Equal(got, want) {
		t.Fatalf("roostOnly = %q, want %q", got, want)
	}
}
