#!/usr/bin/env bash
# Every piperd route with curl. Writes piperd-hello.wav and piperd-stream.wav
# into the current folder.
#
#   examples/curl.sh                       # server at http://127.0.0.1:5050
#   PIPERD_URL=http://host:5050 PIPERD_API_KEY=secret examples/curl.sh
#
# Uses jq to pretty-print JSON when it is installed, and prints it raw otherwise.
# Stops at the first failing request (set -e), after printing its error.
set -euo pipefail

URL="${PIPERD_URL:-http://127.0.0.1:5050}"
VOICE="${PIPERD_VOICE:-en_US-joe-medium}"
# A server started with PIPER_API_KEYS wants a key on the /api/ routes.
AUTH=()
if [[ -n ${PIPERD_API_KEY:-} ]]; then
  AUTH=(-H "Authorization: Bearer $PIPERD_API_KEY")
fi
BODY="$(mktemp)"
trap 'rm -f "$BODY"' EXIT

# call METHOD PATH OUTFILE [curl args...]
# Runs one request with the body going to OUTFILE. On a non-2xx answer, prints
# piperd's JSON error ({"error": ..., "code": ...}) as one readable line,
# removes OUTFILE (it holds that JSON, not audio) and returns 1. OUTFILE must
# be a regular file: the error is read back from it.
call() {
  local method=$1 path=$2 out=$3 status
  shift 3
  # -sS: no progress meter, but still report connection failures.
  # -w '%{http_code}': print the status, since -f would hide the error body.
  # On a connection failure curl has already said why on stderr.
  status=$(curl -sS -X "$method" -o "$out" -w '%{http_code}' \
    ${AUTH[@]+"${AUTH[@]}"} "$@" "$URL$path") || return 1
  if [[ $status == 2* ]]; then
    return 0
  fi
  if command -v jq >/dev/null && jq -e . "$out" >/dev/null 2>&1; then
    echo "error $status: $(jq -r '"\(.error) (\(.code))"' "$out")" >&2
  else
    echo "error $status: $(cat "$out")" >&2
  fi
  rm -f -- "$out"
  return 1
}

# Prints a JSON file, pretty when jq is there.
show() {
  if command -v jq >/dev/null; then jq . "$1"; else cat "$1"; echo; fi
}

echo "== GET /health: 200 when ready, 503 when the engine cannot run or the server drains"
call GET /health "$BODY"
show "$BODY"

echo "== GET /api/voices"
call GET /api/voices "$BODY"
show "$BODY"

echo "== POST /api/warmup: loads the voice now, so the first real request is fast"
call POST /api/warmup "$BODY" -H 'Content-Type: application/json' \
  -d "{\"voice_model\": \"$VOICE\"}"
show "$BODY"

# --retry 3 retries 503s (server busy or restarting), waiting as long as the
# Retry-After header says; curl also retries 502 and 504, which is usually
# what you want for a one-off synthesis.
echo "== POST /api/tts: one complete WAV with exact sizes"
call POST /api/tts piperd-hello.wav --retry 3 -H 'Content-Type: application/json' \
  -d "{\"text\": \"Hello from piperd.\", \"voice_model\": \"$VOICE\"}"
echo "wrote piperd-hello.wav ($(wc -c <piperd-hello.wav) bytes)"

# -N turns off curl's buffering so each sentence comes out as soon as it is
# made; that matters when piping into a player, e.g.
#   curl -sN -X POST "$URL/api/tts" -d '{"text": "...", "stream": true}' | aplay
# The streamed WAV header has RIFF and data sizes 0xFFFFFFFF ("unknown"):
# players accept it, but tools that trust the sizes need them fixed up
# (see examples/stream.rs).
echo "== POST /api/tts with \"stream\": true: audio as it is synthesized"
call POST /api/tts piperd-stream.wav -N --retry 3 -H 'Content-Type: application/json' \
  -d "{\"text\": \"This is streamed. Each sentence is sent when it is ready.\", \"voice_model\": \"$VOICE\", \"stream\": true}"
echo "wrote piperd-stream.wav ($(wc -c <piperd-stream.wav) bytes)"

echo "== GET /metrics: Prometheus text (the piperd_ lines, shortened)"
call GET /metrics "$BODY"
grep -m 15 '^piperd_' "$BODY"

echo "== An error, to show what one looks like (unknown voice)"
call POST /api/tts "$BODY" -d '{"text": "Hi.", "voice_model": "no-such-voice"}' ||
  echo "(expected)"
