# shellcheck shell=bash disable=SC2154,SC2004
# (SKIP, R, NOTE and the helpers are run.sh's; shellcheck run.sh sees them.)
# The mTLS rows of bench/run.sh, which sources this file (it is not run on its
# own). Each peer runs one process with two listeners to the same backend:
# plaintext HTTP/1.1 on PROXY_ADDR and mTLS on MTLS_ADDR (TLS 1.3, ECDSA
# P-256 certificates, client certificate required and verified against a test
# CA). bench/cmd/mtlsload drives both alike, since wrk and h2load cannot
# present a client certificate, in four phases per peer and round:
#
#   ka_plain, ka_mtls   MTLS_CONNS keep-alive connections: CPU per request
#   nc_plain, nc_mtls   MTLS_NEW_CONNS workers, a new connection per request
#                       and no session resumption: CPU per full handshake
#
# docs/benchmarks.md ("mTLS") says how to read the tables.

MTLS=${MTLS:-1}
MTLS_CONNS=${MTLS_CONNS:-64}
MTLS_NEW_CONNS=${MTLS_NEW_CONNS:-16}
if [[ -z ${MTLS_PEERS:-} ]]; then
	MTLS_PEERS=""
	for _p in $PEERS; do
		case $_p in omnirelay | haproxy | nginx) MTLS_PEERS+="${MTLS_PEERS:+ }$_p" ;; esac
	done
	unset _p
fi
readonly MTLS_ADDR=127.0.0.1:18443
readonly MTLS_PHASES="ka_plain ka_mtls nc_plain nc_mtls"

mtls_check_settings() {
	local p
	case $MTLS in 0 | 1 | only) ;; *) die "MTLS=$MTLS: want 0, 1 or only" ;; esac
	for p in $MTLS_PEERS; do
		case $p in omnirelay | haproxy | nginx) ;; *) die "unknown peer $p in MTLS_PEERS (omnirelay, haproxy, nginx)" ;; esac
	done
}

# mtls_setup : certificates, and OmniRelay's bootstrap (sets
# SKIP[mtls-omnirelay] when it cannot be generated).
mtls_setup() {
	local dir=$WORK/mtls
	mkdir -p "$dir"
	MTLS_CERTS=$dir/certs
	"$BIN/mtlsconf" -dir "$MTLS_CERTS" || die "mtlsconf could not write certificates"
	[[ " $MTLS_PEERS " == *" omnirelay "* && -z ${SKIP[omnirelay]:-} ]] || return 0
	render omnirelay-mtls.yaml.tmpl "$dir/omnirelay.yaml" "$dir"
	if ! "$BIN/mtlsconf" -dir "$MTLS_CERTS" -gen=false -config "$dir/omnirelay.yaml" -out "$dir/omnirelay.json" >"$dir/mtlsconf.log" 2>&1; then
		SKIP[mtls-omnirelay]="failed: mtlsconf: $(head -c 300 "$dir/mtlsconf.log" | tr '\n' ' ')"
	fi
}

start_mtls_omnirelay() {
	start_group "$(peer_log mtls-omnirelay)" env GOMAXPROCS=1 "${PIN_PROXY[@]}" "$OMNIRELAY" run --config "$WORK/mtls/omnirelay.json"
	PEER_PG=$STARTED_PG
}

start_mtls_haproxy() {
	local dir=$WORK/mtls/haproxy
	mkdir -p "$dir"
	render haproxy-mtls.cfg.tmpl "$dir/haproxy.cfg" "$dir"
	haproxy -c -q -f "$dir/haproxy.cfg" || die "haproxy rejected $dir/haproxy.cfg"
	start_group "$(peer_log mtls-haproxy)" "${PIN_PROXY[@]}" haproxy -db -f "$dir/haproxy.cfg"
	PEER_PG=$STARTED_PG
}

