#!/bin/sh
# The one way featviz-server is started, in a container and outside one (the loopback tests run
# this very script). Container defaults below; FEATVIZ_* variables and extra flags override them.
set -eu
: "${FEATVIZ_HOST:=0.0.0.0}" "${FEATVIZ_PORT:=50051}" "${FEATVIZ_METRICS_PORT:=9090}"
export FEATVIZ_HOST FEATVIZ_PORT FEATVIZ_METRICS_PORT
exec featviz-server serve "$@"
