//! The AWS checks: credentials and region, the table, each pool's launch template and
//! subnets, CreateFleet / TerminateInstances permitted (EC2 DryRun), the notice queue.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use aws_sdk_ec2::config::ProvideCredentials;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_ec2::types::{Filter, LaunchTemplateHttpTokensState};

use super::Check;
use crate::adapters::ec2::Ec2Compute;
use crate::adapters::ec2::compute::{Compute, ComputeError, FleetOverride, FleetSpec, TAG_CLUSTER, TAG_POOL};
use crate::adapters::sqs::SqsNoticeQueue;
use crate::config::{Config, PoolConfig};
use crate::core::model::Market;
use crate::core::text::bounded;

/// The TTL attribute the service writes (`docs/dynamodb-schema.md`).
const TTL_ATTRIBUTE: &str = "expires_at";

pub(super) async fn checks(config: &Config) -> Vec<Check> {
    let sdk = crate::adapters::aws::sdk_config(&config.aws).await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let first = credentials_and_region(&sdk, &ec2, config).await;
    if first.verdict == super::Verdict::Fail {
        // Every other AWS call would fail the same way: one line says it.
        return vec![first];
    }
    let mut checks = vec![first, table(&sdk, config).await];
    let compute = Ec2Compute::from_sdk(&sdk, &config.cluster_id);
    for (name, pool) in &config.pools {
        checks.push(launch_template(&ec2, config, name, pool).await);
        checks.push(subnets(&ec2, name, pool).await);
        checks.push(dry_run_launch(&compute, name, pool).await);
        checks.push(dry_run_terminate(&compute, name).await);
    }
    checks.push(queue(&sdk, config).await);
    checks
}

fn error_text<E: std::error::Error + 'static, R: std::fmt::Debug>(
    error: &aws_sdk_ec2::error::SdkError<E, R>,
) -> String {
    bounded(&DisplayErrorContext(error).to_string(), 400)
}

async fn credentials_and_region(sdk: &SdkConfig, ec2: &aws_sdk_ec2::Client, config: &Config) -> Check {
    let name = format!("AWS credentials and region {}", config.aws.region);
    let Some(provider) = sdk.credentials_provider() else {
        return Check::fail(name, "no credentials provider", "set AWS credentials (see docs/iam.md)");
    };
    if let Err(e) = provider.provide_credentials().await {
        return Check::fail(
            name,
            format!("no AWS credentials found: {}", bounded(&e.to_string(), 300)),
            "run with the autoscaler's role (in the cluster: the ServiceAccount's web identity, AWS_ROLE_ARN \
             and AWS_WEB_IDENTITY_TOKEN_FILE), or set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
        );
    }
    match ec2.describe_availability_zones().send().await {
        Ok(out) => {
            let zones: Vec<String> =
                out.availability_zones().iter().filter_map(|z| z.zone_name().map(str::to_string)).collect();
            region_verdict(name, &config.aws.region, &zones, config)
        }
        Err(e) => Check::fail(
            name,
            format!("EC2 refused or could not be reached: {}", error_text(&e)),
            match e.code() {
                Some("AuthFailure" | "UnrecognizedClientException" | "InvalidClientTokenId") => {
                    "the credentials are not valid: refresh them or use the autoscaler's role".to_string()
                }
                _ => format!("check aws.region ({}) and the network path to EC2", config.aws.region),
            },
        ),
    }
}

/// Every configured zone must be one the region has.
fn region_verdict(name: String, region: &str, zones: &[String], config: &Config) -> Check {
    let missing: Vec<String> = config
        .pools
        .iter()
        .flat_map(|(pool, p)| p.subnets.keys().map(move |az| (pool, az)))
        .filter(|(_, az)| !zones.contains(az))
        .map(|(pool, az)| format!("pools.{pool}.subnets.{az}"))
        .collect();
    if missing.is_empty() {
        Check::pass(name, format!("credentials found; EC2 answers in {region} ({} zones)", zones.len()))
    } else {
        Check::fail(
            name,
            format!("{} name zones that {region} does not have", missing.join(", ")),
            "aws.region must be the cluster's region (the stack output Region); zones are <region><letter>",
        )
    }
}

