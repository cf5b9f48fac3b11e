// Package linearize records the client-side history of operations on the
// seed "counter" Durable Object and checks that history for
// linearizability with github.com/anishathalye/porcupine.
//
// Why: the fault tests drive counters through partitions and kills. Checking
// only "the final count is not below the highest acknowledged count" misses
// stale reads, duplicated increments and writes that appear and then vanish
// mid-run. Checking the whole history against a sequential counter catches
// all of these, as long as calls whose outcome the client cannot know are
// modelled honestly.
//
// Use: a test makes one [Recorder], and every client brackets each HTTP
// request with [Recorder.Begin] and exactly one of [Call.Ok] (the response
// carried the count), [Call.Failed] (the request definitely did not run the
// object, e.g. a routing error or a 503 sent before dispatch) or
// [Call.Unknown] (timeout, connection reset, 500 "commit outcome unknown":
// it may or may not have taken effect). Only the first of these counts, so
//
//	c := rec.Begin(client, name, linearize.Op{Kind: linearize.Increment})
//	defer c.Unknown()
//	... on success: c.Ok(count)
//
// is safe. After the run, [Check] verifies linearizability per key and
// [LostWrites] compares acknowledged counts with final counts read back.
//
// [HTTPCounter] does this bracketing for requests to nodes' app listeners,
// drawing the outcome from the answer as the node's contract allows.
//
// The model, per key: state is an int starting at 0; an Increment returns
// state+1 and moves the state there; a Read returns state. Failed calls are
// dropped, as are Reads whose outcome is unknown (they change nothing).
//
// Unknown outcomes. The textbook treatment of an Increment with unknown
// outcome gives it a return time after every other operation and accepts
// any output: if it took effect it linearizes where it did, and if not it
// linearizes after everything, where nothing observes it. Fed to porcupine
// as is, that search is exponential in the number of unknown increments
// still pending (every subset of them is tried at every step), which a
// partition test produces by the dozen. The model here is equivalent but
// cheap, relying on three facts about a counter:
//
//   - Unknown increments of a key are interchangeable, so any linearization
//     can be rearranged to apply them in call order. Each carries its index
//     in call order and the model takes them only in that order.
//   - Applying one later never hurts as long as nothing observed the count
//     in between, so each is applied lazily: linearizing it only adds a
//     "spare" increment to the state, and a Read or acknowledged Increment
//     that returns more than the count requires uses up that many spares,
//     which is the same as their having taken effect just before it.
//   - Having a spare available sooner never hurts either, so an unknown
//     increment is given the zero-width interval [call, call]: it becomes
//     spare as soon as it was sent. Spares never used are increments that
//     did not happen (or happened after the last observation).
//
// TestModelMatchesNaive checks this model against the textbook one on many
// random small histories.
//
// Timestamps come from the monotonic clock (time.Since a base taken by
// NewRecorder, or at first use of a zero Recorder). Begin stamps the call before the request is sent
// and Ok/Unknown stamp the return after the response is seen, so recorded
// intervals contain the real ones, which keeps the check sound.
package linearize
