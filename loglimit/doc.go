// Package loglimit keeps a log readable when the same trouble repeats
// thousands of times a second (garbage on a port, a full disk, no file
// descriptors left): it lets one line per key through per interval and
// counts the ones it held back, for the next line to report.
//
// It is a leaf package so that both the storage layer (Pebble's background
// errors) and the node (refused connections) can use it.
package loglimit