async fn table(sdk: &SdkConfig, config: &Config) -> Check {
    let table = &config.aws.table;
    let name = format!("DynamoDB table {table}");
    let client = aws_sdk_dynamodb::Client::new(sdk);
    let described = match client.describe_table().table_name(table).send().await {
        Ok(out) => out,
        Err(e) if e.code() == Some("ResourceNotFoundException") => {
            return Check::fail(
                name,
                format!("not found in {}", config.aws.region),
                "set aws.table to the stack output StateTableName (or run `k3s-autoscaler init-table` for local use)",
            );
        }
        Err(e) => {
            return Check::fail(
                name,
                format!("cannot describe it: {}", error_text(&e)),
                "allow dynamodb:DescribeTable on the table (docs/iam.md)",
            );
        }
    };
    let Some(description) = described.table() else {
        return Check::fail(name, "DescribeTable answered without a table", "check aws.table");
    };
    let keys: Vec<(String, String)> = description
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name().to_string(), k.key_type().as_str().to_string()))
        .collect();
    let types: BTreeMap<String, String> = description
        .attribute_definitions()
        .iter()
        .map(|a| (a.attribute_name().to_string(), a.attribute_type().as_str().to_string()))
        .collect();
    let ttl = match client.describe_time_to_live().table_name(table).send().await {
        Ok(out) => out.time_to_live_description().map(|d| {
            (
                d.attribute_name().unwrap_or_default().to_string(),
                d.time_to_live_status().map(|s| s.as_str().to_string()).unwrap_or_default(),
            )
        }),
        Err(e) => {
            return Check::fail(
                name,
                format!("cannot read its TTL: {}", error_text(&e)),
                "allow dynamodb:DescribeTimeToLive on the table (docs/iam.md)",
            );
        }
    };
    table_verdict(name, &keys, &types, ttl)
}

/// Keys `cluster_id` (HASH, S) and `sk` (RANGE, S), TTL enabled on `expires_at`.
fn table_verdict(
    name: String,
    keys: &[(String, String)],
    types: &BTreeMap<String, String>,
    ttl: Option<(String, String)>,
) -> Check {
    let want = [("cluster_id", "HASH"), ("sk", "RANGE")];
    let keys_ok = keys.len() == 2
        && want.iter().all(|(n, k)| keys.iter().any(|(kn, kk)| kn == n && kk == k))
        && want.iter().all(|(n, _)| types.get(*n).map(String::as_str) == Some("S"));
    if !keys_ok {
        let found: Vec<String> =
            keys.iter().map(|(n, k)| format!("{n} ({k}, {})", types.get(n).map_or("?", |t| t))).collect();
        return Check::fail(
            name,
            format!(
                "key schema is {}; the service needs cluster_id (HASH, S) and sk (RANGE, S)",
                found.join(", ")
            ),
            "point aws.table at the table the stack created (StateTableName), not another table",
        );
    }
    match ttl {
        Some((attribute, status))
            if attribute == TTL_ATTRIBUTE && matches!(status.as_str(), "ENABLED" | "ENABLING") =>
        {
            Check::pass(name, format!("keys cluster_id (HASH), sk (RANGE); TTL on {TTL_ATTRIBUTE}"))
        }
        other => Check::fail(
            name,
            format!(
                "TTL is {}: expired signals and audit records would pile up",
                other.map_or("off".to_string(), |(a, s)| format!("{s} on {a:?}"))
            ),
            format!(
                "enable TTL on {TTL_ATTRIBUTE}: aws dynamodb update-time-to-live --table-name <table> --time-to-live-specification Enabled=true,AttributeName={TTL_ATTRIBUTE}"
            ),
        ),
    }
}

