#!/usr/bin/env bash
# Build (or reuse) a Weaviate server and run it on loopback for tests and
# benchmarks: one node, or a 3-node cluster.
#
#   scripts/weaviate.sh build              build weaviate-server once into the cache (reused afterwards)
#   scripts/weaviate.sh start single       start one node, wait until ready, print its URL
#   scripts/weaviate.sh start cluster      start three nodes (Raft + gossip), wait, print the URLs
#   scripts/weaviate.sh urls single|cluster   print the REST URLs (comma-separated)
#   scripts/weaviate.sh grpc single|cluster   print the gRPC addresses (comma-separated)
#   scripts/weaviate.sh kill-node N        SIGKILL cluster node N (0..2), as a crash would
#   scripts/weaviate.sh stop               stop every node this script started (SIGTERM, then SIGKILL)
#
# Environment:
#   IMAGESCOPE_CI_CACHE   cache root (default $HOME/.cache/imagescope-ci); the binary goes to $IMAGESCOPE_CI_CACHE/bin
#   WEAVIATE_BIN          use this weaviate-server binary instead of building one
#   WEAVIATE_STATE        run folder for data, logs and pid files (default /tmp/imagescope-weaviate)
#   WEAVIATE_VERSION      module version to build (default v1.35.2)
#
# Everything binds to 127.0.0.1. Ports: single node REST 8080, gRPC 50051,
# gossip/data 7946/7947, Raft 8300/8301, pprof 6060; cluster node i REST
# 8091+i, gRPC 50061+i, gossip/data 7100+2i/7101+2i, Raft 8310+2i/8311+2i,
# pprof 6070+i.
set -euo pipefail

VERSION="${WEAVIATE_VERSION:-v1.35.2}"
CACHE="${IMAGESCOPE_CI_CACHE:-$HOME/.cache/imagescope-ci}"
STATE="${WEAVIATE_STATE:-/tmp/imagescope-weaviate}"
BIN="${WEAVIATE_BIN:-$CACHE/bin/weaviate-server}"

log() { echo "weaviate.sh: $*" >&2; }

build() {
	if [[ -x "$BIN" && ( -n "${WEAVIATE_BIN:-}" || "$(cat "$BIN.version" 2>/dev/null)" == "$VERSION" ) ]]; then
		log "reusing $BIN ($VERSION)"
		return
	fi
	if [[ -n "${WEAVIATE_BIN:-}" ]]; then
		log "WEAVIATE_BIN=$WEAVIATE_BIN is not an executable"
		exit 1
	fi
	mkdir -p "$CACHE/bin"
	log "building weaviate-server $VERSION into $CACHE/bin (several minutes, about 1.8 GB of modules on the first run)"
	# Build outside any module so the repository's go.mod is not involved.
	(cd "$CACHE" && GOFLAGS=-mod=mod GOBIN="$CACHE/bin" nice -n 19 go install "github.com/weaviate/weaviate/cmd/weaviate-server@$VERSION")
	echo "$VERSION" >"$BIN.version"
	log "built $BIN"
}

