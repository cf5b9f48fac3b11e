package main

import "testing"

// A short run on a few groups: every apply is counted, and the rounds that
// synced carried at least one group's work each.
func TestMeasure(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	res, err := measure(config{groups: 6, proposers: 8, applies: 300})
	if err != nil {
		t.Fatal(err)
	}
	if res.applies != 300 || res.elapsed <= 0 || res.syncs == 0 || res.readies < res.syncs {
		t.Fatalf("measured %+v", res)
	}
	t.Log(res)
	if _, err := measure(config{groups: 0, proposers: 1, applies: 1}); err == nil {
		t.Fatal("no groups: no error")
	}
}