async fn launch_template(ec2: &aws_sdk_ec2::Client, config: &Config, pool: &str, p: &PoolConfig) -> Check {
    let name =
        format!("pool {pool}: launch template {} version {}", p.launch_template, p.launch_template_version);
    let by_id = p.launch_template.starts_with("lt-");
    let mut request = ec2.describe_launch_template_versions().versions(&p.launch_template_version);
    request = if by_id {
        request.launch_template_id(&p.launch_template)
    } else {
        request.launch_template_name(&p.launch_template)
    };
    let not_found = |name: String| {
        Check::fail(
            name,
            "not found",
            format!(
                "set pools.{pool}.launch_template and launch_template_version to the stack outputs WorkerLaunchTemplateId / WorkerLaunchTemplateLatestVersion"
            ),
        )
    };
    // The stack's role may not read template data (it would expose every template's
    // user-data in the account, docs/iam.md): then IMDSv2 is left to the CreateFleet
    // condition ec2:MetadataHttpTokens, which the DryRun check exercises.
    let imdsv2 = match request.send().await {
        Ok(out) => match out.launch_template_versions().first() {
            Some(version) => Some(
                version
                    .launch_template_data()
                    .and_then(|d| d.metadata_options())
                    .and_then(|m| m.http_tokens())
                    == Some(&LaunchTemplateHttpTokensState::Required),
            ),
            None => return not_found(name),
        },
        Err(e) if e.code().is_some_and(|c| c.starts_with("InvalidLaunchTemplate")) => return not_found(name),
        Err(e) if e.code() == Some("UnauthorizedOperation") => None,
        Err(e) => {
            return Check::fail(
                name,
                format!("cannot describe it: {}", error_text(&e)),
                "check the launch template and the network path to EC2",
            );
        }
    };
    let templates = if by_id {
        ec2.describe_launch_templates().launch_template_ids(&p.launch_template)
    } else {
        ec2.describe_launch_templates().launch_template_names(&p.launch_template)
    };
    let tags: Vec<(String, String)> = match templates.send().await {
        Err(e) if e.code().is_some_and(|c| c.starts_with("InvalidLaunchTemplate")) => return not_found(name),
        Ok(out) => out
            .launch_templates()
            .iter()
            .flat_map(|t| t.tags())
            .map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string()))
            .collect(),
        Err(e) => {
            return Check::fail(
                name,
                format!("cannot read its tags: {}", error_text(&e)),
                "allow ec2:DescribeLaunchTemplates (docs/iam.md)",
            );
        }
    };
    template_verdict(name, imdsv2, &tags, &config.cluster_id, pool)
}

/// IMDSv2 required (`None`: the role may not read it), and the template tagged for this
/// cluster and pool.
fn template_verdict(
    name: String,
    imdsv2: Option<bool>,
    tags: &[(String, String)],
    cluster: &str,
    pool: &str,
) -> Check {
    let tag = |key: &str| tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let mut problems = Vec::new();
    if imdsv2 == Some(false) {
        problems.push(
            "does not require IMDSv2 (HttpTokens is not \"required\"): any pod could read the worker role"
                .to_string(),
        );
    }
    if tag(TAG_CLUSTER) != Some(cluster) {
        problems.push(format!("tag {TAG_CLUSTER} is {:?}, not {cluster:?}", tag(TAG_CLUSTER)));
    }
    if tag(TAG_POOL) != Some(pool) {
        problems.push(format!("tag {TAG_POOL} is {:?}, not {pool:?}", tag(TAG_POOL)));
    }
    let imds = match imdsv2 {
        Some(_) => "IMDSv2 required",
        None => {
            "HttpTokens not readable with this role (by design); the CreateFleet check below is judged by the ec2:MetadataHttpTokens condition of its RunInstances"
        }
    };
    if problems.is_empty() {
        Check::pass(name, format!("{imds}; tagged {TAG_CLUSTER}={cluster}, {TAG_POOL}={pool}"))
    } else {
        Check::fail(
            name,
            problems.join("; "),
            "use the stack's launch template (infra/k3s-autoscaler.yaml WorkerLaunchTemplate), or set MetadataOptions.HttpTokens=required and the two tags in a new pinned version",
        )
    }
}

