// Package node runs one roost node: the app listener that runs the Worker,
// the admin listener, the instance manager that keeps one live instance per
// object and runs its requests through Durable Objects' gates, and the
// shards whose Raft groups make each turn's writes durable.
//
// # Request path
//
// The Worker calls Stub.Fetch; the manager finds (or activates) the
// object's instance and runs the request as a turn:
//
//   - input gate: one turn at a time per object (instance.gate); the gate is
//     opened while the object awaits an outgoing Stub.Fetch, so A→B→A works;
//   - write coalescing: a turn's writes collect in objectStorage.pending and
//     become one versioned ObjectBatch when the turn ends;
//   - output gate: the turn's response is buffered until the object's latest
//     commit is done; the next turn runs meanwhile and sees the uncommitted
//     writes (pipelining);
//   - shard group commit: a shard's proposer puts every batch that is ready
//     into one Raft entry, with a bounded number of entries in flight;
//   - a failed commit resets the instance and fails every held response; the
//     FSM's version fence rejects later batches built on the failed one.
//
// # Alarms
//
// Each shard has an alarm scheduler (alarms.go) that acts while this node
// serves the shard. It reads the shard's due alarms and then sleeps until
// its next alarm or retry, or until the shard wakes it: when a committed
// entry set an alarm (shard.collect), when this node became ready to serve
// the shard, and when a delivery ends. An idle shard is scanned only as a
// safety net, every alarmSettings.maxSleep.
//
// # Lock order
//
// manager.mu → instance.mu → objectStorage.mu. The gate is not a mutex in
// this order: it is held across a whole turn, and no code takes the gate
// while holding any of the mutexes.
package node
