#!/usr/bin/env bash
# Runs etcd v3.7.3's conformance suite (go.etcd.io/etcd/tests/v3/common, the
# e2e flavour) with basalt as `etcd` (README.md here).
#
#   scripts/conformance/run.sh [RUN_REGEX] [test binary args...]
#   scripts/conformance/run.sh 'TestKVPut/^NoTLS$'
#   scripts/conformance/run.sh --prepare      # build the folder, print its path
#
# Builds once, from the Go module proxy, into CONFORMANCE_DIR (default
# ${TMPDIR:-/tmp}/basalt-conformance-v3.7.3, outside the repository):
# bin/etcdctl and bin/etcdutl v3.7.3, mod/ (a module requiring
# go.etcd.io/etcd/tests/v3 v3.7.3), common.test and fixtures/. Each run builds
# basalt from this checkout (or takes BASALT_BIN) as etcd into a per-run bin
# folder next to links to those tools, and runs the suite from a work/ folder
# because the framework finds its certificates as ../fixtures.
#
# The suite listens on fixed ports 20000+, so runs take /tmp/conformance.lock
# machine-wide. RUN_REGEX defaults to '/^NoTLS$' (every test, its one-member
# case without TLS). Env: TIMEOUT (default 20m), OUT (log, default
# CONFORMANCE_DIR/last-run.log), CONFORMANCE_TEST_BIN (another test binary
# built in mod/, as scripts/conformance3.sh does). Exits non-zero when a test
# fails or when no test ran.
set -euo pipefail

