//! Real aws-sdk-rust clients pointed at moto, and the fixtures a pool needs there.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_ec2::types::{Filter, InstanceLifecycleType, RequestLaunchTemplateData};

/// Region used by every test.
pub const REGION: &str = "us-east-1";

/// SDK clients on moto (directly, not through the proxy, so fixtures are not counted).
pub struct Aws {
    pub ec2: aws_sdk_ec2::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
}

/// What the pool config needs from the fixtures.
pub struct Fixtures {
    /// (az, subnet id) for two zones.
    pub subnets: Vec<(String, String)>,
    /// Launch template name.
    pub launch_template: String,
}

impl Aws {
    pub async fn new(endpoint: &str) -> Aws {
        Aws::in_region(endpoint, REGION).await
    }

    /// Clients for `region` on moto.
    pub async fn in_region(endpoint: &str, region: &str) -> Aws {
        let credentials = aws_sdk_ec2::config::Credentials::new("testing", "testing", None, None, "tests");
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .credentials_provider(credentials)
            .endpoint_url(endpoint)
            .load()
            .await;
        Aws { ec2: aws_sdk_ec2::Client::new(&sdk), dynamodb: aws_sdk_dynamodb::Client::new(&sdk) }
    }

    /// A VPC with one subnet in each of two zones, and the workers' launch template.
    pub async fn fixtures(&self) -> Fixtures {
        let vpc = self.ec2.create_vpc().cidr_block("10.20.0.0/16").send().await.expect("create vpc");
        let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc id").to_string();
        let mut subnets = Vec::new();
        for (i, az) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
            let subnet = self
                .ec2
                .create_subnet()
                .vpc_id(&vpc_id)
                .cidr_block(format!("10.20.{i}.0/24"))
                .availability_zone(*az)
                .send()
                .await
                .expect("create subnet");
            subnets.push((
                az.to_string(),
                subnet.subnet().and_then(|s| s.subnet_id()).expect("subnet id").to_string(),
            ));
        }
        let launch_template = "k3s-workers".to_string();
        self.ec2
            .create_launch_template()
            .launch_template_name(&launch_template)
            .launch_template_data(
                RequestLaunchTemplateData::builder()
                    .image_id("ami-12c6146b")
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Small)
                    .build(),
            )
            .send()
            .await
            .expect("create launch template");
        Fixtures { subnets, launch_template }
    }

    /// Launches an instance in `subnet` tagged as a managed worker of `cluster` (as if an
    /// earlier scale-up had made it), or untagged when `managed` is false.
    pub async fn seed_instance(&self, cluster: &str, subnet: &str, managed: bool) -> String {
        self.seed(cluster, subnet, managed, false).await
    }

    /// A managed spot worker of `cluster` in `subnet`.
    pub async fn seed_spot_instance(&self, cluster: &str, subnet: &str) -> String {
        self.seed(cluster, subnet, true, true).await
    }

    async fn seed(&self, cluster: &str, subnet: &str, managed: bool, spot: bool) -> String {
        let tag = |k: &str, v: &str| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build();
        let mut tags = vec![tag("Name", "seeded")];
        if managed {
            tags.extend([
                tag("k3s-autoscaler/managed-by", "k3s-autoscaler"),
                tag("k3s-autoscaler/cluster", cluster),
                tag("k3s-autoscaler/pool", "workers"),
            ]);
        }
        let out = self
            .ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .subnet_id(subnet)
            .min_count(1)
            .max_count(1)
            .set_instance_market_options(spot.then(|| {
                aws_sdk_ec2::types::InstanceMarketOptionsRequest::builder()
                    .market_type(aws_sdk_ec2::types::MarketType::Spot)
                    .build()
            }))
            .tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                    .set_tags(Some(tags))
                    .build(),
            )
            .send()
            .await
            .expect("seed instance");
        out.instances()[0].instance_id().expect("instance id").to_string()
    }

    /// EC2 itself terminates the instance (a spot reclaim), straight on moto: not a call of
    /// the service, so the fault proxy neither sees nor fails it.
    pub async fn reclaim(&self, instance_id: &str) {
        self.ec2.terminate_instances().instance_ids(instance_id).send().await.expect("reclaim");
    }

    /// Whether the instance is pending or running.
    pub async fn is_live(&self, instance_id: &str) -> bool {
        let out = self.ec2.describe_instances().instance_ids(instance_id).send().await.expect("describe");
        out.reservations().iter().flat_map(|r| r.instances()).any(|i| {
            matches!(
                i.state().and_then(|s| s.name()),
                Some(
                    aws_sdk_ec2::types::InstanceStateName::Pending
                        | aws_sdk_ec2::types::InstanceStateName::Running
                )
            )
        })
    }

    /// Pending or running instances managed for `cluster` (both tags): (id, az, is_spot).
    pub async fn instances(&self, cluster: &str) -> Vec<(String, String, bool)> {
        let out = self
            .ec2
            .describe_instances()
            .filters(Filter::builder().name("tag:k3s-autoscaler/cluster").values(cluster).build())
            .filters(Filter::builder().name("tag:k3s-autoscaler/managed-by").values("k3s-autoscaler").build())
            .filters(
                Filter::builder().name("instance-state-name").values("pending").values("running").build(),
            )
            .send()
            .await
            .expect("describe instances");
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                (
                    i.instance_id().unwrap_or_default().to_string(),
                    i.placement().and_then(|p| p.availability_zone()).unwrap_or_default().to_string(),
                    i.instance_lifecycle() == Some(&InstanceLifecycleType::Spot),
                )
            })
            .collect()
    }

    /// Every instance ever launched for `cluster` (both tags), in any state: (id, state,
    /// op-id tag).
    pub async fn all_instances(&self, cluster: &str) -> Vec<(String, String, String)> {
        let out = self
            .ec2
            .describe_instances()
            .filters(Filter::builder().name("tag:k3s-autoscaler/cluster").values(cluster).build())
            .filters(Filter::builder().name("tag:k3s-autoscaler/managed-by").values("k3s-autoscaler").build())
            .send()
            .await
            .expect("describe instances");
        let tag = |i: &aws_sdk_ec2::types::Instance, key: &str| {
            i.tags()
                .iter()
                .find(|t| t.key() == Some(key))
                .and_then(|t| t.value())
                .unwrap_or_default()
                .to_string()
        };
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                (
                    i.instance_id().unwrap_or_default().to_string(),
                    i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default(),
                    tag(i, "k3s-autoscaler/op-id"),
                )
            })
            .collect()
    }

    /// Every item of `cluster` in `table` whose sort key starts with `prefix`.
    pub async fn items(
        &self,
        table: &str,
        cluster: &str,
        prefix: &str,
    ) -> Vec<std::collections::HashMap<String, AttributeValue>> {
        self.dynamodb
            .query()
            .table_name(table)
            .key_condition_expression("cluster_id = :c AND begins_with(sk, :p)")
            .expression_attribute_values(":c", AttributeValue::S(cluster.into()))
            .expression_attribute_values(":p", AttributeValue::S(prefix.into()))
            .send()
            .await
            .expect("query")
            .items
            .unwrap_or_default()
    }
}
