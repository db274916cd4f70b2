#!/usr/bin/env bash
# Load benchmark: OmniRelay, HAProxy, nginx and httputil.ReverseProxy measured
# side by side in one run on this machine, plus the backend alone ("direct").
# docs/benchmarks.md says what each number means and how to read it.
#
#   bench/run.sh                      full run (about 40 s per peer)
#   QUICK=1 bench/run.sh              smoke run (3 s phases)
#   PEERS="haproxy revproxy" bench/run.sh
#   MTLS=only ROUNDS=3 bench/run.sh   only the mTLS rows (bench/mtls.sh)
#
# Settings (environment):
#   DURATION=10      seconds of each measured phase (QUICK=1: 3)
#   WARMUP=2         seconds of warm-up before each throughput phase (QUICK=1: 1)
#   CONNS=64         wrk connections for HTTP/1.1 throughput
#   RATE=1000        requests/s of the fixed-rate latency phase
#   H2_CLIENTS=16 H2_STREAMS=32   h2load connections and streams per connection
#   PEERS="omnirelay haproxy nginx revproxy"   (direct is always measured)
#   ROUNDS=1         run every peer this many times, interleaved, and report
#                    the median of each number (3 for numbers you publish)
#   PROXY_CPU=0 LOAD_CPU=1   the proxy's core; the backend and load generators' core
#   NICE=-10         niceness of everything the run starts (root only; 0 when not
#                    root): shields the measurement from other work on the box
#   LATENCY_RT=1     run the fixed-rate latency phase (proxy, backend, rateload)
#                    under SCHED_FIFO (root only; 0 when not root). All three
#                    use a few % of a core then, so other work barely notices,
#                    and the percentiles stop measuring other work's slices
#   OMNIRELAY_BIN=path   use this binary instead of building ./cmd/omnirelay
#   OMNIRELAY_TAGS=tags  build tags for ./cmd/omnirelay (default grpcnotrace;
#                    empty: the untagged build)
#   RESULTS=file     also write the Markdown report there
#   INSTALL=0        do not apt-get missing tools; KEEP=1 keep the temp dir and logs
#   MTLS=1           also measure the mTLS rows (bench/mtls.sh; about 50 s per
#                    peer and round); 0: skip them; only: nothing else
#   MTLS_PEERS="omnirelay haproxy nginx" (default: those of PEERS)
#   MTLS_CONNS=64 MTLS_NEW_CONNS=16   mtlsload keep-alive connections; workers
#                    opening a new connection per request
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO CONF_DIR=$REPO/bench/configs

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
	DURATION=${DURATION:-3} WARMUP=${WARMUP:-1}
else
	DURATION=${DURATION:-10} WARMUP=${WARMUP:-2}
fi
CONNS=${CONNS:-64}
RATE=${RATE:-1000}
H2_CLIENTS=${H2_CLIENTS:-16}
H2_STREAMS=${H2_STREAMS:-32}
PEERS=${PEERS:-"omnirelay haproxy nginx revproxy"}
ROUNDS=${ROUNDS:-1}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
if [[ $(id -u) == 0 ]]; then
	NICE=${NICE:--10} LATENCY_RT=${LATENCY_RT:-1}
else
	NICE=${NICE:-0} LATENCY_RT=${LATENCY_RT:-0}
fi
OMNIRELAY_BIN=${OMNIRELAY_BIN:-}
RESULTS=${RESULTS:-}
INSTALL=${INSTALL:-1}
KEEP=${KEEP:-0}

# Fixed loopback ports; the OmniRelay config in the team's docs uses these.
readonly BACKEND_ADDR=127.0.0.1:18000 PROXY_ADDR=127.0.0.1:18080
readonly PROXY_H2_ADDR=127.0.0.1:18081 ADMIN_ADDR=127.0.0.1:19901
CLK_TCK=$(getconf CLK_TCK)
readonly CLK_TCK

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# ---------------------------------------------------------------- processes
# Every long-running process is started in its own session (setsid), so its
# pid is also its process group id and stopping the group also stops children
# such as nginx's worker. ALIVE holds the groups not yet stopped.
declare -A ALIVE=()
WORK=""

