#!/usr/bin/env bash
# bench-compare.sh: roost against etcd, same machine, same load, one run.
#
#   make bench-compare                 # DURATION=10s
#   make bench-compare DURATION=30s
#   make bench-compare ROUNDS=3        # three rounds and the median ratio
#   DURATION=5s scripts/bench-compare.sh   # needs bin/roost (make build)
#
# What it does:
#   1. starts a 3-node roost cluster on 127.0.0.1 (real `bin/roost node`
#      processes, --shards SHARDS (64) --bootstrap-expect 3, temp data dirs, free
#      ports) and waits for GET /readyz = 200 on all three admin listeners;
#   2. starts a 3-member etcd cluster on 127.0.0.1 (Debian's etcd-server,
#      installed with apt-get if `etcd` is missing; temp data dirs, free
#      ports) and waits for GET /health = true on all three;
#   3. runs two workloads against each, one after the other, every run
#      DURATION long after a 1 s warmup:
#        single: one counter (object / key), CLIENTS (64) concurrent clients;
#        spread: SPREAD_KEYS (1000) counters, round-robin, CLIENTS clients;
#      and prints one table: ops/s, p50, p99 and errors of each, and the
#      roost/etcd ratio of each column.
#   4. prints under the table, per run, the CPU time the servers used
#      (/proc/<pid>/stat) and the load generators used (the shell's
#      `times`), in all and per operation, warmup included: on two shared
#      cores the load generators' share bounds the rate too.
#
# The load on each side, every client with one operation in flight over a
# kept-alive HTTP/1.1 connection:
#   roost: three `roost bench -o json` processes, one per node, with the
#          clients split 22/21/21, so the load enters through every node as
#          it does for etcd (a node forwards a request for an object another
#          node leads). One operation is GET /increment?name=... on the
#          counter example: a durable, replicated (Raft, 3 replicas)
#          increment. ops/s, requests and errors are the sums of the three
#          processes. Their latency samples are not merged: p50 and p99 are
#          the largest of the three processes' p50 and p99, which bound the
#          percentiles of the merged samples from above (more than 1% of
#          the merged samples cannot lie above every process's p99), so they
#          can only overstate roost's latency. The per-process values are
#          printed under the table.
#   etcd:  one internal/cmd/etcdload process, clients spread round-robin
#          over the three members. One operation is one successful
#          increment: a linearizable read of the key, then a txn
#          (mod_revision == the one read -> put value+1), re-read and
#          retried until the compare succeeds, through etcd's v3 JSON
#          gateway. Latency runs from the first read to the successful txn;
#          percentiles are exact. Retries are printed under the table.
# Both write durably: roost syncs its Raft log (Pebble, pebble.Sync), etcd
# fsyncs its WAL; both use this machine's temp dir. roost runs first, with
# the etcd cluster up and idle (a few percent of a core); then the roost
# cluster is stopped, because idle it still keeps about a third of a core
# busy (64 Raft groups x 3 replicas, gossip), and etcd runs alone. The load
# generators share the cores with the servers, on both sides alike. The
# header of the table gives the load average before the runs: other work
# on the machine shows in the numbers.
#
# ROUNDS=N (default 1) repeats step 3's runs N times, each round on a fresh
# roost cluster (the etcd cluster stays up), and prints every round's table
# and, per workload, each round's roost/etcd ratio and their median: this
# machine's speed drifts between runs, so a ratio of runs minutes apart
# varies less than either rate, and the median of several less still.
#
# SHARDS=N (default 64, roost's default) sets the roost cluster's --shards.
# Fewer shards put more of the spread load's increments in each shard's
# Raft entries (docs/operations.md, "Choosing --shards").
#
# Settings (environment): DURATION (10s), ROUNDS (1), SHARDS (64), CLIENTS (64), SPREAD_KEYS (1000),
# ROOST_BIN (bin/roost), ETCD_BIN (etcd on PATH), GO (go), READY_TIMEOUT
# (seconds to wait for each cluster, 120). Everything it starts is stopped,
# and its temp dir removed, when it exits, Ctrl-C included.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-1}
SHARDS=${SHARDS:-64}
CLIENTS=${CLIENTS:-64}
SPREAD_KEYS=${SPREAD_KEYS:-1000}
ROOST_BIN=${ROOST_BIN:-bin/roost}
ETCD_BIN=${ETCD_BIN:-}
GO=${GO:-go}
READY_TIMEOUT=${READY_TIMEOUT:-120}

