#!/usr/bin/env bash
# Deploys deploy/docker-compose.yml as a Docker Swarm stack on this host and checks it: a call,
# ghz at concurrency 8 for 10 s, and a second run during which one expert-1 replica is killed
# (swarm restarts it). Initialises a single-node swarm (advertised on 127.0.0.1) if this engine
# is not in one, and leaves it again afterwards; an existing swarm is used and kept.
#
#   deploy/swarm/smoke-test.sh [--port=50071] [--build-dir=build]
#
# Not part of ctest: swarm mode changes engine-wide state. Needs the moe-serving:latest and
# moe-prometheus:latest images (scripts/build-images), jq, and ghz (scripts/loadtest installs it).
set -euo pipefail
cd "$(dirname "$0")/../.."

port=50071
build_dir=${BUILD_DIR:-build}
for arg in "$@"; do
  case "$arg" in
    --port=*) port=${arg#*=} ;;
    --build-dir=*) build_dir=${arg#*=} ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "smoke-test: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done
export BUILD_DIR=$build_dir MOE_ROUTER_PORT=$port
log() { echo "swarm smoke-test: $*"; }

for image in "${MOE_IMAGE:-moe-serving:latest}" "${MOE_PROMETHEUS_IMAGE:-moe-prometheus:latest}"; do
  docker image inspect "$image" >/dev/null 2>&1 ||
    { log "image $image is missing; run scripts/build-images" >&2; exit 1; }
done

stack=moe-swarm-$$
initialised=0
had_gwbridge=0
docker network inspect docker_gwbridge >/dev/null 2>&1 && had_gwbridge=1
work=$(mktemp -d /tmp/moe-swarm.XXXXXX)
loadtest=

cleanup() {
  local code=$?
  trap - EXIT INT TERM
  if [[ -n $loadtest ]]; then kill "$loadtest" 2>/dev/null || true; wait "$loadtest" 2>/dev/null || true; fi
  if docker stack ls --format '{{.Name}}' 2>/dev/null | grep -qx "$stack"; then
    docker stack rm "$stack" >/dev/null || true
    for _ in $(seq 1 60); do
      [[ -z $(docker ps -aq --filter "label=com.docker.stack.namespace=$stack") ]] &&
        ! docker network inspect "${stack}_default" >/dev/null 2>&1 && break
      sleep 1
    done
  fi
  if ((initialised)); then
    docker swarm leave --force >/dev/null && log "left the swarm this test initialised"
    if ((!had_gwbridge)); then docker network rm docker_gwbridge >/dev/null 2>&1 || true; fi
  fi
  rm -rf "$work"
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

state=$(docker info -f '{{.Swarm.LocalNodeState}}')
if [[ $state == inactive ]]; then
  log "initialising a single-node swarm on 127.0.0.1"
  docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377 >/dev/null
  initialised=1
elif [[ $(docker info -f '{{.Swarm.ControlAvailable}}') != true ]]; then
  log "this engine is in a swarm ($state) but not a manager; run on a manager" >&2
  exit 1
fi

log "docker stack deploy $stack (router published on port $port, host mode)"
docker stack deploy -c deploy/docker-compose.yml -c deploy/swarm/host-port.yml "$stack" 2>&1 |
  grep -vE 'could not be accessed on a registry|independently|different nodes|versions of the image|^$' || true

router=127.0.0.1:$port
for i in $(seq 1 90); do
  if "$build_dir/tools/moe_client" --router="$router" --tokens=4 --deadline_ms=2000 \
    >"$work/client.log" 2>&1; then
    break
  fi
  if ((i == 90)); then
    docker stack ps "$stack" --no-trunc >&2
    log "the stack's router did not answer in 90 s: $(tail -n 1 "$work/client.log")" >&2
    exit 1
  fi
  sleep 1
done
docker stack services "$stack"
sed -n '1,2p' "$work/client.log"

errors_of() {  # ghz.json -> non-OK calls
  jq '[.statusCodeDistribution // {} | to_entries[] | select(.key != "OK") | .value] | add // 0' "$1"
}
scripts/loadtest --target="$router" --concurrency=8 --duration=10s --out="$work/ghz"
errors=$(errors_of "$work/ghz/ghz.json")
((errors == 0)) || { log "FAILED: $errors errors in the first ghz run" >&2; exit 1; }
scripts/loadtest --target="$router" --concurrency=8 --duration=10s --out="$work/ghz-kill" &
loadtest=$!
sleep 3
victim=$(docker ps -q --filter "label=com.docker.stack.namespace=$stack" \
  --filter "label=com.docker.swarm.service.name=${stack}_expert-1" | head -n 1)
[[ -n $victim ]] || { log "FAILED: no running expert-1 replica to kill" >&2; exit 1; }
docker kill "$victim" >/dev/null
log "killed expert-1 replica $victim during the second run"
wait "$loadtest"
loadtest=
errors=$(errors_of "$work/ghz-kill/ghz.json")
log "KILLED REPLICA RESULT: $errors errors of $(jq .count "$work/ghz-kill/ghz.json") calls"
sleep 5
docker stack ps "$stack" --format '{{.Name}} {{.CurrentState}} {{.Error}}'
log "PASSED"
