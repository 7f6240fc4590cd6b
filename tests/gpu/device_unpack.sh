#!/bin/bash
# On the device machine: reassemble the blobs the pack calls left in /tmp/stash (tests/gpu/device_plan.py).
# Usage: device_unpack.sh BLOB... (the blobs whose pieces are all there); each is unpacked, then its pieces removed.
set -euo pipefail
S=/tmp/stash
mkdir -p /tmp/trt /tmp/trtpy /tmp/site /tmp/shared
want=" $* "
have() { [[ "$want" == *" $1 "* ]] && compgen -G "$S/$1.[0-9][0-9][0-9]" >/dev/null; }
join() { cat $(ls "$S"/"$1".[0-9][0-9][0-9] | sort); }
unxz() { if command -v xz >/dev/null; then xz -dc; else python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)'; fi; }
if have trt; then join trt > /tmp/trt/part_0; rm -f "$S"/trt.[0-9]*; fi  # setup.sh joins /tmp/trt/part_* and checks the sha256
if have trtpy; then join trtpy | tar -x -C /tmp/trtpy; chmod -R u+w /tmp/trtpy; rm -f "$S"/trtpy.[0-9]*; fi
if have assets; then join assets | tar -x -C /tmp/shared; rm -f "$S"/assets.[0-9]*; fi
if have whl; then
    mkdir -p "$S/whl" && join whl | tar -x -C "$S/whl" && rm -f "$S"/whl.[0-9]*
    if compgen -G "$S/whl/*.whl" >/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$S"/whl/*.whl
    fi
fi
if have engines; then mkdir -p /tmp/trtkit-gpu-engines && join engines | tar -x -C /tmp/trtkit-gpu-engines; rm -f "$S"/engines.[0-9]*; fi
if have ort; then join ort | unxz | tar -x -C /tmp/site; rm -f "$S"/ort.[0-9]*; fi
echo "unpacked: $(ls /tmp/site | tr '\n' ' ')"
