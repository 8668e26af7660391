#!/bin/bash
# k3s-autoscaler worker bootstrap: the node identity contract (shared DESIGN.md).
# Image: Amazon Linux 2023 (aws cli v2 and curl are part of the AMI).
#
# Embedded VERBATIM as the Fn::Sub user-data of WorkerLaunchTemplate in
# infra/k3s-autoscaler.yaml; scripts/check-infra.sh fails when the two differ.
# Editing rules: dollar-brace references are CloudFormation substitutions and appear
# only in the block below (template parameters); shell variables are always written
# $name, never with braces, so Fn::Sub leaves them alone.
# Output goes to /var/log/cloud-init-output.log; the join (agent) token is never printed.
set -euo pipefail
umask 077
PATH="$PATH:/usr/local/bin:/usr/bin:/bin"

# shellcheck disable=SC2154 # CloudFormation parameters, filled in by Fn::Sub
{
  cluster_id="${ClusterId}"
  pool="${PoolName}"
  k3s_version="${K3sVersion}"
  install_sha256="${K3sInstallScriptSha256}"
}
token_param="/k3s-autoscaler/$cluster_id/join-token"
url_param="/k3s-autoscaler/$cluster_id/server-url"

log() { echo "k3s-autoscaler-bootstrap: $*" >&2; }

# retry ATTEMPTS DELAY_SECONDS COMMAND...
retry() {
  local attempts=$1 delay=$2 n=1
  shift 2
  until "$@"; do
    if [ "$n" -ge "$attempts" ]; then
      log "giving up after $n attempts: $1"
      return 1
    fi
    n=$((n + 1))
    sleep "$delay"
  done
}

# --- identity from IMDSv2 (the launch template requires tokens) ---
imds_url=http://169.254.169.254/latest
imds_token=""
imds_login() {
  imds_token=$(curl -fsS -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 21600" "$imds_url/api/token")
}
imds() {
  curl -fsS -H "X-aws-ec2-metadata-token: $imds_token" "$imds_url/meta-data/$1"
}
retry 30 2 imds_login
instance_id=$(retry 10 2 imds instance-id)
az=$(retry 10 2 imds placement/availability-zone)
region=$(retry 10 2 imds placement/region)
instance_type=$(retry 10 2 imds instance-type)
lifecycle=$(retry 10 2 imds instance-life-cycle)
case "$lifecycle" in
  spot) capacity_type=spot ;;
  *) capacity_type=on-demand ;;
esac
log "instance $instance_id ($instance_type, $capacity_type) in $az, cluster $cluster_id, pool $pool"

# --- join material from SSM, read with the instance role (wait for the server) ---
server_url=""
join_token=""
read_server_url() {
  server_url=$(aws ssm get-parameter --region "$region" --name "$url_param" \
    --query Parameter.Value --output text) || return 1
  case "$server_url" in
    https://*) return 0 ;;
    *) return 1 ;;
  esac
}
read_join_token() {
  join_token=$(aws ssm get-parameter --region "$region" --name "$token_param" \
    --with-decryption --query Parameter.Value --output text) || return 1
  [ -n "$join_token" ]
}
retry 120 10 read_server_url
retry 120 10 read_join_token
log "server $server_url"

# --- pinned K3s: installer from the release tag, binary checked by the installer ---
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
version_ref=$(printf '%s' "$k3s_version" | sed 's/+/%2B/g')
retry 10 6 curl -fsSL -o "$workdir/install.sh" \
  "https://raw.githubusercontent.com/k3s-io/k3s/$version_ref/install.sh"
if [ -z "$install_sha256" ]; then
  log "no installer checksum (K3sInstallScriptSha256): refusing to run an unverified installer"
  exit 1
fi
echo "$install_sha256  $workdir/install.sh" | sha256sum -c -

K3S_URL="$server_url" K3S_TOKEN="$join_token" \
  INSTALL_K3S_VERSION="$k3s_version" \
  INSTALL_K3S_SKIP_SELINUX_RPM=true INSTALL_K3S_SELINUX_WARN=true \
  sh "$workdir/install.sh" agent \
  --node-name "$instance_id" \
  "--kubelet-arg=provider-id=aws:///$az/$instance_id" \
  "--node-label=k3s-autoscaler/pool=$pool" \
  "--node-label=k3s-autoscaler/managed=true" \
  "--node-label=k3s-autoscaler/capacity-type=$capacity_type" \
  "--node-label=topology.kubernetes.io/zone=$az" \
  "--node-label=node.kubernetes.io/instance-type=$instance_type"
log "k3s agent $k3s_version installed"
