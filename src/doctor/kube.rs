//! The Kubernetes checks: the API server answers, and every verb the service uses is allowed
//! to its identity (one SelfSubjectAccessReview each, as `kubectl auth can-i` does).

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

use super::Check;
use crate::config::Config;

/// What the service does in the Kubernetes API (`deploy/base/rbac.yaml` grants exactly
/// this): (API group, resource, subresource, verb, namespace).
pub const ACCESS: &[(&str, &str, &str, &str, &str)] = &[
    ("", "nodes", "", "list", ""),
    ("", "nodes", "", "watch", ""),
    ("", "nodes", "", "patch", ""),
    ("", "nodes", "", "delete", ""),
    ("", "pods", "", "list", ""),
    ("", "pods", "", "watch", ""),
    ("", "pods", "eviction", "create", ""),
    ("policy", "poddisruptionbudgets", "", "list", ""),
    ("policy", "poddisruptionbudgets", "", "watch", ""),
    ("", "persistentvolumeclaims", "", "list", ""),
    ("", "persistentvolumeclaims", "", "watch", ""),
    ("", "persistentvolumes", "", "list", ""),
    ("", "persistentvolumes", "", "watch", ""),
    ("events.k8s.io", "events", "", "create", "default"),
    ("events.k8s.io", "events", "", "patch", "default"),
];

pub(super) async fn checks(config: &Config) -> Vec<Check> {
    let name = "Kubernetes API";
    let timeout = config.aws.call_timeout;
    let client = match crate::adapters::kube::client(config.kubernetes.kubeconfig.as_deref(), timeout).await {
        Ok(client) => client,
        Err(e) => {
            return vec![Check::fail(
                name,
                format!("no usable kubeconfig: {e}"),
                "set kubernetes.kubeconfig (or KUBECONFIG), or run in the cluster with the autoscaler's ServiceAccount",
            )];
        }
    };
    let version = match client.apiserver_version().await {
        Ok(info) => info.git_version,
        Err(e) => {
            return vec![Check::fail(
                name,
                format!("not reachable: {}", crate::core::text::bounded(&e.to_string(), 300)),
                "check the server URL in the kubeconfig and the network path to port 6443",
            )];
        }
    };
    let mut checks = vec![Check::pass(name, format!("reachable, {version}"))];
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client);
    let mut denied = Vec::new();
    for (group, resource, subresource, verb, namespace) in ACCESS {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(group.to_string()),
                    resource: Some(resource.to_string()),
                    subresource: (!subresource.is_empty()).then(|| subresource.to_string()),
                    verb: Some(verb.to_string()),
                    namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let what = access_name(group, resource, subresource, verb, namespace);
        match reviews.create(&PostParams::default(), &review).await {
            Ok(answer) if answer.status.as_ref().is_some_and(|s| s.allowed) => {}
            Ok(_) => denied.push(what),
            Err(e) => denied
                .push(format!("{what} (review failed: {})", crate::core::text::bounded(&e.to_string(), 200))),
        }
    }
    checks.push(access_verdict(&denied));
    checks
}

fn access_name(group: &str, resource: &str, subresource: &str, verb: &str, namespace: &str) -> String {
    let resource =
        if subresource.is_empty() { resource.to_string() } else { format!("{resource}/{subresource}") };
    let resource = if group.is_empty() { resource } else { format!("{resource}.{group}") };
    let scope = if namespace.is_empty() { String::new() } else { format!(" in {namespace}") };
    format!("{verb} {resource}{scope}")
}

/// Every verb of [`ACCESS`] allowed, or the denied ones named.
fn access_verdict(denied: &[String]) -> Check {
    let name = "Kubernetes permissions";
    if denied.is_empty() {
        Check::pass(name, format!("all {} verbs the service uses are allowed", ACCESS.len()))
    } else {
        Check::fail(
            name,
            format!("denied: {}", denied.join(", ")),
            "apply deploy/base/rbac.yaml (ClusterRole k3s-autoscaler and Role k3s-autoscaler-events) and bind them to the service's ServiceAccount",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Verdict;

    #[test]
    fn denied_verbs_are_named_with_their_resource_and_scope() {
        assert_eq!(access_verdict(&[]).verdict, Verdict::Pass);
        let denied = vec![
            access_name("", "pods", "eviction", "create", ""),
            access_name("events.k8s.io", "events", "", "create", "default"),
        ];
        let check = access_verdict(&denied);
        assert_eq!(check.detail, "denied: create pods/eviction, create events.events.k8s.io in default");
        assert_eq!(check.verdict, Verdict::Fail);
    }

    #[test]
    fn the_shipped_rbac_grants_exactly_what_the_doctor_asks_for() {
        let rbac = include_str!("../../deploy/base/rbac.yaml");
        for (group, resource, subresource, verb, _) in ACCESS {
            let resource = if subresource.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}/{subresource}")
            };
            let granted = rbac.split("- apiGroups:").skip(1).any(|rule| {
                rule.contains(&format!("[\"{group}\"]"))
                    && rule.contains(&format!("\"{resource}\""))
                    && rule.contains(&format!("\"{verb}\""))
            });
            assert!(granted, "deploy/base/rbac.yaml does not grant {verb} {resource} ({group:?})");
        }
    }
}
