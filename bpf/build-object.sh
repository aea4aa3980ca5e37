#!/bin/sh
# Compiles the XDP program ahead of time and wraps the object in a Swift source
# file, so the portcullis binary carries its own data plane and never compiles
# anything at run time.
#   build-object.sh CLANG OBJECT_OUT [SWIFT_OUT]
set -eu
clang=$1 object=$2 swift_out=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
multiarch=$(gcc -print-multiarch 2>/dev/null || echo "$(uname -m)-linux-gnu")

if [ ! -f /usr/include/bpf/bpf_helpers.h ]; then
    echo "error: /usr/include/bpf/bpf_helpers.h is missing; install libbpf-dev (apt-get install libbpf-dev)" >&2
    exit 1
fi
if [ ! -f /usr/include/xdp/xdp_helpers.h ]; then
    echo "error: /usr/include/xdp/xdp_helpers.h is missing; install libxdp-dev (apt-get install libxdp-dev)" >&2
    exit 1
fi

"$clang" -O2 -g -Wall -Werror -target bpf -mcpu=v3 \
    -I "$here" -I "/usr/include/$multiarch" \
    -c "$here/portcullis.bpf.c" -o "$object"

[ -n "$swift_out" ] || exit 0
{
    echo "// Generated at build time from bpf/portcullis.bpf.c by bpf/build-object.sh. Do not edit."
    echo "enum EmbeddedBPFObject {"
    printf '    static let base64 = "'
    base64 -w0 "$object"
    echo '"'
    echo "}"
} > "$swift_out.tmp"
mv "$swift_out.tmp" "$swift_out"
