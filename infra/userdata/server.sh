#!/bin/bash
# k3s-autoscaler control-plane bootstrap (single K3s server).
# Image: Amazon Linux 2023 (aws cli v2 and curl are part of the AMI).
#
# Embedded VERBATIM as the Fn::Sub user-data of ServerInstance in
# infra/k3s-autoscaler.yaml; scripts/check-infra.sh fails when the two differ.
# Editing rules: dollar-brace references are CloudFormation substitutions and appear
# only in the block below (template parameters); shell variables are always written
# $name, never with braces, so Fn::Sub leaves them alone.
# Output goes to /var/log/cloud-init-output.log; no token is ever printed.
# Workers get the agent token (joins agents only), never the server token (which joins
# servers and decrypts the bootstrap data).
set -euo pipefail
umask 077
PATH="$PATH:/usr/local/bin:/usr/bin:/bin"

# shellcheck disable=SC2154 # CloudFormation parameters, filled in by Fn::Sub
{
  cluster_id="${ClusterId}"
  k3s_version="${K3sVersion}"
  install_sha256="${K3sInstallScriptSha256}"
  oidc_bucket="${OidcBucket}"
  oidc_host="${OidcBucket.RegionalDomainName}"
}
token_param="/k3s-autoscaler/$cluster_id/join-token"
url_param="/k3s-autoscaler/$cluster_id/server-url"
# Test seam only (infra/tests/test_userdata.py); unset on a real instance.
k3s_data_dir=$(printenv K3S_BOOTSTRAP_TEST_DATA_DIR || echo /var/lib/rancher/k3s)

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

# --- identity from IMDSv2 ---
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
private_ip=$(retry 10 2 imds local-ipv4)
# The public address the subnet maps at launch (IMDS answers 404 without one): the API
# server's certificate names it too, so a kubeconfig for https://<public-ip>:6443 verifies
# (docs/quickstart.md; ApiAccessCidr opens 6443 to the operator).
public_ip=$(imds public-ipv4 || echo "$private_ip")
log "server $instance_id ($instance_type) in $az, cluster $cluster_id, ip $private_ip, public $public_ip"

# --- pinned K3s server: installer from the release tag, binary checked by the installer ---
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

# --- agent token: joins agents only; kept beside the K3s data so a reboot reuses it ---
mkdir -p "$k3s_data_dir"
agent_token_file="$k3s_data_dir/agent-token.secret"
if [ ! -s "$agent_token_file" ]; then
  head -c 32 /dev/urandom | od -An -vtx1 | tr -d ' \n' >"$agent_token_file"
fi
chmod 600 "$agent_token_file"

# --disable-cloud-controller: the embedded k3s CCM would stamp
# node.kubernetes.io/instance-type=k3s over the labels set here; providerID comes from
# the kubelet flag (aws:///<az>/<instance-id>), as on the workers.
INSTALL_K3S_VERSION="$k3s_version" \
  INSTALL_K3S_SKIP_SELINUX_RPM=true INSTALL_K3S_SELINUX_WARN=true \
  sh "$workdir/install.sh" server \
  --node-name "$instance_id" \
  --node-ip "$private_ip" \
  --advertise-address "$private_ip" \
  --tls-san "$private_ip" \
  --tls-san "$public_ip" \
  --write-kubeconfig-mode 0600 \
  --secrets-encryption \
  --disable-cloud-controller \
  --agent-token-file "$agent_token_file" \
  "--kube-apiserver-arg=service-account-issuer=https://$oidc_host" \
  "--kube-apiserver-arg=service-account-issuer=https://kubernetes.default.svc.cluster.local" \
  "--kube-apiserver-arg=service-account-jwks-uri=https://$oidc_host/openid/v1/jwks" \
  "--kube-apiserver-arg=api-audiences=https://kubernetes.default.svc.cluster.local,k3s" \
  "--node-taint=node-role.kubernetes.io/control-plane=true:NoSchedule" \
  "--kubelet-arg=provider-id=aws:///$az/$instance_id" \
  "--node-label=topology.kubernetes.io/zone=$az" \
  "--node-label=node.kubernetes.io/instance-type=$instance_type"

# --- publish the join material for the workers: the agent token, never the server's ---
published_agent_token="$k3s_data_dir/server/agent-token"
server_token="$k3s_data_dir/server/token"
api_ready() {
  [ -s "$published_agent_token" ] && k3s kubectl get --raw /readyz >/dev/null 2>&1
}
retry 90 10 api_ready
# Without --agent-token K3s links agent-token to the server token: never publish that.
if [ "$(readlink -f "$published_agent_token")" = "$(readlink -f "$server_token")" ] ||
  cmp -s "$published_agent_token" "$server_token"; then
  log "server/agent-token is the server token; refusing to publish it"
  exit 1
fi
token_value="$workdir/join-token"
tr -d '\n' <"$published_agent_token" >"$token_value"
retry 10 6 aws ssm put-parameter --region "$region" --name "$token_param" \
  --type SecureString --overwrite --value "file://$token_value" >/dev/null
retry 10 6 aws ssm put-parameter --region "$region" --name "$url_param" \
  --type String --overwrite --value "https://$private_ip:6443" >/dev/null
log "k3s server $k3s_version ready; published $url_param and $token_param (agent token)"

# --- publish the service account issuer's discovery documents for STS ---
k3s kubectl get --raw /.well-known/openid-configuration >"$workdir/openid-configuration"
k3s kubectl get --raw /openid/v1/jwks >"$workdir/jwks"
retry 10 6 aws s3api put-object --region "$region" --bucket "$oidc_bucket" \
  --key .well-known/openid-configuration --content-type application/json \
  --body "$workdir/openid-configuration" >/dev/null
retry 10 6 aws s3api put-object --region "$region" --bucket "$oidc_bucket" \
  --key openid/v1/jwks --content-type application/json --body "$workdir/jwks" >/dev/null
log "published the OIDC discovery documents of https://$oidc_host"
