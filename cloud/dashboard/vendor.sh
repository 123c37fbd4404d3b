#!/bin/sh
# Reproduce cloud/fleet_cloud/static/vendor/ from the pinned npm packages.
#
# The copied files are committed, so installing or running the cloud package
# never needs npm or the internet; run this only to check or bump a version
# (edit package.json, `npm install --package-lock-only`, then ./vendor.sh).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
dest="$here/../fleet_cloud/static/vendor"

cd "$here"
npm ci --ignore-scripts --no-audit --no-fund

src="$here/node_modules/leaflet"
out="$dest/leaflet"
rm -rf "$out"
mkdir -p "$out/images"
cp "$src/dist/leaflet.js" "$src/dist/leaflet.js.map" "$src/dist/leaflet.css" "$out/"
cp "$src/dist/images/"*.png "$out/images/"
cp "$src/LICENSE" "$out/LICENSE"
version=$(node -p "require('$src/package.json').version")
echo "leaflet $version" > "$out/VERSION"
echo "vendored leaflet $version into $out"