async fn subnets(ec2: &aws_sdk_ec2::Client, pool: &str, p: &PoolConfig) -> Check {
    let name = format!("pool {pool}: subnets");
    let ids: Vec<String> = p.subnets.values().cloned().collect();
    let filter = Filter::builder().name("subnet-id").set_values(Some(ids)).build();
    match ec2.describe_subnets().filters(filter).send().await {
        Ok(out) => {
            let found: Vec<(String, String)> = out
                .subnets()
                .iter()
                .map(|s| {
                    (
                        s.subnet_id().unwrap_or_default().to_string(),
                        s.availability_zone().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            subnets_verdict(name, pool, &p.subnets, &found)
        }
        Err(e) => Check::fail(
            name,
            format!("cannot describe them: {}", error_text(&e)),
            "allow ec2:DescribeSubnets (docs/iam.md)",
        ),
    }
}

/// Each configured subnet exists, in the zone it is configured for.
fn subnets_verdict(
    name: String,
    pool: &str,
    configured: &BTreeMap<String, String>,
    found: &[(String, String)],
) -> Check {
    let problems: Vec<String> = configured
        .iter()
        .filter_map(|(az, subnet)| match found.iter().find(|(id, _)| id == subnet) {
            None => Some(format!("{subnet} ({az}) does not exist")),
            Some((_, actual)) if actual != az => Some(format!("{subnet} is in {actual}, not {az}")),
            Some(_) => None,
        })
        .collect();
    if problems.is_empty() {
        let pairs: Vec<String> = configured.iter().map(|(az, s)| format!("{az}={s}")).collect();
        Check::pass(name, pairs.join(", "))
    } else {
        Check::fail(
            name,
            problems.join("; "),
            format!(
                "set pools.{pool}.subnets to the stack outputs Subnet1Id/Subnet1AvailabilityZone and Subnet2Id/Subnet2AvailabilityZone"
            ),
        )
    }
}

async fn dry_run_launch(compute: &Ec2Compute, pool: &str, p: &PoolConfig) -> Check {
    let name = format!("pool {pool}: CreateFleet permitted");
    let Some((az, subnet)) = p.subnets.iter().next() else {
        return Check::fail(name, "no subnet configured", format!("set pools.{pool}.subnets"));
    };
    // Every instance type the pool may launch (none listed: the template's own), as `launch`
    // asks for them.
    let types: Vec<Option<String>> = if p.instance_types.is_empty() {
        vec![None]
    } else {
        p.instance_types.iter().cloned().map(Some).collect()
    };
    let overrides = types
        .into_iter()
        .map(|instance_type| FleetOverride { instance_type, subnet_id: subnet.clone() })
        .collect();
    let spec = FleetSpec {
        pool: pool.to_string(),
        op_id: "doctor".into(),
        client_token: format!("doctor-{}", uuid::Uuid::new_v4().simple()),
        az: az.clone(),
        count: 1,
        market: Market::OnDemand,
        overrides,
        launch_template: p.launch_template.clone(),
        launch_template_version: p.launch_template_version.clone(),
    };
    dry_run_verdict(
        name,
        compute.dry_run_launch(&spec).await,
        "the launch template, subnet and tags the service uses",
    )
}

async fn dry_run_terminate(compute: &Ec2Compute, pool: &str) -> Check {
    let name = format!("pool {pool}: TerminateInstances permitted");
    match compute.list_pool(pool).await {
        Ok(instances) => match instances.first() {
            Some(instance) => dry_run_verdict(
                name,
                compute.dry_run_terminate(&instance.instance_id).await,
                &format!("managed instance {}", instance.instance_id),
            ),
            None => Check::skip(
                name,
                "no managed instance yet to ask about (IAM conditions on the instance tags need one)",
            ),
        },
        Err(e) => Check::fail(
            name,
            format!("cannot list the pool's instances: {e}"),
            "allow ec2:DescribeInstances (docs/iam.md)",
        ),
    }
}

/// DryRunOperation = permitted; UnauthorizedOperation = denied by IAM; anything else = the
/// request itself is wrong.
fn dry_run_verdict(name: String, answer: Result<(), ComputeError>, what: &str) -> Check {
    match answer {
        Ok(()) => Check::pass(name, format!("EC2 DryRun: permitted for {what}")),
        Err(ComputeError::Rejected { code, message, .. }) if code == "UnauthorizedOperation" => Check::fail(
            name,
            format!("EC2 DryRun: denied ({})", bounded(&message, 300)),
            "attach infra/policies/autoscaler.json to the autoscaler's role; its conditions need the stack's launch template, subnets and instance tags (docs/iam.md)",
        ),
        Err(e) => Check::fail(
            name,
            format!("EC2 DryRun: {}", bounded(&e.to_string(), 400)),
            "fix what EC2 names above (launch template, subnet or instance)",
        ),
    }
}

async fn queue(sdk: &SdkConfig, config: &Config) -> Check {
    let Some(url) = &config.interruption.queue_url else {
        return Check::skip(
            "EC2 notice queue",
            "interruption.queue_url not set: EC2 notices only through POST /v1/events/ec2",
        );
    };
    let name = format!("EC2 notice queue {url}");
    match SqsNoticeQueue::new(sdk, url, config.aws.call_timeout).attributes().await {
        Ok(attributes) => {
            let get = |key: &str| attributes.get(key).map_or("?", String::as_str);
            let dlq = if attributes.contains_key("RedrivePolicy") {
                "a dead-letter queue"
            } else {
                "no dead-letter queue"
            };
            Check::pass(
                name,
                format!(
                    "readable; {} waiting, {} in flight; {dlq}",
                    get("ApproximateNumberOfMessages"),
                    get("ApproximateNumberOfMessagesNotVisible")
                ),
            )
        }
        Err(e) => Check::fail(
            name,
            bounded(&e.to_string(), 400),
            "set interruption.queue_url to the stack output Ec2NoticeQueueUrl; the role needs sqs:ReceiveMessage, sqs:DeleteMessage and sqs:GetQueueAttributes on it",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Verdict;

    fn strings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn the_table_needs_the_two_string_keys_and_ttl_on_expires_at() {
        let keys = strings(&[("cluster_id", "HASH"), ("sk", "RANGE")]);
        let types: BTreeMap<String, String> =
            strings(&[("cluster_id", "S"), ("sk", "S")]).into_iter().collect();
        let ttl = |a: &str, s: &str| Some((a.to_string(), s.to_string()));
        assert_eq!(
            table_verdict("t".into(), &keys, &types, ttl("expires_at", "ENABLED")).verdict,
            Verdict::Pass
        );
        let off = table_verdict("t".into(), &keys, &types, ttl("expires_at", "DISABLED"));
        assert!(off.verdict == Verdict::Fail && off.fix.unwrap().contains("update-time-to-live"));
        assert_eq!(table_verdict("t".into(), &keys, &types, ttl("ttl", "ENABLED")).verdict, Verdict::Fail);
        assert_eq!(table_verdict("t".into(), &keys, &types, None).verdict, Verdict::Fail);
        let other = strings(&[("pk", "HASH")]);
        let wrong = table_verdict("t".into(), &other, &types, ttl("expires_at", "ENABLED"));
        assert!(wrong.detail.contains("pk (HASH"), "{}", wrong.detail);
        let numeric: BTreeMap<String, String> =
            strings(&[("cluster_id", "S"), ("sk", "N")]).into_iter().collect();
        assert_eq!(
            table_verdict("t".into(), &keys, &numeric, ttl("expires_at", "ENABLED")).verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn the_template_needs_imdsv2_and_the_cluster_and_pool_tags() {
        let tags = strings(&[(TAG_CLUSTER, "demo"), (TAG_POOL, "workers")]);
        assert_eq!(
            template_verdict("lt".into(), Some(true), &tags, "demo", "workers").verdict,
            Verdict::Pass
        );
        let open = template_verdict("lt".into(), Some(false), &tags, "demo", "workers");
        assert!(open.verdict == Verdict::Fail && open.detail.contains("IMDSv2"), "{}", open.detail);
        let other = template_verdict("lt".into(), Some(true), &tags, "prod", "workers");
        assert!(
            other.detail.contains("k3s-autoscaler/cluster is Some(\"demo\"), not \"prod\""),
            "{}",
            other.detail
        );
        assert_eq!(template_verdict("lt".into(), Some(true), &[], "demo", "workers").verdict, Verdict::Fail);
        let unreadable = template_verdict("lt".into(), None, &tags, "demo", "workers");
        assert!(
            unreadable.verdict == Verdict::Pass && unreadable.detail.contains("not readable"),
            "{}",
            unreadable.detail
        );
    }

    #[test]
    fn each_subnet_must_exist_in_its_configured_zone() {
        let configured: BTreeMap<String, String> =
            strings(&[("us-east-1a", "subnet-a"), ("us-east-1b", "subnet-b")]).into_iter().collect();
        let right = strings(&[("subnet-a", "us-east-1a"), ("subnet-b", "us-east-1b")]);
        assert_eq!(subnets_verdict("s".into(), "workers", &configured, &right).verdict, Verdict::Pass);
        let swapped = strings(&[("subnet-a", "us-east-1b"), ("subnet-b", "us-east-1b")]);
        let check = subnets_verdict("s".into(), "workers", &configured, &swapped);
        assert_eq!(check.detail, "subnet-a is in us-east-1b, not us-east-1a");
        let check = subnets_verdict("s".into(), "workers", &configured, &right[..1]);
        assert_eq!(check.detail, "subnet-b (us-east-1b) does not exist");
    }

    #[test]
    fn dry_run_answers_map_to_permitted_denied_or_wrong() {
        let denied = ComputeError::Rejected {
            api: "CreateFleet",
            code: "UnauthorizedOperation".into(),
            message: "no".into(),
        };
        let wrong = ComputeError::Rejected {
            api: "CreateFleet",
            code: "InvalidSubnetID.NotFound".into(),
            message: "x".into(),
        };
        assert_eq!(dry_run_verdict("r".into(), Ok(()), "it").verdict, Verdict::Pass);
        let check = dry_run_verdict("r".into(), Err(denied), "it");
        assert!(
            check.verdict == Verdict::Fail && check.detail.starts_with("EC2 DryRun: denied"),
            "{}",
            check.detail
        );
        let check = dry_run_verdict("r".into(), Err(wrong), "it");
        assert!(check.detail.contains("InvalidSubnetID.NotFound"), "{}", check.detail);
    }
}
