#!/bin/sh
# The one way featviz-server is started, in a container and outside one. Where a container's
# defaults differ from the server's, they are set below; FEATVIZ_* variables and extra flags
# override them.
set -eu
: "${FEATVIZ_HOST:=0.0.0.0}" "${FEATVIZ_METRICS_PORT:=9090}"
export FEATVIZ_HOST FEATVIZ_METRICS_PORT
exec featviz-server serve "$@"