cleanup() {
	local rc=$? pg
	trap - EXIT INT TERM ERR
	for pg in "${!ALIVE[@]}"; do stop_group "$pg"; done
	if [[ -n $WORK && -d $WORK ]]; then
		if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'log "failed (status $?) at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# start_group LOG CMD... : starts CMD in a new session; sets STARTED_PG.
start_group() {
	local logf=$1 i
	shift
	setsid "$@" >"$logf" 2>&1 </dev/null &
	STARTED_PG=$!
	ALIVE[$STARTED_PG]=1
	# Until the child has called setsid() it is still in our process group:
	# group operations on STARTED_PG would find nothing.
	for ((i = 0; i < 200; i++)); do
		[[ $(stat_field "$STARTED_PG" 2) == "$STARTED_PG" ]] && return 0
		proc_alive "$STARTED_PG" || return 0 # exited: wait_ready reports it
		sleep 0.01
	done
	die "$1 (pid $STARTED_PG) did not become a session leader"
}

# stat_field PID N : field N (0 = state) after the command name in /proc/PID/stat.
stat_field() {
	local s a
	{ s=$(<"/proc/$1/stat"); } 2>/dev/null || return 1
	s=${s##*) }
	read -ra a <<<"$s"
	echo "${a[$2]}"
}

proc_alive() {
	local st
	st=$(stat_field "$1" 0) || return 1
	[[ $st != Z ]]
}

# group_members PGID : pids of the group's live (non-zombie) processes.
group_members() {
	local pg=$1 f s a
	for f in /proc/[0-9]*/stat; do
		{ s=$(<"$f"); } 2>/dev/null || continue
		s=${s##*) }
		read -ra a <<<"$s"
		[[ ${a[2]} == "$pg" && ${a[0]} != Z ]] || continue
		f=${f#/proc/}
		echo "${f%/stat}"
	done
}

group_gone() { [[ -z $(group_members "$1") ]] && ! proc_alive "$1"; }

stop_group() {
	local pg=$1 i
	unset "ALIVE[$pg]"
	kill -TERM -- "-$pg" 2>/dev/null || kill -TERM "$pg" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		group_gone "$pg" && break
		sleep 0.1
	done
	if ! group_gone "$pg"; then
		log "process group $pg ignored SIGTERM for 5s: SIGKILL"
		kill -KILL -- "-$pg" 2>/dev/null || kill -KILL "$pg" 2>/dev/null || true
	fi
	# Reap it; it is gone (or a zombie), so this does not block.
	wait "$pg" 2>/dev/null || true
}

# group_usage PGID : "cpu_ticks rss_kb" summed over the group's processes
# (utime+stime cover all threads of a process).
group_usage() {
	local pg=$1 pid s a k v rest ticks=0 rss=0
	for pid in $(group_members "$pg"); do
		{ s=$(<"/proc/$pid/stat"); } 2>/dev/null || continue
		s=${s##*) }
		read -ra a <<<"$s"
		ticks=$((ticks + a[11] + a[12]))
		while read -r k v rest; do
			[[ $k == VmRSS: ]] && rss=$((rss + v)) && break
		done <"/proc/$pid/status" 2>/dev/null || true
	done
	echo "$ticks $rss"
}

now() { date +%s.%N; }

port_busy() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

# wait_ready PGID URL : polls URL until it answers 200, for at most 15s.
wait_ready() {
	local pg=$1 url=$2 i code
	for ((i = 0; i < 150; i++)); do
		[[ -n $(group_members "$pg") ]] || return 1
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null) || true
		[[ $code == 200 ]] && return 0
		sleep 0.1
	done
	return 1
}

wait_ports_free() {
	local addr i
	for addr in "$@"; do
		for ((i = 0; i < 100; i++)); do
			port_busy "$addr" || break
			sleep 0.1
		done
		port_busy "$addr" && die "$addr is still in use"
	done
	return 0
}

# ---------------------------------------------------------------- setup
install_tools() {
	local -a pkgs=() installed_svcs=()
	command -v wrk >/dev/null || pkgs+=(wrk)
	command -v h2load >/dev/null || pkgs+=(nghttp2-client)
	command -v curl >/dev/null || pkgs+=(curl)
	if [[ " $PEERS $MTLS_PEERS " == *" nginx "* ]] && ! nginx_bin >/dev/null; then pkgs+=(nginx) installed_svcs+=(nginx); fi
	if [[ " $PEERS $MTLS_PEERS " == *" haproxy "* ]] && ! command -v haproxy >/dev/null; then pkgs+=(haproxy) installed_svcs+=(haproxy); fi
	((${#pkgs[@]})) || return 0
	[[ $INSTALL == 1 ]] || die "missing ${pkgs[*]} and INSTALL=0"
	command -v apt-get >/dev/null || die "missing ${pkgs[*]}: install them (Debian package names)"
	local sudo=()
	[[ $(id -u) == 0 ]] || sudo=(sudo)
	log "installing ${pkgs[*]}"
	if ! "${sudo[@]}" apt-get install -y "${pkgs[@]}" >"$WORK/apt.log" 2>&1; then
		"${sudo[@]}" apt-get update >>"$WORK/apt.log" 2>&1
		"${sudo[@]}" apt-get install -y "${pkgs[@]}" >>"$WORK/apt.log" 2>&1 || die "apt-get install failed: see $WORK/apt.log"
	fi
	# Debian starts freshly installed services where it can; they would take
	# port 80 and CPU from the run.
	local svc
	for svc in "${installed_svcs[@]}"; do
		"${sudo[@]}" service "$svc" stop >/dev/null 2>&1 || true
	done
}

nginx_bin() { command -v nginx || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; }; }

build_go() {
	log "building backend, revproxy, rateload, mtlsload, mtlsconf"
	(cd "$REPO" && CGO_ENABLED=0 go build -trimpath -o "$BIN/" ./bench/cmd/backend ./bench/cmd/revproxy ./bench/cmd/rateload \
		./bench/cmd/mtlsload ./bench/cmd/mtlsconf) ||
		die "go build of bench/cmd failed"
}

# build_omnirelay : sets SKIP[omnirelay] when there is no binary to run.
build_omnirelay() {
	if [[ -n $OMNIRELAY_BIN ]]; then
		[[ -x $OMNIRELAY_BIN ]] && { OMNIRELAY=$OMNIRELAY_BIN; return; }
		SKIP[omnirelay]="skipped: OMNIRELAY_BIN=$OMNIRELAY_BIN is not an executable"
		return
	fi
	if [[ ! -d $REPO/cmd/omnirelay ]]; then
		SKIP[omnirelay]="pending: ./cmd/omnirelay does not exist yet"
		return
	fi
	# grpcnotrace (grpc-go's own build tag) leaves out golang.org/x/net/trace,
	# whose html/template use turns off the linker's dead-method elimination:
	# 11 MB of binary and about 3 MiB of idle RSS (docs/benchmarks.md, "Idle
	# RSS"). OMNIRELAY_TAGS= measures the untagged build.
	log "building omnirelay (tags: ${OMNIRELAY_TAGS-grpcnotrace})"
	if (cd "$REPO" && CGO_ENABLED=0 go build -trimpath -tags "${OMNIRELAY_TAGS-grpcnotrace}" -o "$BIN/omnirelay" ./cmd/omnirelay) >"$WORK/omnirelay-build.log" 2>&1; then
		OMNIRELAY=$BIN/omnirelay
	else
		SKIP[omnirelay]="pending: go build ./cmd/omnirelay failed: $(head -c 300 "$WORK/omnirelay-build.log" | tr '\n' ' ')"
	fi
}

# render TEMPLATE OUT DIR : fills the @...@ placeholders of a config template.
render() {
	sed -e "s|@DIR@|$3|g" -e "s|@BACKEND@|$BACKEND_ADDR|g" -e "s|@H1_ADDR@|$PROXY_ADDR|g" \
		-e "s|@H2_ADDR@|$PROXY_H2_ADDR|g" -e "s|@ADMIN_ADDR@|$ADMIN_ADDR|g" \
		-e "s|@MTLS_ADDR@|$MTLS_ADDR|g" -e "s|@CERTS@|${MTLS_CERTS:-}|g" "$CONF_DIR/$1" >"$2"
}

# ---------------------------------------------------------------- peers
# peer_log PEER : where this round's stdout/stderr of PEER goes.
peer_log() { echo "$WORK/$1.r$ROUND.log"; }

# start_PEER sets PEER_PG (process group), PEER_H1 and PEER_H2 (URLs; an
# empty PEER_H2 means the peer cannot proxy h2c to an h2c upstream, with the
# reason in PEER_H2_NA).
PIN_PROXY=(nice -n "$NICE" taskset -c "$PROXY_CPU")
PIN_LOAD=(nice -n "$NICE" taskset -c "$LOAD_CPU")

start_haproxy() {
	local dir=$WORK/haproxy
	mkdir -p "$dir"
	render haproxy.cfg.tmpl "$dir/haproxy.cfg" "$dir"
	haproxy -c -q -f "$dir/haproxy.cfg" || die "haproxy rejected $dir/haproxy.cfg"
	start_group "$(peer_log haproxy)" "${PIN_PROXY[@]}" haproxy -db -f "$dir/haproxy.cfg"
	PEER_PG=$STARTED_PG PEER_H1=http://$PROXY_ADDR/ PEER_H2=http://$PROXY_H2_ADDR/
}

start_nginx() {
	local dir=$WORK/nginx bin
	bin=$(nginx_bin) || die "nginx not found"
	mkdir -p "$dir/tmp"
	render nginx.conf.tmpl "$dir/nginx.conf" "$dir"
	"$bin" -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" || die "nginx rejected $dir/nginx.conf"
	start_group "$(peer_log nginx)" "${PIN_PROXY[@]}" "$bin" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
	PEER_PG=$STARTED_PG PEER_H1=http://$PROXY_ADDR/ PEER_H2=""
	PEER_H2_NA="nginx proxies to upstreams over HTTP/1.x only (h2 upstream exists only for grpc_pass)"
}

start_revproxy() {
	start_group "$(peer_log revproxy)" env GOMAXPROCS=1 "${PIN_PROXY[@]}" "$BIN/revproxy" \
		-addr "$PROXY_ADDR" -upstream "$BACKEND_ADDR"
	PEER_PG=$STARTED_PG PEER_H1=http://$PROXY_ADDR/ PEER_H2=http://$PROXY_ADDR/
}

start_omnirelay() {
	local dir=$WORK/omnirelay
	mkdir -p "$dir"
	render omnirelay.yaml.tmpl "$dir/omnirelay.yaml" "$dir"
	start_group "$(peer_log omnirelay)" env GOMAXPROCS=1 "${PIN_PROXY[@]}" "$OMNIRELAY" run --config "$dir/omnirelay.yaml"
	PEER_PG=$STARTED_PG PEER_H1=http://$PROXY_ADDR/ PEER_H2=http://$PROXY_ADDR/
}

# ---------------------------------------------------------------- measuring
# R[peer.metric] holds results; SKIP[peer] is "label: reason" for a peer that
# was not measured; NOTE[peer] collects warnings for the diagnostics table.
declare -A R=() SKIP=() NOTE=() ROUND_VALUES=()
# shellcheck source-path=SCRIPTDIR source=mtls.sh
source "$REPO/bench/mtls.sh"
ROUND=1
note() {
	local prefix=""
	((ROUNDS == 1)) || prefix="round $ROUND: "
	NOTE[$1]+="${NOTE[$1]:+; }$prefix$2"
}

# end_round PEER : moves PEER's results of this round into ROUND_VALUES.
end_round() {
	local k
	for k in "${!R[@]}"; do
		[[ $k == "$1".* ]] || continue
		ROUND_VALUES[$k]+="${ROUND_VALUES[$k]:+ }${R[$k]}"
		unset "R[$k]"
	done
}

# take_medians : R[key] becomes the median over rounds of each number, except
# throughput (h1_rps, h2_rps), which becomes the best round: interference
# from other work can only lower it, so the best round is the closest to the
# proxy's capacity.
take_medians() {
	local k v
	for k in "${!ROUND_VALUES[@]}"; do
		for v in ${ROUND_VALUES[$k]}; do
			[[ $v =~ ^[0-9.]+$ ]] && continue
			# Not a number (n/a, failed, a protocol name): one value if every
			# round agrees, else all of them, which is itself a finding.
			R[$k]=$(tr ' ' '\n' <<<"${ROUND_VALUES[$k]}" | sort -u | paste -sd, -)
			[[ ${R[$k]} == *,* ]] && R[$k]=${ROUND_VALUES[$k]// /,}
			continue 2
		done
		if [[ $k == *.h1_rps || $k == *.h2_rps || $k == mtls-*_rps ]]; then
			R[$k]=$(tr ' ' '\n' <<<"${ROUND_VALUES[$k]}" | sort -g | tail -1)
			continue
		fi
		R[$k]=$(tr ' ' '\n' <<<"${ROUND_VALUES[$k]}" | sort -g |
			awk '{ v[++n] = $0 } END { print (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }')
	done
}

# per_round KEY : the values of every round, rounded, to show the spread.
per_round() {
	local v out=""
	for v in ${ROUND_VALUES[$1]:-}; do
		[[ $v =~ ^[0-9.]+$ ]] && v=$(printf '%.0f' "$v")
		out+="${out:+, }$v"
	done
	echo "${out:-—}"
}

# md_text TEXT : one table cell's worth of TEXT: no pipes, no newlines, short.
md_text() {
	local t=${1//|/\\|}
	t=${t//$'\n'/ }
	t=${t//$'\t'/ }
	((${#t} <= 240)) || t="${t:0:240}…"
	printf '%s' "$t"
}

load() { timeout -k 5 $((DURATION + WARMUP + 60)) "${PIN_LOAD[@]}" "$@"; }

# backend_counts : "h1_requests h2_requests" served by the backend so far,
# or "?" when the backend did not answer (a stalled machine must not end the
# run).
backend_counts() {
	local out
	out=$(curl -s --max-time 5 "http://$BACKEND_ADDR/_backend/stats" 2>/dev/null) || { echo "?"; return 0; }
	awk '{for (i = 1; i <= NF; i++) { split($i, kv, "="); c[kv[1]] = kv[2] } } END { print c["h1_requests"] + 0, c["h2_requests"] + 0 }' <<<"$out"
}

# upstream_proto BEFORE AFTER : which protocol the backend saw in between.
upstream_proto() {
	if [[ $1 == "?" || $2 == "?" ]]; then
		echo unknown
		return
	fi
	awk -v b="$1" -v a="$2" 'BEGIN {
		split(b, x, " "); split(a, y, " "); h1 = y[1] - x[1]; h2 = y[2] - x[2]
		if (h1 + h2 == 0) print "none"; else if (h1 >= 0.9 * (h1 + h2)) print "h1"; else if (h2 >= 0.9 * (h1 + h2)) print "h2"; else print "mixed"
	}'
}

# measure_h1 PEER URL PGID
measure_h1() {
	local peer=$1 url=$2 pg=$3 out=$WORK/$1.r$ROUND.wrk u0 u1 t0 t1 b0
	load wrk -t1 -c"$CONNS" -d"${WARMUP}s" "$url" >/dev/null 2>&1 || true
	b0=$(backend_counts)
	[[ -n $pg ]] && u0=$(group_usage "$pg") && t0=$(now)
	load wrk -t1 -c"$CONNS" -d"${DURATION}s" "$url" >"$out" 2>&1 || note "$peer" "wrk exited with status $?"
	[[ -n $pg ]] && u1=$(group_usage "$pg") && t1=$(now)
	R[$peer.h1_up]=$(upstream_proto "$b0" "$(backend_counts)")
	local reqs rps errs
	reqs=$(awk '/ requests in /{print $1}' "$out")
	rps=$(awk '/^Requests\/sec:/{print $2}' "$out")
	[[ -n $reqs && -n $rps ]] || { note "$peer" "wrk output unreadable: $(tr '\n' ' ' <"$out")"; return; }
	errs=$(awk '/Non-2xx/{n+=$NF} /Socket errors/{gsub(/,/,""); n+=$4+$6+$8+$10} END{print n+0}' "$out")
	((errs == 0)) || note "$peer" "h1: $errs non-2xx/socket errors"
	# wrk overruns its duration when the machine stalled under it.
	local took
	took=$(awk '/ requests in /{sub(/s,$/, "", $4); print $4}' "$out")
	if awk -v t="$took" -v d="$DURATION" 'BEGIN{exit !(t > d * 1.2)}'; then
		note "$peer" "h1: wrk ran ${took}s for ${DURATION}s (stalled)"
	fi
	R[$peer.h1_rps]=$rps
	[[ -n $pg ]] || return 0
	R[$peer.h1_cpu]=$(awk -v a="${u0%% *}" -v b="${u1%% *}" -v n="$reqs" -v hz="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/hz*1e6/n}')
	R[$peer.h1_busy]=$(awk -v a="${u0%% *}" -v b="${u1%% *}" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" 'BEGIN{printf "%.0f", (b-a)/hz/(t1-t0)*100}')
}

# set_policy PRIO PGID... : SCHED_FIFO at PRIO (0: back to SCHED_OTHER, which
# keeps the nice value set at start) for every thread of every process in the
# groups.
set_policy() {
	local prio=$1 pg pid
	shift
	for pg in "$@"; do
		for pid in $(group_members "$pg"); do
			if ((prio > 0)); then
				chrt -a -f -p "$prio" "$pid" >/dev/null 2>&1 || log "warning: chrt -f on pid $pid failed"
			else
				chrt -a -o -p 0 "$pid" >/dev/null 2>&1 || true
			fi
		done
	done
}

# measure_latency PEER URL PGID
measure_latency() {
	local peer=$1 url=$2 pg=$3 out=$WORK/$1.r$ROUND.rateload kv rc=0
	local -a rl=("$BIN/rateload" -url "$url" -rate "$RATE" -duration "${DURATION}s" -warmup "${WARMUP}s" -format kv)
	if [[ $LATENCY_RT == 1 ]]; then
		# The backend ranks above rateload on their shared core so that a
		# request wakes it at once: equal SCHED_FIFO tasks do not preempt each
		# other, and Go's scheduler spins a little before it sleeps.
		set_policy 2 "$BACKEND_PG"
		# shellcheck disable=SC2086 # pg is empty for direct
		set_policy 1 $pg
		timeout -k 5 $((DURATION + WARMUP + 60)) chrt -f 1 taskset -c "$LOAD_CPU" "${rl[@]}" >"$out" 2>"$out.err" || rc=$?
		# shellcheck disable=SC2086
		set_policy 0 "$BACKEND_PG" $pg
	else
		load "${rl[@]}" >"$out" 2>"$out.err" || rc=$?
	fi
	if ((rc != 0)); then
		note "$peer" "rateload failed: $(head -c 200 "$out.err")"
		return
	fi
	kv=$(<"$out")
	local f
	for f in $kv; do R[$peer.rl_${f%%=*}]=${f#*=}; done
	((${R[$peer.rl_errors]:-0} == 0 && ${R[$peer.rl_non2xx]:-0} == 0)) ||
		note "$peer" "latency: ${R[$peer.rl_errors]} errors, ${R[$peer.rl_non2xx]} non-2xx of ${R[$peer.rl_sent]}"
	# The client's own scheduling delay is part of every latency; when it is
	# large, something else had the load core and the row is noise.
	if awk -v l="${R[$peer.rl_lag_p99_us]:-0}" 'BEGIN{exit !(l > 500)}'; then
		note "$peer" "latency suspect: the load generator itself ran ${R[$peer.rl_lag_p99_us]}µs late at p99 (busy machine?)"
	fi
}

# measure_h2 PEER URL PGID
measure_h2() {
	local peer=$1 url=$2 pg=$3 out=$WORK/$1.r$ROUND.h2load u0 u1 t0 t1 b0
	local args=(-c"$H2_CLIENTS" -m"$H2_STREAMS")
	load h2load "${args[@]}" -D "$WARMUP" "$url" >/dev/null 2>&1 || true
	b0=$(backend_counts)
	[[ -n $pg ]] && u0=$(group_usage "$pg") && t0=$(now)
	load h2load "${args[@]}" -D "$DURATION" "$url" >"$out" 2>&1 || true
	[[ -n $pg ]] && u1=$(group_usage "$pg") && t1=$(now)
	R[$peer.h2_up]=$(upstream_proto "$b0" "$(backend_counts)")
	[[ ${R[$peer.h2_up]} == h2 ]] || note "$peer" "h2c phase reached the backend as ${R[$peer.h2_up]}, not h2"
	local ok rps failed
	rps=$(awk '/^finished in/{print $4}' "$out")
	ok=$(awk '/^requests:/{for(i=1;i<=NF;i++) if($i ~ /^succeeded/) print $(i-1)}' "$out")
	failed=$(awk '/^requests:/{for(i=1;i<=NF;i++) if($i ~ /^(failed|errored|timeout)/) n+=$(i-1)} END{print n+0}' "$out")
	grep -q '^Application protocol: h2c' "$out" || { note "$peer" "h2c: not negotiated"; R[$peer.h2_rps]=failed; return; }
	[[ -n $ok && $ok -gt 0 ]] || { note "$peer" "h2c: no successful requests"; R[$peer.h2_rps]=failed; return; }
	((failed == 0)) || note "$peer" "h2c: $failed failed/errored/timed-out requests"
	R[$peer.h2_rps]=${rps%.*}
	[[ -n $pg ]] || return 0
	R[$peer.h2_cpu]=$(awk -v a="${u0%% *}" -v b="${u1%% *}" -v n="$ok" -v hz="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/hz*1e6/n}')
	R[$peer.h2_busy]=$(awk -v a="${u0%% *}" -v b="${u1%% *}" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" 'BEGIN{printf "%.0f", (b-a)/hz/(t1-t0)*100}')
}

run_direct() {
	log "direct: backend without a proxy"
	measure_h1 direct "http://$BACKEND_ADDR/" ""
	measure_latency direct "http://$BACKEND_ADDR/" ""
	measure_h2 direct "http://$BACKEND_ADDR/" ""
}

run_peer() {
	local peer=$1
	if [[ -n ${SKIP[$peer]:-} ]]; then
		log "$peer: ${SKIP[$peer]}"
		return
	fi
	wait_ports_free "$PROXY_ADDR" "$PROXY_H2_ADDR" "$ADMIN_ADDR"
	log "$peer: starting on CPU $PROXY_CPU"
	PEER_H2_NA=""
	"start_$peer"
	local pg=$PEER_PG
	if ! wait_ready "$pg" "$PEER_H1"; then
		local logf
		logf=$(peer_log "$peer")
		SKIP[$peer]="failed to start: no 200 from $PEER_H1 within 15s; log: $(tail -c 300 "$logf" 2>/dev/null | tr '\n' ' ')"
		log "$peer: ${SKIP[$peer]}"
		stop_group "$pg"
		return
	fi
	R[$peer.idle_rss]=$(group_usage "$pg" | awk '{print $2}')
	log "$peer: HTTP/1.1 throughput (wrk -c$CONNS, ${DURATION}s)"
	measure_h1 "$peer" "$PEER_H1" "$pg"
	log "$peer: latency at $RATE req/s (${DURATION}s)"
	measure_latency "$peer" "$PEER_H1" "$pg"
	if [[ -n $PEER_H2 ]]; then
		log "$peer: h2c throughput (h2load -c$H2_CLIENTS -m$H2_STREAMS, ${DURATION}s)"
		measure_h2 "$peer" "$PEER_H2" "$pg"
	else
		R[$peer.h2_rps]=n/a
		if ((ROUND == 1)); then NOTE[$peer]+="${NOTE[$peer]:+; }h2c n/a: $PEER_H2_NA"; fi
	fi
	R[$peer.loaded_rss]=$(group_usage "$pg" | awk '{print $2}')
	[[ -n $(group_members "$pg") ]] || note "$peer" "process exited during the run"
	stop_group "$pg"
}

# ---------------------------------------------------------------- report
# cell KEY FORMAT : formatted value, or a dash when there is none.
cell() {
	local v=${R[$1]:-}
	case $v in
	"") echo "—" ;;
	n/a | failed) echo "$v" ;;
	*) awk -v v="$v" -v f="$2" 'BEGIN{printf f, v}' ;;
	esac
}

ratio() { # ratio NUM_KEY DEN_KEY
	local x=${R[$1]:-} y=${R[$2]:-}
	[[ $x =~ ^[0-9.]+$ && $y =~ ^[0-9.]+$ ]] && awk -v a="$x" -v b="$y" 'BEGIN{if (b > 0) printf "%.2fx", a/b; else print "—"}' || echo "—"
}

readonly COLS="h1_rps h1_cpu rl_p50_us rl_p99_us h2_rps h2_cpu idle_rss loaded_rss"

report() {
	local rows peer c
	read -ra rows <<<"direct $PEERS"
	echo "## Results $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "- machine: $(nproc) cores, $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo), Linux $(uname -r);" \
		"load average before/after: $LOAD_BEFORE / $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "- proxy on CPU $PROXY_CPU (Go proxies GOMAXPROCS=1, nginx 1 worker, HAProxy nbthread 1);" \
		"backend and load generators share CPU $LOAD_CPU; all at nice $NICE$( ((LATENCY_RT == 1)) && echo ", latency phase under SCHED_FIFO")"
	echo "- $ROUNDS round(s), peers interleaved; rps is the best round, every other number the median over rounds"
	echo "- HTTP/1.1: wrk -t1 -c$CONNS -d${DURATION}s; latency: rateload -rate $RATE -duration ${DURATION}s;" \
		"h2c: h2load -c$H2_CLIENTS -m$H2_STREAMS -D $DURATION; warm-up ${WARMUP}s before each"
	echo "- $VERSIONS"
	echo
	echo "| proxy | h1 rps | h1 CPU µs/req | p50 @${RATE}rps | p99 @${RATE}rps | h2c rps | h2c CPU µs/req | idle RSS | loaded RSS |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
	for peer in "${rows[@]}"; do
		if [[ -n ${SKIP[$peer]:-} ]]; then
			echo "| $peer | ${SKIP[$peer]%%:*} | | | | | | | |"
			continue
		fi
		printf '| %s | %s | %s | %s µs | %s µs | %s | %s | %s | %s |\n' "$peer" \
			"$(cell "$peer.h1_rps" '%.0f')" "$(cell "$peer.h1_cpu" '%.1f')" \
			"$(cell "$peer.rl_p50_us" '%.0f')" "$(cell "$peer.rl_p99_us" '%.0f')" \
			"$(cell "$peer.h2_rps" '%.0f')" "$(cell "$peer.h2_cpu" '%.1f')" \
			"$(cell "$peer.idle_rss" '%.1f MiB' | awk '{ if ($1 ~ /^[0-9.]+$/) printf "%.1f MiB", $1/1024; else print }')" \
			"$(cell "$peer.loaded_rss" '%.1f MiB' | awk '{ if ($1 ~ /^[0-9.]+$/) printf "%.1f MiB", $1/1024; else print }')"
	done
	echo
	if [[ -n ${R[haproxy.h1_rps]:-} ]]; then
		echo "Ratios vs HAProxy (rps: higher is better; CPU, latency, RSS: lower is better), and p99 vs direct:"
		echo
		echo "| proxy | h1 rps | h1 CPU/req | p50 | p99 | h2c rps | h2c CPU/req | idle RSS | loaded RSS | p99 / direct p99 |"
		echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		for peer in $PEERS; do
			[[ -z ${SKIP[$peer]:-} ]] || continue
			printf '| %s |' "$peer"
			for c in $COLS; do printf ' %s |' "$(ratio "$peer.$c" "haproxy.$c")"; done
			printf ' %s |\n' "$(ratio "$peer.rl_p99_us" "direct.rl_p99_us")"
		done
	else
		echo "(no HAProxy row, so no ratios vs HAProxy)"
	fi
	echo
	echo "Diagnostics (proxy core busy = proxy CPU time / wall time; near 100% means the proxy, not the load side, was the limit):"
	echo
	echo "| proxy | h1 core busy | h2c core busy | upstream proto (h1 / h2c phase) | rateload achieved rps | client lag p99 | h1 rps per round | h2c rps per round | notes |"
	echo "|---|---:|---:|---|---:|---:|---|---|---|"
	for peer in "${rows[@]}"; do
		[[ -z ${SKIP[$peer]:-} ]] || { echo "| $peer | | | | | | | | $(md_text "${SKIP[$peer]}") |"; continue; }
		printf '| %s | %s | %s | %s / %s | %s | %s | %s | %s | %s |\n' "$peer" "$(cell "$peer.h1_busy" '%.0f%%')" \
			"$(cell "$peer.h2_busy" '%.0f%%')" "${R[$peer.h1_up]:-—}" "${R[$peer.h2_up]:-—}" \
			"$(cell "$peer.rl_achieved_rps" '%.0f')" "$(cell "$peer.rl_lag_p99_us" '%.0f µs')" \
			"$(per_round "$peer.h1_rps")" "$(per_round "$peer.h2_rps")" "$(md_text "${NOTE[$peer]:-}")"
	done
}

# ---------------------------------------------------------------- main
main() {
	[[ $(uname -s) == Linux ]] || die "needs Linux (/proc, taskset)"
	(($(nproc) >= 2)) || die "needs 2 cores: one for the proxy, one for backend + load generator"
	local p
	for p in $PEERS; do
		case $p in omnirelay | haproxy | nginx | revproxy) ;; *) die "unknown peer $p in PEERS" ;; esac
	done
	mtls_check_settings
	for p in "$BACKEND_ADDR" "$PROXY_ADDR" "$PROXY_H2_ADDR" "$ADMIN_ADDR" "$MTLS_ADDR"; do
		port_busy "$p" && die "$p is already in use; stop what listens there (ss -ltnp)"
	done
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/omnirelay-bench.XXXXXX")
	BIN=$WORK/bin
	mkdir -p "$BIN"
	LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
	if awk '{exit !($1 > 0.5)}' /proc/loadavg; then
		log "warning: load average ${LOAD_BEFORE%% *} before the run: other work on these 2 cores will show up as noise"
	fi

	install_tools
	command -v go >/dev/null || die "go not found"
	build_go
	if [[ " $PEERS $MTLS_PEERS " == *" omnirelay "* ]]; then build_omnirelay; fi
	for p in $PEERS; do
		if [[ -n ${SKIP[$p]:-} ]]; then log "$p: ${SKIP[$p]}"; fi
	done

	VERSIONS="versions: $(go version | awk '{print $3}')"
	if [[ " $PEERS $MTLS_PEERS " == *" haproxy "* ]]; then VERSIONS+=", HAProxy $(haproxy -v | awk 'NR==1{print $3}')"; fi
	if [[ " $PEERS $MTLS_PEERS " == *" nginx "* ]]; then VERSIONS+=", $("$(nginx_bin)" -v 2>&1 | awk -F': ' '{print $2}')"; fi
	# wrk -v exits 1 after printing its version.
	VERSIONS+=", $({ wrk -v 2>&1 || true; } | awk 'NR==1{print $1, $2}'), $(h2load --version | awk '{print $2}')"
	VERSIONS+=", omnirelay $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"

	log "backend on CPU $LOAD_CPU"
	start_group "$WORK/backend.log" "${PIN_LOAD[@]}" "$BIN/backend" -addr "$BACKEND_ADDR"
	BACKEND_PG=$STARTED_PG
	wait_ready "$BACKEND_PG" "http://$BACKEND_ADDR/" || die "backend did not start: $(tail -c 300 "$WORK/backend.log")"

	if [[ $MTLS != only ]]; then
		for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
			((ROUNDS == 1)) || log "round $ROUND of $ROUNDS"
			run_direct
			end_round direct
			for p in $PEERS; do
				run_peer "$p"
				end_round "$p"
			done
		done
	fi
	if [[ $MTLS != 0 ]]; then
		mtls_setup
		for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
			((ROUNDS == 1)) || log "mtls round $ROUND of $ROUNDS"
			for p in $MTLS_PEERS; do
				run_mtls_peer "$p"
				end_round "mtls-$p"
			done
		done
	fi
	take_medians
	stop_group "$BACKEND_PG"

	if [[ -n $RESULTS ]]; then
		full_report | tee "$RESULTS"
	else
		full_report
	fi
}

full_report() {
	if [[ $MTLS != only ]]; then report; fi
	if [[ $MTLS != only && $MTLS != 0 ]]; then echo; fi
	if [[ $MTLS != 0 ]]; then report_mtls; fi
}

main "$@"
