#!/usr/bin/env bash
# `cmake --install` into a temporary prefix, move the prefix, and run the installed llmft from
# another folder on commands that need its data: it must use PREFIX/share/llmft (not the source
# tree it was built from), and $LLMFT_DATA_DIR must still override that.
# Usage: check_install.sh CMAKE BUILD_DIR
set -euo pipefail
cmake_cmd=$1
build=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$cmake_cmd" --install "$build" --prefix "$tmp/first" --strip >/dev/null
mv "$tmp/first" "$tmp/prefix"  # the prefix is relocatable
p=$tmp/prefix
[[ -x $p/bin/llmft ]] || fail "no $p/bin/llmft"
for f in gpt2/encoder.json gpt2/vocab.bpe instruction-data.json \
         instruction-data-with-preference.json SOURCES.md; do
  [[ -f $p/share/llmft/$f ]] || fail "not installed: share/llmft/$f"
done

mkdir "$tmp/elsewhere"
cd "$tmp/elsewhere"
unset LLMFT_DATA_DIR
out=$("$p/bin/llmft" tokenize "Hello world")
[[ $out == "[15496,995]" ]] || fail "tokenize printed '$out'"
out=$("$p/bin/llmft" data stats "$p/share/llmft/instruction-data.json")
grep -q "1100" <<<"$out" || fail "data stats did not count 1100 entries: $out"

# The installed data is what it reads: without its vocabulary it names the installed file.
mv "$p/share/llmft/gpt2/encoder.json" "$tmp/encoder.json"
if err=$("$p/bin/llmft" tokenize "Hello world" 2>&1); then fail "tokenize worked without its data"; fi
grep -qF "$p/share/llmft/gpt2" <<<"$err" || fail "error does not name the installed folder: $err"

# $LLMFT_DATA_DIR overrides the installed folder.
mkdir -p "$tmp/data/gpt2"
mv "$tmp/encoder.json" "$tmp/data/gpt2/encoder.json"
cp "$p/share/llmft/gpt2/vocab.bpe" "$tmp/data/gpt2/"
out=$(LLMFT_DATA_DIR=$tmp/data "$p/bin/llmft" tokenize "Hello world")
[[ $out == "[15496,995]" ]] || fail "tokenize with LLMFT_DATA_DIR printed '$out'"
echo "installed llmft works from $p"