# start_node NAME HTTP GRPC GOSSIP DATA RAFT RAFTRPC PPROF BOOTSTRAP [extra env...]
start_node() {
	local name=$1 http=$2 grpc=$3 gossip=$4 data=$5 raft=$6 raftrpc=$7 pprof=$8 expect=$9
	shift 9
	local dir="$STATE/$name"
	mkdir -p "$dir/data"
	if [[ -f "$dir/pid" ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
		log "$name already running (pid $(cat "$dir/pid"))"
		return
	fi
	env AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED=true \
		PERSISTENCE_DATA_PATH="$dir/data" \
		DEFAULT_VECTORIZER_MODULE=none \
		DISABLE_TELEMETRY=true \
		QUERY_DEFAULTS_LIMIT=25 \
		CLUSTER_HOSTNAME="$name" \
		CLUSTER_ADVERTISE_ADDR=127.0.0.1 \
		CLUSTER_BIND_ADDR=127.0.0.1 \
		CLUSTER_GOSSIP_BIND_PORT="$gossip" \
		CLUSTER_DATA_BIND_PORT="$data" \
		RAFT_PORT="$raft" \
		RAFT_INTERNAL_RPC_PORT="$raftrpc" \
		RAFT_BOOTSTRAP_EXPECT="$expect" \
		GRPC_PORT="$grpc" \
		GO_PROFILING_PORT="$pprof" \
		"$@" \
		nohup "$BIN" --host 127.0.0.1 --port "$http" --scheme http >"$dir/log" 2>&1 &
	echo $! >"$dir/pid"
	echo "$http" >"$dir/http"
	log "started $name (pid $!, http://127.0.0.1:$http, log $dir/log)"
}

# http_ready URL: GET URL/v1/.well-known/ready answers 200 (plain bash, no curl needed).
http_ready() {
	local hostport=${1#http://}
	local host=${hostport%%:*} port=${hostport##*:} line
	{ exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null || return 1
	printf 'GET /v1/.well-known/ready HTTP/1.0\r\nHost: %s\r\n\r\n' "$hostport" >&3
	read -r -t 5 line <&3 || true
	exec 3>&- 3<&-
	[[ "$line" == *" 200"* ]]
}

wait_ready() {
	local deadline=$((SECONDS + ${WEAVIATE_READY_TIMEOUT:-120}))
	for url in "$@"; do
		until http_ready "$url"; do
			if ((SECONDS > deadline)); then
				log "$url not ready in time; last log lines:"
				tail -n 20 "$STATE"/*/log >&2 || true
				exit 1
			fi
			sleep 0.5
		done
		log "$url ready"
	done
}

wait_port() {
	local deadline=$((SECONDS + ${WEAVIATE_READY_TIMEOUT:-120}))
	until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
		if ((SECONDS > deadline)); then
			log "nothing listens on 127.0.0.1:$1 in time"
			exit 1
		fi
		sleep 0.2
	done
}

urls() {
	case "$1" in
	single) echo "http://127.0.0.1:8080" ;;
	cluster) echo "http://127.0.0.1:8091,http://127.0.0.1:8092,http://127.0.0.1:8093" ;;
	*) log "unknown topology $1 (single or cluster)"; exit 2 ;;
	esac
}

grpcs() {
	case "$1" in
	single) echo "127.0.0.1:50051" ;;
	cluster) echo "127.0.0.1:50061,127.0.0.1:50062,127.0.0.1:50063" ;;
	*) log "unknown topology $1 (single or cluster)"; exit 2 ;;
	esac
}

start() {
	build
	mkdir -p "$STATE"
	case "$1" in
	single)
		start_node single 8080 50051 7946 7947 8300 8301 6060 1
		wait_ready http://127.0.0.1:8080
		;;
	cluster)
		local join="cluster0:8310,cluster1:8312,cluster2:8314"
		for i in 0 1 2; do
			local extra=(CLUSTER_IN_LOCALHOST=true RAFT_JOIN="$join")
			if ((i > 0)); then extra+=(CLUSTER_JOIN=127.0.0.1:7100); fi
			start_node "cluster$i" $((8091 + i)) $((50061 + i)) $((7100 + 2 * i)) $((7101 + 2 * i)) \
				$((8310 + 2 * i)) $((8311 + 2 * i)) $((6070 + i)) 3 "${extra[@]}"
			# The others join through node 0's gossip port: it must listen first.
			if ((i == 0)); then wait_port 7100; fi
		done
		wait_ready http://127.0.0.1:8091 http://127.0.0.1:8092 http://127.0.0.1:8093
		;;
	*) log "unknown topology $1 (single or cluster)"; exit 2 ;;
	esac
	urls "$1"
}

stop_dir() {
	local dir=$1
	[[ -f "$dir/pid" ]] || return 0
	local pid
	pid=$(cat "$dir/pid")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 40); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.25
		done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
		log "stopped $(basename "$dir") (pid $pid)"
	fi
	rm -f "$dir/pid"
}

stop() {
	[[ -d "$STATE" ]] || return 0
	for dir in "$STATE"/*/; do
		stop_dir "${dir%/}"
	done
}

kill_node() {
	local dir="$STATE/cluster$1"
	[[ -f "$dir/pid" ]] || { log "cluster$1 is not running"; exit 1; }
	kill -KILL "$(cat "$dir/pid")" 2>/dev/null || true
	rm -f "$dir/pid"
	log "killed cluster$1"
}

cmd="${1:-}"
case "$cmd" in
build) build ;;
start) start "${2:-single}" ;;
stop) stop ;;
urls) urls "${2:-single}" ;;
grpc) grpcs "${2:-single}" ;;
kill-node) kill_node "${2:?node number}" ;;
wipe) stop; rm -rf "$STATE" ;;
*)
	sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
