#!/usr/bin/env bash
# Prints the path of a working Python interpreter of version $1 (e.g. 3.11):
# first from PATH, then from pyenv's versions. Exits 1 with a message if none runs.
set -u
want="$1"
candidates=("python$want")
if command -v pyenv >/dev/null 2>&1; then
  for dir in "$(pyenv root)"/versions/"$want".*; do
    candidates+=("$dir/bin/python$want")
  done
fi
for candidate in "${candidates[@]}"; do
  path=$(command -v "$candidate" 2>/dev/null) || continue
  # pyenv shims exist for every installed version but only run the active ones.
  if "$path" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$want'.split('.')))" 2>/dev/null; then
    "$path" -c 'import sys; print(sys.executable)'
    exit 0
  fi
done
echo "no working Python $want found on PATH or under pyenv; set PYTHON${want/./}=/path/to/python$want" >&2
exit 1
