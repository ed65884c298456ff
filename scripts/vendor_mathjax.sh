#!/usr/bin/env bash
# Refresh the vendored MathJax 3 in _extra/mathjax from the npm registry.
set -euo pipefail
version="${1:-3.2.2}"
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack "mathjax@${version}" >/dev/null && tar xzf "mathjax-${version}.tgz")
dest="$root/_extra/mathjax"
rm -rf "$dest/tex-chtml-full.js" "$dest/output"
mkdir -p "$dest/output/chtml/fonts"
cp "$tmp/package/es5/tex-chtml-full.js" "$dest/"
cp -r "$tmp/package/es5/output/chtml/fonts/woff-v2" "$dest/output/chtml/fonts/"
cp "$tmp/package/LICENSE" "$dest/LICENSE"
sed -i "s/MathJax [0-9.]*, copied/MathJax ${version}, copied/; s/mathjax@[0-9.]*/mathjax@${version}/" "$dest/README.md"
echo "vendored MathJax ${version} into $dest"