start_mtls_nginx() {
	local dir=$WORK/mtls/nginx bin
	bin=$(nginx_bin) || die "nginx not found"
	mkdir -p "$dir/tmp"
	render nginx-mtls.conf.tmpl "$dir/nginx.conf" "$dir"
	"$bin" -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" || die "nginx rejected $dir/nginx.conf"
	start_group "$(peer_log mtls-nginx)" "${PIN_PROXY[@]}" "$bin" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
	PEER_PG=$STARTED_PG
}

# measure_mtls PEER PHASE PGID : one phase; results under R[mtls-PEER.PHASE_*].
# mtlsload samples the proxy's CPU itself, at the end of its warm-up and at
# the end, so that the keep-alive connections' handshakes (made during the
# warm-up) stay out of the per-request figure.
measure_mtls() {
	local peer=$1 phase=$2 pg=$3 key=mtls-$1 out f
	out=$WORK/mtls-$1.$2.r$ROUND
	local -a args=(-conns "$MTLS_CONNS" -mode keepalive)
	[[ $phase == nc_* ]] && args=(-conns "$MTLS_NEW_CONNS" -mode newconn)
	if [[ $phase == *_mtls ]]; then
		args+=(-addr "$MTLS_ADDR" -tls -cert "$MTLS_CERTS/client.pem" -key "$MTLS_CERTS/client.key" -ca "$MTLS_CERTS/ca.pem")
	else
		args+=(-addr "$PROXY_ADDR")
	fi
	args+=(-warmup "${WARMUP}s" -duration "${DURATION}s" -cpu-pgid "$pg" -clk-tck "$CLK_TCK" -format kv)
	if ! load "$BIN/mtlsload" "${args[@]}" >"$out" 2>"$out.err"; then
		note "$key" "$phase: mtlsload failed: $(head -c 200 "$out.err")"
		R[$key.${phase}_rps]=failed
		return
	fi
	local -A m=()
	for f in $(<"$out"); do m[${f%%=*}]=${f#*=}; done
	[[ -n ${m[requests]:-} && ${m[requests]} -gt 0 ]] || {
		note "$key" "$phase: no successful request: $(head -c 200 "$out.err")"
		R[$key.${phase}_rps]=failed
		return
	}
	((m[errors] + m[non200] == 0)) || note "$key" "$phase: ${m[errors]} errors, ${m[non200]} non-200 of ${m[requests]}: $(head -c 150 "$out.err")"
	if [[ $phase == *_mtls ]] && [[ ${m[tls]} != TLS1.3 || ${m[curve]} != X25519 || ${m[resumed]} != 0 ]]; then
		note "$key" "$phase: negotiated ${m[tls]} ${m[curve]}, ${m[resumed]} resumed"
	fi
	if [[ $phase == nc_* ]] && ((m[conns] < m[requests])); then
		note "$key" "$phase: ${m[conns]} connections for ${m[requests]} requests"
	fi
	R[$key.${phase}_rps]=${m[rps]}
	R[$key.${phase}_cpu]=$(awk -v c="${m[cpu_s]}" -v n="${m[requests]}" 'BEGIN{printf "%.2f", c*1e6/n}')
	R[$key.${phase}_busy]=$(awk -v c="${m[cpu_s]}" -v t="${m[elapsed_s]}" 'BEGIN{printf "%.0f", c/t*100}')
}

run_mtls_peer() {
	local peer=$1 key=mtls-$1 phase
	if [[ -n ${SKIP[$peer]:-} || -n ${SKIP[$key]:-} ]]; then
		SKIP[$key]=${SKIP[$key]:-${SKIP[$peer]}}
		log "mtls $peer: ${SKIP[$key]}"
		return
	fi
	wait_ports_free "$PROXY_ADDR" "$MTLS_ADDR" "$ADMIN_ADDR"
	log "mtls $peer: starting on CPU $PROXY_CPU"
	"start_mtls_$peer"
	local pg=$PEER_PG
	if ! wait_ready "$pg" "http://$PROXY_ADDR/"; then
		SKIP[$key]="failed to start: no 200 from http://$PROXY_ADDR/ within 15s; log: $(tail -c 300 "$(peer_log "$key")" 2>/dev/null | tr '\n' ' ')"
		log "mtls $peer: ${SKIP[$key]}"
		stop_group "$pg"
		return
	fi
	for phase in $MTLS_PHASES; do
		log "mtls $peer: $phase (mtlsload, ${WARMUP}s + ${DURATION}s)"
		measure_mtls "$peer" "$phase" "$pg"
	done
	[[ -n $(group_members "$pg") ]] || note "$key" "process exited during the run"
	stop_group "$pg"
}

# mtls_num KEY : R[KEY] when it is a number, else nothing.
mtls_num() {
	local v=${R[$1]:-}
	[[ $v =~ ^[0-9.]+$ ]] && echo "$v"
	return 0
}

# mtls_calc EXPR KEY... : EXPR over the numbers (a, b, ...) at KEYs, or a dash.
mtls_calc() {
	local expr=$1 k
	local -a v=()
	shift
	for k in "$@"; do
		v+=("$(mtls_num "$k")")
		[[ -n ${v[-1]} ]] || { echo "—"; return; }
	done
	awk -v a="${v[0]}" -v b="${v[1]:-0}" -v c="${v[2]:-0}" -v d="${v[3]:-0}" "BEGIN{$expr}"
}

report_mtls() {
	local peer k
	echo "## mTLS $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "- machine and pinning as above: proxy on CPU $PROXY_CPU, backend and mtlsload on CPU $LOAD_CPU, nice $NICE"
	echo "- each proxy runs one process with a plaintext HTTP/1.1 listener and an mTLS listener (TLS 1.3, ECDSA P-256," \
		"client certificate required and verified against the test CA) to the same backend over plaintext HTTP/1.1"
	echo "- keep-alive: mtlsload -mode keepalive -conns $MTLS_CONNS; new connection per request: mtlsload -mode newconn" \
		"-conns $MTLS_NEW_CONNS, no session resumption, X25519 key exchange; ${DURATION}s per phase after ${WARMUP}s of warm-up"
	echo "- $ROUNDS round(s); rps is the best round, every other number the median over rounds"
	echo "- TLS libraries: OmniRelay Go $(go version | awk '{print $3}') crypto/tls;" \
		"HAProxy/nginx $(openssl version 2>/dev/null | awk '{print $1, $2}' || echo 'OpenSSL ?') (system library)"
	echo
	echo "Per request on keep-alive connections (proxy CPU µs per request):"
	echo
	echo "| proxy | plaintext rps | mTLS rps | plaintext CPU µs/req | mTLS CPU µs/req | mTLS − plaintext | mTLS / plaintext |"
	echo "|---|---:|---:|---:|---:|---:|---:|"
	for peer in $MTLS_PEERS; do
		k=mtls-$peer
		if [[ -n ${SKIP[$k]:-} ]]; then
			echo "| $peer | ${SKIP[$k]%%:*} | | | | | |"
			continue
		fi
		printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$peer" \
			"$(cell "$k.ka_plain_rps" '%.0f')" "$(cell "$k.ka_mtls_rps" '%.0f')" \
			"$(cell "$k.ka_plain_cpu" '%.1f')" "$(cell "$k.ka_mtls_cpu" '%.1f')" \
			"$(mtls_calc 'printf "%+.1f µs", a - b' "$k.ka_mtls_cpu" "$k.ka_plain_cpu")" \
			"$(ratio "$k.ka_mtls_cpu" "$k.ka_plain_cpu")"
	done
	echo
	echo "A new connection per request (proxy CPU µs per connection, each carrying one request):"
	echo
	echo "| proxy | plaintext conns/s | mTLS handshakes/s | plaintext CPU µs/conn | mTLS CPU µs/conn | handshake cost (mTLS − plaintext) | mTLS / plaintext | mTLS handshakes/s per core (1e6 / CPU µs) |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|"
	for peer in $MTLS_PEERS; do
		k=mtls-$peer
		[[ -z ${SKIP[$k]:-} ]] || { echo "| $peer | ${SKIP[$k]%%:*} | | | | | | |"; continue; }
		printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$peer" \
			"$(cell "$k.nc_plain_rps" '%.0f')" "$(cell "$k.nc_mtls_rps" '%.0f')" \
			"$(cell "$k.nc_plain_cpu" '%.1f')" "$(cell "$k.nc_mtls_cpu" '%.1f')" \
			"$(mtls_calc 'printf "%.0f µs", a - b' "$k.nc_mtls_cpu" "$k.nc_plain_cpu")" \
			"$(ratio "$k.nc_mtls_cpu" "$k.nc_plain_cpu")" \
			"$(mtls_calc 'if (a > 0) printf "%.0f", 1e6 / a; else print "—"' "$k.nc_mtls_cpu")"
	done
	echo
	if [[ " $MTLS_PEERS " == *" haproxy "* && -z ${SKIP[mtls-haproxy]:-} ]]; then
		echo "Ratios vs HAProxy (CPU and handshake cost: lower is better; handshakes/s: higher is better):"
		echo
		echo "| proxy | plaintext CPU/req | mTLS CPU/req | mTLS CPU/new conn | handshake cost | mTLS handshakes/s |"
		echo "|---|---:|---:|---:|---:|---:|"
		for peer in $MTLS_PEERS; do
			k=mtls-$peer
			[[ -z ${SKIP[$k]:-} ]] || continue
			printf '| %s | %s | %s | %s | %s | %s |\n' "$peer" \
				"$(ratio "$k.ka_plain_cpu" mtls-haproxy.ka_plain_cpu)" "$(ratio "$k.ka_mtls_cpu" mtls-haproxy.ka_mtls_cpu)" \
				"$(ratio "$k.nc_mtls_cpu" mtls-haproxy.nc_mtls_cpu)" \
				"$(mtls_calc 'if (c - d > 0) printf "%.2fx", (a - b) / (c - d); else print "—"' \
					"$k.nc_mtls_cpu" "$k.nc_plain_cpu" mtls-haproxy.nc_mtls_cpu mtls-haproxy.nc_plain_cpu)" \
				"$(ratio "$k.nc_mtls_rps" mtls-haproxy.nc_mtls_rps)"
		done
		echo
	fi
	echo "Diagnostics (core busy = proxy CPU time / wall time per phase; per-round values show the spread):"
	echo
	echo "| proxy | core busy ka plain / ka mTLS / nc plain / nc mTLS | mTLS CPU µs/req per round | mTLS CPU µs/conn per round | plaintext CPU µs/conn per round | handshakes/s per round | notes |"
	echo "|---|---|---|---|---|---|---|"
	for peer in $MTLS_PEERS; do
		k=mtls-$peer
		[[ -z ${SKIP[$k]:-} ]] || { echo "| $peer | | | | | | $(md_text "${SKIP[$k]}") |"; continue; }
		printf '| %s | %s / %s / %s / %s | %s | %s | %s | %s | %s |\n' "$peer" \
			"$(cell "$k.ka_plain_busy" '%.0f%%')" "$(cell "$k.ka_mtls_busy" '%.0f%%')" \
			"$(cell "$k.nc_plain_busy" '%.0f%%')" "$(cell "$k.nc_mtls_busy" '%.0f%%')" \
			"$(per_round_1 "$k.ka_mtls_cpu")" "$(per_round "$k.nc_mtls_cpu")" "$(per_round "$k.nc_plain_cpu")" \
			"$(per_round "$k.nc_mtls_rps")" "$(md_text "${NOTE[$k]:-}")"
	done
}

# per_round_1 KEY : as per_round, with one decimal (small per-request figures).
per_round_1() {
	local v out=""
	for v in ${ROUND_VALUES[$1]:-}; do
		[[ $v =~ ^[0-9.]+$ ]] && v=$(printf '%.1f' "$v")
		out+="${out:+, }$v"
	done
	echo "${out:-—}"
}