etcd_version=v3.7.3
lock=/tmp/conformance.lock
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dir=${CONFORMANCE_DIR:-${TMPDIR:-/tmp}/basalt-conformance-$etcd_version}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
case "$dir/" in
"$root"/*)
	echo "run.sh: CONFORMANCE_DIR must be outside the repository" >&2
	exit 2
	;;
esac

# Temporary modules only: their go.mod and go.sum are written here, never the
# repository's.
gomod() {
	GOWORK=off GOFLAGS=-mod=mod go "$@"
}

build_etcdctl() {
	rm -rf "$dir/src/etcdctl"
	mkdir -p "$dir/src/etcdctl"
	cat >"$dir/src/etcdctl/main.go" <<'GO'
// Command etcdctl is etcd's client, built for etcd's conformance suite.
package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() { ctlv3.MustStart() }
GO
	(
		cd "$dir/src/etcdctl"
		gomod mod init conformance.local/etcdctl
		gomod get "go.etcd.io/etcd/etcdctl/v3@$etcd_version"
		gomod mod tidy
		gomod build -o "$dir/bin/etcdctl.tmp" .
	)
	mv "$dir/bin/etcdctl.tmp" "$dir/bin/etcdctl"
}

# etcdutl's main package is its module root, and its go.mod replaces etcd's
# other modules with ../ folders of etcd's repository, so it cannot be built as
# a dependency: build a copy with the replace block dropped.
build_etcdutl() {
	local src
	src=$(cd "$dir" && GOWORK=off go mod download -json "go.etcd.io/etcd/etcdutl/v3@$etcd_version" |
		sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
	[[ -d "$src" ]] || {
		echo "run.sh: go mod download gave no folder for etcdutl" >&2
		exit 2
	}
	rm -rf "$dir/src/etcdutl"
	mkdir -p "$dir/src"
	cp -R "$src" "$dir/src/etcdutl"
	chmod -R u+w "$dir/src/etcdutl"
	(
		cd "$dir/src/etcdutl"
		awk '/^replace \($/ { skip = 1; next } skip && /^\)$/ { skip = 0; next } !skip && !/^replace /' go.mod >go.mod.new
		mv go.mod.new go.mod
		gomod mod edit -toolchain=none
		if gomod mod edit -json | grep -q '"Replace": \[$'; then
			echo "run.sh: etcdutl's go.mod still has replace directives" >&2
			exit 2
		fi
		gomod mod tidy
		gomod build -o "$dir/bin/etcdutl.tmp" .
	)
	mv "$dir/bin/etcdutl.tmp" "$dir/bin/etcdutl"
}

build_suite() {
	mkdir -p "$dir/mod"
	cat >"$dir/mod/deps.go" <<'GO'
//go:build tools

// Package deps pins etcd's conformance suite, which `go test -c` builds from
// the module cache.
package deps

import (
	_ "go.etcd.io/etcd/tests/v3/common"
	_ "go.etcd.io/etcd/tests/v3/framework/e2e"
)
GO
	(
		cd "$dir/mod"
		[[ -f go.mod ]] || gomod mod init conformance.local/suite
		gomod get "go.etcd.io/etcd/tests/v3@$etcd_version"
		gomod mod tidy
		gomod test -c -tags e2e -o "$dir/common.test.tmp" go.etcd.io/etcd/tests/v3/common
	)
	mv "$dir/common.test.tmp" "$dir/common.test"
}

copy_fixtures() {
	local src
	src=$(cd "$dir/mod" && gomod list -m -f '{{.Dir}}' go.etcd.io/etcd/tests/v3)/fixtures
	rm -rf "$dir/fixtures.tmp"
	cp -R "$src" "$dir/fixtures.tmp"
	chmod -R u+w "$dir/fixtures.tmp"
	rm -rf "$dir/fixtures"
	mv "$dir/fixtures.tmp" "$dir/fixtures"
}

prepare() {
	exec 8>>"$dir/.prepare.lock"
	flock 8
	mkdir -p "$dir/bin"
	if [[ ! -x "$dir/bin/etcdctl" ]]; then
		echo "run.sh: building etcdctl $etcd_version into $dir/bin" >&2
		build_etcdctl
	fi
	if [[ ! -x "$dir/bin/etcdutl" ]]; then
		echo "run.sh: building etcdutl $etcd_version into $dir/bin" >&2
		build_etcdutl
	fi
	if [[ ! -x "$dir/common.test" ]]; then
		echo "run.sh: building the suite into $dir/common.test" >&2
		build_suite
	fi
	if [[ ! -f "$dir/fixtures/ca.crt" ]]; then
		copy_fixtures
	fi
	exec 8>&-
}

prepare
if [[ "${1:-}" == --prepare ]]; then
	echo "$dir"
	exit 0
fi

run_re=${1:-'/^NoTLS$'}
[[ $# -gt 0 ]] && shift
testbin=${CONFORMANCE_TEST_BIN:-$dir/common.test}
out=${OUT:-$dir/last-run.log}

rundir=$(mktemp -d "$dir/run.XXXXXX")
trap 'rm -rf "$rundir"' EXIT
mkdir -p "$rundir/bin" "$rundir/work"
ln -s "$dir/bin/etcdctl" "$dir/bin/etcdutl" "$rundir/bin/"
ln -s "$dir/fixtures" "$rundir/fixtures"
if [[ -n "${BASALT_BIN:-}" ]]; then
	ln -s "$(cd "$(dirname "$BASALT_BIN")" && pwd)/$(basename "$BASALT_BIN")" "$rundir/bin/etcd"
else
	(cd "$root" && go build -o "$rundir/bin/etcd" .)
fi

exec 9>>"$lock"
if ! flock -n 9; then
	echo "run.sh: waiting for $lock (another conformance run holds ports 20000+)" >&2
	flock 9
fi
echo "run.sh: $(basename "$testbin") -test.run '$run_re' (log: $out)" >&2
rc=0
(cd "$rundir/work" && exec "$testbin" -test.v -test.timeout "${TIMEOUT:-20m}" -test.run "$run_re" \
	-bin-dir="$rundir/bin" -cert-dir="$rundir/fixtures" "$@" >"$out" 2>&1 9>&-) || rc=$?
exec 9>&-

# Result lines look like "--- PASS: TestKVPut/NoTLS (1.23s)", indented four
# spaces per level of nesting (names may themselves contain "/").
awk '
	match($0, /^ *--- (PASS|FAIL|SKIP): [^ ]+/) {
		line = substr($0, RSTART, RLENGTH); ind = match(line, /---/) - 1
		split(substr(line, ind + 5), a, ": "); st = a[1]; name = a[2]
		split(name, parts, "/"); top = parts[1]
		lvl = ind / 4 + 1
		if (lvl == 1) { topst[top] = st; if (!(top in seen)) { seen[top] = 1; order[++k] = top }; tot[st]++ }
		else { sub_[top, st]++; if (lvl == 2) subtot[st]++ }
		all[st]++
	}
	END {
		printf "%-50s %-5s %s\n", "TOP-LEVEL TEST", "RES", "all nested subtests (PASS/FAIL/SKIP)"
		for (i = 1; i <= k; i++) { t = order[i]
			printf "%-50s %-5s %d/%d/%d\n", t, topst[t], sub_[t,"PASS"], sub_[t,"FAIL"], sub_[t,"SKIP"] }
		printf "\ntop-level: PASS=%d FAIL=%d SKIP=%d\n", tot["PASS"], tot["FAIL"], tot["SKIP"]
		printf "subtests (level 2): PASS=%d FAIL=%d SKIP=%d\n", subtot["PASS"], subtot["FAIL"], subtot["SKIP"]
		printf "all levels (tests+subtests): PASS=%d FAIL=%d SKIP=%d\n", all["PASS"], all["FAIL"], all["SKIP"]
		printf "%d passed, %d failed, %d skipped\n", tot["PASS"], tot["FAIL"], tot["SKIP"]
	}' "$out"
{ grep -E '^(ok|FAIL|PASS)$|^panic:|test timed out' "$out" || true; } | tail -n 3
if [[ $rc -eq 0 ]] && ! grep -qE '^--- (PASS|FAIL|SKIP): ' "$out"; then
	echo "run.sh: no test matched '$run_re'" >&2
	rc=1
fi
echo "exit code: $rc"
exit "$rc"
