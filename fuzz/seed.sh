#!/usr/bin/env bash
# Builds the seed corpora of the fuzz targets from the test fixtures (fuzz/corpus/<target>/).
# Each target reads one or two header bytes before its input (see the targets); every
# fixture is seeded with a few header values.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
fx=../tests/fixtures
rm -rf corpus
mkdir -p corpus/{sse_decoder,stream_observers,request_parsers,mcp_editors}

seed() { # seed TARGET NAME HEADER-BYTES(octal escapes) FILE
    { printf "$3"; cat "$4"; } > "corpus/$1/$2"
}

api_of_sse() { # 0 messages, 1 chat, 2 responses
    case "$1" in
        */anthropic/*|*/anthropic_*) echo 0 ;;
        */responses*|*/codex*|*/openai_responses*) echo 2 ;;
        *) echo 1 ;;
    esac
}

n=0
for f in "$fx"/anthropic/*.sse "$fx"/openai/*.sse "$fx"/sse/anthropic_messages.sse \
         "$fx"/sse/openai_chat.sse "$fx"/sse/openai_responses.sse; do
    n=$((n + 1))
    a=$(api_of_sse "$f")
    seed sse_decoder "$n-a" '\007' "$f"
    seed sse_decoder "$n-b" '\277' "$f"
    # flags: api | 4 (MCP view) | 8 (streaming) | 16 (client asked for usage); then a chunk size
    seed stream_observers "$n-plain" "\\00$a\\020" "$f"
    seed stream_observers "$n-mcp" "\\0$((4 + a))\\003" "$f"
    seed stream_observers "$n-stream" "\\01$a\\177" "$f"
done
for f in "$fx"/clients/*.body.json "$fx"/anthropic/*.upstream.json "$fx"/openai/*.json \
         "$fx"/anthropic/requests/*; do
    [[ -f "$f" ]] || continue
    n=$((n + 1))
    for a in 0 1 2; do
        seed request_parsers "$n-$a" "\\00$a" "$f"
        seed mcp_editors "$n-$a-tools" "\\00$((4 + a))" "$f"
        seed mcp_editors "$n-$a-turns-sum" "\\1$((1 + a))$((4 + a))" "$f"
    done
done
# Inputs that once crashed a target (kept so every run replays them first).
for d in regressions/*/; do
    t=$(basename "$d")
    cp "$d"* "corpus/$t/"
done
for t in corpus/*; do
    echo "$t: $(ls "$t" | wc -l) seeds"
done