# roost node reads these and lets them override its flags; etcd reads ETCD_*
# and refuses to start when one shadows a flag. The script sets its own.
unset ROOST_ID ROOST_DATA_DIR ROOST_HTTP ROOST_ADMIN ROOST_GRPC ROOST_GOSSIP \
	ROOST_ADVERTISE ROOST_JOIN ROOST_BOOTSTRAP_EXPECT ROOST_SHARDS ROOST_REPLICAS \
	ROOST_IDLE_TIMEOUT
while read -r v; do unset "$v"; done < <(compgen -e | grep '^ETCD_' || true)
# The load generators talk to 127.0.0.1 only; curl must not go through a proxy.
export NO_PROXY='*' no_proxy='*'

log() { printf '==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }

work=""
pids=()          # every process this script started and has not reaped
policy_rc_d=""   # set while our temporary /usr/sbin/policy-rc.d exists
SUDO=""

# stop_procs PID...: SIGTERM, up to 10 s for a graceful stop, then SIGKILL;
# reaps them and drops them from pids.
stop_procs() {
	(($# > 0)) || return 0
	kill -TERM "$@" 2>/dev/null || true
	local i p alive=0
	for ((i = 0; i < 100; i++)); do
		alive=0
		for p in "$@"; do
			kill -0 "$p" 2>/dev/null && alive=1
		done
		((alive)) || break
		sleep 0.1
	done
	if ((alive)); then
		note "some did not stop within 10 s: killing them"
		kill -KILL "$@" 2>/dev/null || true
	fi
	for p in "$@"; do
		wait "$p" 2>/dev/null || true
	done
	local -a left=()
	for p in "${pids[@]}"; do
		[[ " $* " == *" $p "* ]] || left+=("$p")
	done
	pids=("${left[@]}")
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	set +e
	if ((${#pids[@]} > 0)); then
		log "stopping ${#pids[@]} processes (roost nodes, etcd members, load generators)"
		stop_procs "${pids[@]}"
	fi
	if [[ -n $policy_rc_d ]]; then
		$SUDO rm -f "$policy_rc_d"
	fi
	if [[ -n $work && -d $work ]]; then
		rm -rf "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'echo >&2; log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM HUP

# die prints a message and the last lines of the named log files, then exits.
die() {
	local msg=$1
	shift
	printf 'bench-compare: %s\n' "$msg" >&2
	local f
	for f in "$@"; do
		if [[ -s $f ]]; then
			printf -- '--- last lines of %s ---\n' "${f##*/}" >&2
			tail -n 25 "$f" >&2
		fi
	done
	exit 1
}

# ---------------------------------------------------------------- checks

[[ $DURATION =~ ^([0-9]+(\.[0-9]*)?(ns|us|µs|ms|s|m|h))+$ ]] ||
	die "DURATION=$DURATION is not a Go duration such as 10s or 1m30s"
[[ $ROUNDS =~ ^[0-9]+$ ]] && ((ROUNDS >= 1 && ROUNDS <= 20)) || die "ROUNDS=$ROUNDS must be a number from 1 to 20"
[[ $SHARDS =~ ^[0-9]+$ ]] && ((SHARDS >= 1)) || die "SHARDS=$SHARDS must be a positive number"
[[ $CLIENTS =~ ^[0-9]+$ ]] && ((CLIENTS >= 3)) || die "CLIENTS=$CLIENTS must be a number of at least 3"
[[ $SPREAD_KEYS =~ ^[0-9]+$ ]] && ((SPREAD_KEYS >= 1)) || die "SPREAD_KEYS=$SPREAD_KEYS must be a positive number"
[[ -x $ROOST_BIN ]] || die "$ROOST_BIN not found: run 'make build' first (or use 'make bench-compare')"
command -v curl >/dev/null || die "curl is needed to poll the clusters' health endpoints"
command -v "$GO" >/dev/null || die "$GO not found: the Go toolchain builds the etcd load generator"

if [[ -z $ETCD_BIN ]]; then
	if ! command -v etcd >/dev/null; then
		log "etcd not found: installing Debian's etcd-server with apt-get"
		if (($(id -u) != 0)); then
			command -v sudo >/dev/null || die "not root and no sudo: install etcd-server yourself (apt-get install etcd-server)"
			SUDO=sudo
		fi
		# The package's init script would start a default etcd on :2379;
		# a policy-rc.d that says "no" keeps it from starting any service.
		if [[ ! -e /usr/sbin/policy-rc.d ]]; then
			policy_rc_d=/usr/sbin/policy-rc.d
			printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy_rc_d" >/dev/null
			$SUDO chmod 755 "$policy_rc_d"
		fi
		$SUDO apt-get update -qq
		DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
		if [[ -n $policy_rc_d ]]; then
			$SUDO rm -f "$policy_rc_d"
			policy_rc_d=""
		fi
		command -v etcd >/dev/null || die "etcd-server is installed but there is no etcd on PATH"
	fi
	ETCD_BIN=$(command -v etcd)
fi
case $(uname -m) in
aarch64 | arm64) export ETCD_UNSUPPORTED_ARCH=arm64 ;; # etcd 3.4 wants this on arm64
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/roost-bench-compare.XXXXXX")
mkdir -p "$work/logs" "$work/out"
log "working in $work (removed on exit)"

log "building the etcd load generator (internal/cmd/etcdload)"
CGO_ENABLED=0 "$GO" build -o "$work/etcdload" ./internal/cmd/etcdload

# ---------------------------------------------------------------- ports

# free_ports N prints N distinct TCP and UDP ports that no socket on this
# machine uses (per /proc/net), below the ephemeral range so that outgoing
# connections do not take them in the meantime.
free_ports() {
	local n=$1 lo hi f port
	local -A used=()
	read -r lo _ </proc/sys/net/ipv4/ip_local_port_range
	hi=$((lo - 1))
	((hi > 20000)) || hi=65000
	for f in /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6; do
		[[ -r $f ]] || continue
		while read -r _ local _; do
			[[ $local == *:* ]] || continue
			used[$((16#${local##*:}))]=1
		done <"$f"
	done
	port=$((15000 + RANDOM % (hi - 15000 - 2 * n)))
	while ((n > 0)); do
		if [[ -z ${used[$port]:-} ]]; then
			echo "$port"
			n=$((n - 1))
		fi
		port=$((port + 1))
	done
}

mapfile -t ports < <(free_ports 18)
((${#ports[@]} == 18)) || die "could not find 18 free ports"
# roost node i: app, admin, grpc, gossip; etcd member i: client, peer.
r_http=("${ports[@]:0:3}")
r_admin=("${ports[@]:3:3}")
r_grpc=("${ports[@]:6:3}")
r_gossip=("${ports[@]:9:3}")
e_client=("${ports[@]:12:3}")
e_peer=("${ports[@]:15:3}")

# http_code URL prints the status of GET URL, 000 if there was no answer.
http_code() {
	curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null || true
}

# ---------------------------------------------------------------- roost

# start_roost ROUND starts a fresh 3-node cluster (new data dirs; the logs
# of the round before are overwritten) and waits until it is ready.
start_roost() {
	local round=$1 i id
	local -a args
	log "starting roost (round $round): 3 nodes, --shards $SHARDS --bootstrap-expect 3 ($("$ROOST_BIN" version 2>/dev/null | head -n1))"
	roost_pids=()
	for i in 0 1 2; do
		id=n$((i + 1))
		args=(node --config "" --id "$id" --data-dir "$work/roost-$round/$id"
			--http "127.0.0.1:${r_http[i]}" --admin "127.0.0.1:${r_admin[i]}"
			--grpc "127.0.0.1:${r_grpc[i]}" --gossip "127.0.0.1:${r_gossip[i]}"
			--shards "$SHARDS" --bootstrap-expect 3)
		if ((i > 0)); then
			args+=(--join "127.0.0.1:${r_gossip[0]}")
		fi
		"$ROOST_BIN" "${args[@]}" >"$work/logs/roost-$id.log" 2>&1 &
		pids+=($!)
		roost_pids+=($!)
		note "$id: app 127.0.0.1:${r_http[i]}  admin 127.0.0.1:${r_admin[i]}  grpc ${r_grpc[i]}  gossip ${r_gossip[i]}  (pid $!)"
	done
	wait_ready "roost" roost_ready "http://127.0.0.1:%s/readyz" \
		"${r_admin[@]}" "${roost_pids[@]}" "$work"/logs/roost-n{1,2,3}.log
}

# wait_ready WHAT CHECK URL-FORMAT PORT*3 PID*3 LOG*3: polls until CHECK
# succeeds on the URL of every member (URL-FORMAT with its port), failing
# if a member exits or READY_TIMEOUT passes.
roost_ready() { [[ $(http_code "$1") == 200 ]]; }
etcd_ready() { curl -s --max-time 2 "$1" 2>/dev/null | grep -q '"health": *"true"'; }
wait_ready() {
	local what=$1 check=$2 url_fmt=$3
	shift 3
	local -a mports=() mpids=() mlogs=()
	local i
	for ((i = 0; i < 3; i++)); do mports+=("$1") && shift; done
	for ((i = 0; i < 3; i++)); do mpids+=("$1") && shift; done
	for ((i = 0; i < 3; i++)); do mlogs+=("$1") && shift; done
	local start=$SECONDS ready=(0 0 0) n=0
	while ((n < 3)); do
		for i in 0 1 2; do
			((ready[i])) && continue
			kill -0 "${mpids[i]}" 2>/dev/null || die "$what member $((i + 1)) exited before it was ready" "${mlogs[i]}"
			# shellcheck disable=SC2059
			if "$check" "$(printf "$url_fmt" "${mports[i]}")"; then
				ready[i]=1
				n=$((n + 1))
			fi
		done
		((n == 3)) && break
		((SECONDS - start < READY_TIMEOUT)) || die "$what not ready after ${READY_TIMEOUT}s" "${mlogs[@]}"
		sleep 0.2
	done
	note "$what ready in $((SECONDS - start))s"
}

start_roost 1

# ---------------------------------------------------------------- etcd

etcd_version=$("$ETCD_BIN" --version 2>/dev/null | sed -n 's/^etcd Version: *//p' | head -n1)
log "starting etcd: 3 members ($ETCD_BIN ${etcd_version:-version unknown})"
cluster=""
for i in 0 1 2; do
	cluster+="${cluster:+,}e$((i + 1))=http://127.0.0.1:${e_peer[i]}"
done
etcd_pids=()
for i in 0 1 2; do
	name=e$((i + 1))
	"$ETCD_BIN" --name "$name" --data-dir "$work/etcd/$name" \
		--listen-client-urls "http://127.0.0.1:${e_client[i]}" \
		--advertise-client-urls "http://127.0.0.1:${e_client[i]}" \
		--listen-peer-urls "http://127.0.0.1:${e_peer[i]}" \
		--initial-advertise-peer-urls "http://127.0.0.1:${e_peer[i]}" \
		--initial-cluster "$cluster" --initial-cluster-state new \
		--initial-cluster-token "roost-bench-compare-$$" \
		--logger zap --log-outputs stderr \
		>"$work/logs/etcd-$name.log" 2>&1 &
	pids+=($!)
	etcd_pids+=($!)
	note "$name: client 127.0.0.1:${e_client[i]}  peer ${e_peer[i]}  (pid $!)"
done
wait_ready "etcd" etcd_ready "http://127.0.0.1:%s/health" \
	"${e_client[@]}" "${etcd_pids[@]}" "$work"/logs/etcd-e{1,2,3}.log

# ---------------------------------------------------------------- load

# jnum FILE KEY prints the number after "KEY": in an indented JSON document
# (one field per line, as roost bench and etcdload write it).
jnum() {
	local v
	v=$(sed -n "s/^ *\"$2\": *\([-+0-9.eE]*\),\{0,1\}\$/\1/p" "$1" | head -n1)
	[[ -n $v ]] || die "no \"$2\" in ${1##*/}" "$1"
	echo "$v"
}

# wait_all PID...: waits for each, without letting a non-zero status (a
# load generator exits 1 when any request failed) end the script.
wait_all() {
	local p
	for p in "$@"; do
		wait "$p" || true
	done
	local -a left=()
	for p in "${pids[@]}"; do
		[[ " $* " == *" $p "* ]] || left+=("$p")
	done
	pids=("${left[@]}")
}

# jstr FILE KEY prints the string value of "KEY": in FILE, "" if absent.
jstr() {
	sed -n "s/^ *\"$2\": *\"\(.*\)\",\{0,1\}\$/\1/p" "$1" | head -n1 | sed 's/\\"/"/g'
}

# proc_ticks PID... prints the CPU clock ticks (user + system) the running
# processes have used so far.
proc_ticks() {
	local p sum=0
	local -a f
	for p in "$@"; do
		read -r -a f <"/proc/$p/stat" 2>/dev/null || continue
		sum=$((sum + f[13] + f[14]))
	done
	echo "$sum"
}

# child_seconds sets CHILD_SECONDS to the CPU seconds (user + system) of
# this shell's children that have exited and been waited for: the load
# generators. It must run in this shell, not in a $(...) subshell, whose
# children are others.
child_seconds() {
	times >"$work/times"
	CHILD_SECONDS=$(awk 'NR == 2 {
		s = 0
		for (i = 1; i <= 2; i++) { split($i, t, /m|s/); s += t[1] * 60 + t[2] }
		printf "%.2f\n", s
	}' "$work/times")
}

# cpu_note WORKLOAD SYSTEM SERVER_TICKS LOAD_SECONDS REQUESTS adds where
# the run's CPU went to the details: what the servers and the load
# generators used, in all and per operation. The two share the cores, so a
# load generator that costs as much as a server per operation bounds the
# rate as surely as the server does.
cpu_note() {
	local tck
	tck=$(getconf CLK_TCK)
	details+=("$(awk -v wl="$1" -v sys="$2" -v t="$3" -v tck="$tck" -v l="$4" -v n="$5" 'BEGIN {
		s = t / tck
		printf "%-7s %-6s CPU: servers %.1f s, load generators %.1f s; per operation %.0f us + %.0f us", wl, sys, s, l, (n > 0 ? s / n * 1e6 : 0), (n > 0 ? l / n * 1e6 : 0)
	}')")
}

split=()
for i in 0 1 2; do
	split+=($((CLIENTS / 3 + (i < CLIENTS % 3 ? 1 : 0))))
done

results=() # lines: round workload system keys ops p50 p99 errors requests
details=()

# run_roost WORKLOAD KEYS: three roost bench processes, one per node.
run_roost() {
	local wl=$1 keys=$2 i t0 c0
	local -a bp=()
	t0=$(proc_ticks "${roost_pids[@]}")
	child_seconds
	c0=$CHILD_SECONDS
	for i in 0 1 2; do
		"$ROOST_BIN" bench --url "http://127.0.0.1:${r_http[i]}" -c "${split[i]}" \
			--names "$keys" --name-prefix "$wl-" -d "$DURATION" -o json \
			>"$work/out/roost-$wl-$i.json" 2>"$work/logs/roost-bench-$wl-$i.log" &
		pids+=($!)
		bp+=($!)
	done
	wait_all "${bp[@]}"
	local ticks lsec
	ticks=$(($(proc_ticks "${roost_pids[@]}") - t0))
	child_seconds
	lsec=$(awk -v a="$CHILD_SECONDS" -v b="$c0" 'BEGIN { printf "%.2f", a - b }')
	local ops=0 p50=0 p99=0 errs=0 reqs=0 all=0 f o a b e r
	for i in 0 1 2; do
		f=$work/out/roost-$wl-$i.json
		[[ -s $f ]] || die "roost bench against n$((i + 1)) wrote no result" "$work/logs/roost-bench-$wl-$i.log"
		o=$(jnum "$f" ops_per_sec)
		a=$(jnum "$f" p50)
		b=$(jnum "$f" p99)
		e=$(jnum "$f" errors)
		r=$(jnum "$f" requests)
		all=$((all + r + $(jnum "$f" warmup_requests)))
		read -r ops p50 p99 errs reqs < <(awk -v ops="$ops" -v p50="$p50" -v p99="$p99" -v errs="$errs" -v reqs="$reqs" \
			-v o="$o" -v a="$a" -v b="$b" -v e="$e" -v r="$r" \
			'BEGIN { printf "%.3f %.3f %.3f %d %d\n", ops + o, (a > p50 ? a : p50), (b > p99 ? b : p99), errs + e, reqs + r }')
		details+=("$(printf '%-7s roost  via n%d  c=%-3s %10.1f ops/s  p50 %8.2f ms  p99 %8.2f ms  %d errors' "$wl" $((i + 1)) "${split[i]}" "$o" "$a" "$b" "$e")")
		if ((e > 0)); then
			details+=("        first error: $(jstr "$f" first_error)")
		fi
	done
	results+=("$round $wl roost $keys $ops $p50 $p99 $errs $reqs")
	cpu_note "$wl" roost "$ticks" "$lsec" "$all"
	note "roost $wl: $(printf '%.1f' "$ops") ops/s, $errs errors"
}

# run_etcd WORKLOAD KEYS: one etcdload over the three members.
run_etcd() {
	local wl=$1 keys=$2 f
	local eps=""
	for i in 0 1 2; do
		eps+="${eps:+,}http://127.0.0.1:${e_client[i]}"
	done
	f=$work/out/etcd-$wl.json
	local t0 c0
	t0=$(proc_ticks "${etcd_pids[@]}")
	child_seconds
	c0=$CHILD_SECONDS
	"$work/etcdload" -endpoints "$eps" -c "$CLIENTS" -keys "$keys" -key-prefix "$wl-" \
		-d "$DURATION" -o json >"$f" 2>"$work/logs/etcdload-$wl.log" &
	pids+=($!)
	wait_all $!
	local ticks lsec
	ticks=$(($(proc_ticks "${etcd_pids[@]}") - t0))
	child_seconds
	lsec=$(awk -v a="$CHILD_SECONDS" -v b="$c0" 'BEGIN { printf "%.2f", a - b }')
	[[ -s $f ]] || die "etcdload wrote no result" "$work/logs/etcdload-$wl.log"
	local ops p50 p99 errs reqs retries
	ops=$(jnum "$f" ops_per_sec)
	p50=$(jnum "$f" p50)
	p99=$(jnum "$f" p99)
	errs=$(jnum "$f" errors)
	reqs=$(jnum "$f" requests)
	local all=$((reqs + $(jnum "$f" warmup_requests)))
	retries=$(jnum "$f" retries)
	results+=("$round $wl etcd $keys $ops $p50 $p99 $errs $reqs")
	cpu_note "$wl" etcd "$ticks" "$lsec" "$all"
	details+=("$(printf '%-7s etcd   %d increments, %d compare-and-swap retries (%.2f per increment)' "$wl" "$reqs" "$retries" "$(awk -v r="$retries" -v n="$reqs" 'BEGIN { print (n > 0 ? r / n : 0) }')")")
	if ((errs > 0)); then
		details+=("        first error: $(jstr "$f" first_error)")
	fi
	note "etcd $wl: $(printf '%.1f' "$ops") ops/s, $errs errors, $retries compare-and-swap retries"
}

# check_alive SYSTEM WHEN: fails, with the logs, if one of SYSTEM's
# servers has exited.
check_alive() {
	local i
	for i in 0 1 2; do
		if [[ $1 == roost ]]; then
			kill -0 "${roost_pids[i]}" 2>/dev/null ||
				die "roost node n$((i + 1)) exited $2" "$work/logs/roost-n$((i + 1)).log"
		else
			kill -0 "${etcd_pids[i]}" 2>/dev/null ||
				die "etcd member e$((i + 1)) exited $2" "$work/logs/etcd-e$((i + 1)).log"
		fi
	done
}

keys_of() { if [[ $1 == spread ]]; then echo "$SPREAD_KEYS"; else echo 1; fi; }

# measure SYSTEM CLIENTS-TEXT KEYS-TEXT: both workloads on SYSTEM (roost or
# etcd) with run_SYSTEM, checking that its servers stay up (and, while
# roost is measured, that the idle etcd cluster does too).
measure() {
	local sys=$1 wl keys
	for wl in single spread; do
		keys=$(keys_of "$wl")
		step=$((step + 1))
		log "[$step/$steps] $wl on $sys: $CLIENTS $2, $keys $3, $DURATION after 1s warmup"
		check_alive "$sys" "before the $wl run"
		if [[ $sys == roost ]]; then
			check_alive etcd "while roost was measured"
		fi
		"run_$sys" "$wl" "$keys"
		check_alive "$sys" "during the $wl run"
	done
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
steps=$((4 * ROUNDS))
step=0
for ((round = 1; round <= ROUNDS; round++)); do
	((ROUNDS > 1)) && details+=("round $round:")
	if ((round > 1)); then
		start_roost "$round"
	fi
	measure roost "clients (${split[0]}+${split[1]}+${split[2]} over n1..n3)" "object(s)"

	# An idle roost cluster is not free: its 64 shards' Raft groups (3
	# replicas each) and gossip keep a share of a core busy, where an idle
	# etcd takes a few percent. So roost is stopped before etcd is measured.
	log "stopping the roost cluster so that it takes no CPU from etcd's runs"
	stop_procs "${roost_pids[@]}"

	measure etcd "clients over e1..e3" "key(s)"
done

# ---------------------------------------------------------------- table

echo
echo "roost vs etcd: 3 nodes each on 127.0.0.1, $(nproc) cores, $CLIENTS clients, $DURATION per run, $ROUNDS round(s), roost --shards $SHARDS"
echo "roost $("$ROOST_BIN" version 2>/dev/null | head -n1 | sed 's/^roost //'); etcd ${etcd_version:-?}; load average before the runs: $load_before"
for ((round = 1; round <= ROUNDS; round++)); do
	echo
	((ROUNDS > 1)) && echo "round $round"
	for wl in single spread; do
		printf '%s\n' "${results[@]}" | grep "^$round $wl roost "
		printf '%s\n' "${results[@]}" | grep "^$round $wl etcd "
	done | awk '
		function ratio(a, b) { return b > 0 ? sprintf("%.2fx", a / b) : "n/a" }
		{ wl[NR] = $2; sys[NR] = $3; keys[NR] = $4; ops[NR] = $5; p50[NR] = $6; p99[NR] = $7; errs[NR] = $8 }
		END {
			printf "%-8s %-12s %6s %12s %11s %11s %8s\n", "workload", "system", "keys", "ops/s", "p50 ms", "p99 ms", "errors"
			for (i = 1; i <= NR; i += 2) {
				for (j = i; j <= i + 1; j++)
					printf "%-8s %-12s %6d %12.1f %11.2f %11.2f %8d\n", wl[j], sys[j], keys[j], ops[j], p50[j], p99[j], errs[j]
				printf "%-8s %-12s %6s %12s %11s %11s %8s\n", wl[i], "roost/etcd", "", ratio(ops[i], ops[i+1]), ratio(p50[i], p50[i+1]), ratio(p99[i], p99[i+1]), ""
			}
		}'
done
if ((ROUNDS > 1)); then
	# The ratio of each round (roost and etcd measured minutes apart) and
	# their median: this machine's speed drifts between runs, and a ratio
	# of runs close in time drifts less than either rate.
	echo
	for wl in single spread; do
		printf '%s\n' "${results[@]}" | awk -v wl="$wl" -v rounds="$ROUNDS" '
			$2 == wl && $3 == "roost" { r[$1] = $5 }
			$2 == wl && $3 == "etcd" { e[$1] = $5 }
			END {
				n = 0
				for (k = 1; k <= rounds; k++) if (e[k] > 0) { v[++n] = r[k] / e[k]; line = line sprintf(" %.2fx", r[k] / e[k]) }
				for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
				med = (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2)
				printf "%-8s roost/etcd ops/s by round:%s; median %.2fx\n", wl, line, med
			}'
	done
fi
echo
echo "roost ops/s and errors are the sums of three bench processes (one per node); its p50/p99"
echo "are the largest of the three processes' values, an upper bound on the merged percentiles."
echo "etcd: one op = one successful read + compare-and-swap increment (retried on conflict);"
echo "the roost cluster was stopped before etcd's runs (idle, it still uses CPU)."
echo
printf '%s\n' "${details[@]}"
