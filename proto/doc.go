// Package proto is the generated Go code of roost's node-to-node gRPC
// services, all served on a node's gRPC listener:
//
//   - RaftTransport (raft.proto): the Raft RPCs of every group of a node
//     on one service, each request naming its group (package raftstore).
//   - Forward (forward.proto): requests forwarded to the node that leads an
//     object's shard, with streamed bodies, and the small node-to-node
//     calls of cluster formation and administration (package node).
//   - MultiRaft (multiraft.proto): the transport of package multiraft.
//
// Only doc.go is written by hand. The .pb.go files are committed and
// regenerated from the .proto files with `make proto` (protoc with
// protoc-gen-go and protoc-gen-go-grpc); edit the .proto files, never the
// generated code.
package proto
