#!/usr/bin/env bash
# Build (or reuse) an Ollama server, run it on loopback for integration tests,
# and create tiny random-weight models for it (no downloads: the weights are
# written by scripts/tinymodels.py and imported with `ollama create`).
#
#   scripts/ollama.sh build      build the pinned ollama binary once into the cache (reused afterwards)
#   scripts/ollama.sh start      start `ollama serve` on 127.0.0.1, wait until it answers, print its URL
#   scripts/ollama.sh models     write and import the tiny models (text: imagescope-tiny-text,
#                                vision: imagescope-tiny-vision); prints "text=NAME vision=NAME"
#   scripts/ollama.sh url        print the base URL
#   scripts/ollama.sh stop       stop the server this script started (SIGTERM, then SIGKILL)
#   scripts/ollama.sh wipe       stop and delete the state folder (models included)
#
# Environment:
#   IMAGESCOPE_CI_CACHE   cache root (default $HOME/.cache/imagescope-ci); the binary goes to $IMAGESCOPE_CI_CACHE/bin
#   OLLAMA_BIN            use this ollama binary instead of building one
#   OLLAMA_STATE          state folder: HOME, OLLAMA_MODELS, log and pid (default /tmp/imagescope-ollama)
#   OLLAMA_VERSION        module version to build (default v0.17.4)
#   OLLAMA_PORT           port on 127.0.0.1 (default 11534, away from a user's own Ollama on 11434)
#   PYTHON                interpreter with numpy for the model writer (default /usr/bin/python3)
#
# Build needs (Debian): a C/C++ compiler, nlohmann-json3-dev and libstb-dev. The
# module zip also leaves out miniaudio.h; it is taken from the Go module
# github.com/gen2brain/malgo, which carries the same single-header library.
set -euo pipefail

VERSION="${OLLAMA_VERSION:-v0.17.4}"
MALGO="github.com/gen2brain/malgo@v0.11.24"
CACHE="${IMAGESCOPE_CI_CACHE:-$HOME/.cache/imagescope-ci}"
STATE="${OLLAMA_STATE:-/tmp/imagescope-ollama}"
BIN="${OLLAMA_BIN:-$CACHE/bin/ollama}"
PORT="${OLLAMA_PORT:-11534}"
PY="${PYTHON:-/usr/bin/python3}"
HERE="$(cd "$(dirname "$0")" && pwd)"

log() { echo "ollama.sh: $*" >&2; }

build() {
	if [[ -x "$BIN" && ( -n "${OLLAMA_BIN:-}" || "$(cat "$BIN.version" 2>/dev/null)" == "$VERSION" ) ]]; then
		log "reusing $BIN ($VERSION)"
		return
	fi
	if [[ -n "${OLLAMA_BIN:-}" ]]; then
		log "OLLAMA_BIN=$OLLAMA_BIN is not an executable"
		exit 1
	fi
	for h in /usr/include/nlohmann/json.hpp /usr/include/stb/stb_image.h; do
		[[ -f "$h" ]] || { log "missing $h: apt-get install nlohmann-json3-dev libstb-dev"; exit 1; }
	done
	mkdir -p "$CACHE/bin" "$CACHE/ollama-include/miniaudio"
	local dir
	dir=$(cd "$CACHE" && GOFLAGS=-mod=mod go mod download -json "$MALGO" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[[ -f "$dir/miniaudio.h" ]] || { log "no miniaudio.h in $MALGO ($dir)"; exit 1; }
	cp "$dir/miniaudio.h" "$CACHE/ollama-include/miniaudio/miniaudio.h"
	log "building ollama $VERSION into $CACHE/bin (a few minutes)"
	# Build outside any module so the repository's go.mod is not involved.
	(cd "$CACHE" && GOFLAGS=-mod=mod GOBIN="$CACHE/bin" \
		CGO_CPPFLAGS="-I$CACHE/ollama-include" \
		nice -n 19 go install "github.com/ollama/ollama@$VERSION")
	echo "$VERSION" >"$BIN.version"
	log "built $BIN"
}

url() { echo "http://127.0.0.1:$PORT"; }

http_ok() {
	local line
	{ exec 3<>"/dev/tcp/127.0.0.1/$PORT"; } 2>/dev/null || return 1
	printf 'GET /api/version HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n' "$PORT" >&3
	read -r -t 5 line <&3 || true
	exec 3>&- 3<&-
	[[ "$line" == *" 200"* ]]
}

# server_env runs its arguments with the environment of this script's server
# (env execs them: the pid stays the command's own).
server_env() {
	exec env HOME="$STATE/home" OLLAMA_MODELS="$STATE/models" OLLAMA_HOST="127.0.0.1:$PORT" \
		OLLAMA_NOPRUNE=1 OLLAMA_KEEP_ALIVE="${OLLAMA_KEEP_ALIVE:-30m}" \
		OLLAMA_NUM_PARALLEL="${OLLAMA_NUM_PARALLEL:-1}" OLLAMA_MAX_LOADED_MODELS=2 "$@"
}

start() {
	build
	mkdir -p "$STATE/home" "$STATE/models"
	if [[ -f "$STATE/pid" ]] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
		log "already running (pid $(cat "$STATE/pid"))"
	else
		# The background subshell execs into the server, so $! is its pid.
		(server_env nohup "$BIN" serve) >>"$STATE/log" 2>&1 &
		echo $! >"$STATE/pid"
		log "started ollama (pid $!, $(url), log $STATE/log)"
	fi
	local deadline=$((SECONDS + ${OLLAMA_READY_TIMEOUT:-60}))
	until http_ok; do
		if ((SECONDS > deadline)); then
			log "$(url) not answering in time; last log lines:"
			tail -n 20 "$STATE/log" >&2 || true
			exit 1
		fi
		sleep 0.3
	done
	url
}

stop() {
	[[ -f "$STATE/pid" ]] || return 0
	local pid
	pid=$(cat "$STATE/pid")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 40); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.25
		done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
		log "stopped ollama (pid $pid)"
	fi
	rm -f "$STATE/pid"
}

models() {
	http_ok || { log "server not running: scripts/ollama.sh start first"; exit 1; }
	local src="$STATE/src"
	mkdir -p "$src"
	"$PY" "$HERE/tinymodels.py" text "$src/text"
	(server_env "$BIN" create imagescope-tiny-text -f "$src/text/Modelfile") >&2
	local vision=""
	if "$PY" "$HERE/tinymodels.py" vision "$src/vision" &&
		(server_env "$BIN" create imagescope-tiny-vision -f "$src/vision/Modelfile") >&2; then
		vision=imagescope-tiny-vision
	else
		log "the tiny vision model could not be made or imported (see above)"
	fi
	echo "text=imagescope-tiny-text vision=$vision"
}

cmd="${1:-}"
case "$cmd" in
build) build ;;
start) start ;;
models) models ;;
url) url ;;
stop) stop ;;
wipe) stop; rm -rf "$STATE" ;;
*)
	sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
