//! The EC2-compatible cloud's Query API (Version 2016-11-15): zones, subnets, VPCs, security
//! groups and instances, each read by id (`Filter.N`) and cached for the configured TTL.

use elb_contract::security_group::{IngressRule, Ipv4Cidr};
use elb_sigv4::encoding::form_encode;

use super::{Body, CloudConfig, CloudError, SignedClient, TtlCache, child, child_text, items};
use crate::config::ConfigError;
use crate::store::{GroupOrigin, InventoryInstance, SecurityGroupRecord, Subnet, Zone};

/// The EC2 API version spoken.
pub const VERSION: &str = "2016-11-15";

/// EC2 instance states in which an instance can be registered.
const LIVE_STATES: &[&str] = &["pending", "running", "stopping", "stopped"];

/// A subnet as the cloud describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudSubnet {
    pub subnet: Subnet,
    /// The default subnet of its zone in the default VPC.
    pub default_for_az: bool,
}

/// The EC2 side of the cloud.
#[derive(Debug)]
pub struct Ec2Cloud {
    client: SignedClient,
    cache: TtlCache<String>,
    region_override: Option<String>,
}

fn filters(pairs: &[(&str, &[String])]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (n, (name, values)) in pairs.iter().enumerate() {
        out.push((format!("Filter.{}.Name", n + 1), (*name).to_string()));
        for (k, v) in values.iter().enumerate() {
            out.push((format!("Filter.{}.Value.{}", n + 1, k + 1), v.clone()));
        }
    }
    out
}

fn parse<'a>(
    client: &SignedClient,
    action: &str,
    text: &'a str,
) -> Result<roxmltree::Document<'a>, CloudError> {
    let doc =
        roxmltree::Document::parse(text).map_err(|e| client.unreadable(action, e.to_string()))?;
    let root = doc.root_element().tag_name().name();
    if root != format!("{action}Response") {
        return Err(client.unreadable(action, format!("unexpected root element <{root}>")));
    }
    Ok(doc)
}

impl Ec2Cloud {
    /// The EC2 client, if `--ec2-endpoint` is configured.
    pub fn new(config: &CloudConfig) -> Result<Option<Self>, ConfigError> {
        let Some(url) = &config.ec2_endpoint else {
            return Ok(None);
        };
        Ok(Some(Self {
            client: SignedClient::new("--ec2-endpoint", url, "EC2", "ec2", config)?,
            cache: TtlCache::new(config.cache_ttl),
            region_override: config.ec2_region.clone(),
        }))
    }

    fn signing_region<'a>(&'a self, region: &'a str) -> &'a str {
        self.region_override.as_deref().unwrap_or(region)
    }

    /// Calls `action` with `params` for `region`; `fresh` skips the cache (the refresher).
    async fn call(
        &self,
        region: &str,
        action: &str,
        params: &[(String, String)],
        fresh: bool,
    ) -> Result<String, CloudError> {
        let mut pairs = vec![("Action", action), ("Version", VERSION)];
        pairs.extend(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let body = form_encode(pairs);
        let region = self.signing_region(region);
        let key = format!("{region} {body}");
        if !fresh && let Some(hit) = self.cache.get(&key) {
            return Ok(hit);
        }
        let text = self.client.send(region, action, Body::Form(&body)).await?;
        self.cache.put(key, text.clone());
        Ok(text)
    }

    /// Forgets cached answers (control changed something itself).
    pub fn forget(&self) {
        self.cache.clear();
    }

    /// The available zones of `region`.
    pub async fn zones(&self, region: &str) -> Result<Vec<Zone>, CloudError> {
        let action = "DescribeAvailabilityZones";
        let text = self.call(region, action, &[], false).await?;
        let doc = parse(&self.client, action, &text)?;
        Ok(items(doc.root_element(), "availabilityZoneInfo")
            .filter(|z| child_text(*z, "zoneState").is_none_or(|s| s == "available"))
            .filter_map(|z| child_text(z, "zoneName"))
            .map(|name| Zone {
                name: name.to_string(),
                region: region.to_string(),
            })
            .collect())
    }

    async fn describe_subnets(
        &self,
        region: &str,
        params: &[(String, String)],
    ) -> Result<Vec<CloudSubnet>, CloudError> {
        let action = "DescribeSubnets";
        let text = self.call(region, action, params, false).await?;
        let doc = parse(&self.client, action, &text)?;
        Ok(items(doc.root_element(), "subnetSet")
            .filter_map(|s| {
                Some(CloudSubnet {
                    subnet: Subnet {
                        id: child_text(s, "subnetId")?.to_string(),
                        zone: child_text(s, "availabilityZone")?.to_string(),
                        vpc_id: child_text(s, "vpcId")?.to_string(),
                    },
                    default_for_az: child_text(s, "defaultForAz") == Some("true"),
                })
            })
            .collect())
    }

    /// The subnets among `ids` that exist in `region`.
    pub async fn subnets(
        &self,
        region: &str,
        ids: &[String],
    ) -> Result<Vec<CloudSubnet>, CloudError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.describe_subnets(region, &filters(&[("subnet-id", ids)]))
            .await
    }

    /// The default VPC of `region` and its default subnets (one per zone), if it has one.
    pub async fn default_vpc(
        &self,
        region: &str,
    ) -> Result<Option<(String, Vec<CloudSubnet>)>, CloudError> {
        let action = "DescribeVpcs";
        let text = self.call(region, action, &[], false).await?;
        let doc = parse(&self.client, action, &text)?;
        let vpc = items(doc.root_element(), "vpcSet")
            .find(|v| child_text(*v, "isDefault") == Some("true"))
            .and_then(|v| child_text(v, "vpcId"))
            .map(str::to_string);
        let Some(vpc) = vpc else {
            return Ok(None);
        };
        let subnets = self
            .describe_subnets(region, &filters(&[("vpc-id", std::slice::from_ref(&vpc))]))
            .await?
            .into_iter()
            .filter(|s| s.default_for_az)
            .collect();
        Ok(Some((vpc, subnets)))
    }

    async fn describe_groups(
        &self,
        region: &str,
        params: &[(String, String)],
        fresh: bool,
    ) -> Result<Vec<SecurityGroupRecord>, CloudError> {
        let action = "DescribeSecurityGroups";
        let text = self.call(region, action, params, fresh).await?;
        let doc = parse(&self.client, action, &text)?;
        Ok(items(doc.root_element(), "securityGroupInfo")
            .filter_map(group)
            .collect())
    }

    /// The security groups among `ids` that exist in `region`; `fresh` reads past the cache.
    pub async fn security_groups(
        &self,
        region: &str,
        ids: &[String],
        fresh: bool,
    ) -> Result<Vec<SecurityGroupRecord>, CloudError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.describe_groups(region, &filters(&[("group-id", ids)]), fresh)
            .await
    }

    /// The `default` security group of `vpc`.
    pub async fn default_security_group(
        &self,
        region: &str,
        vpc: &str,
    ) -> Result<Option<SecurityGroupRecord>, CloudError> {
        let groups = self
            .describe_groups(
                region,
                &filters(&[
                    ("vpc-id", &[vpc.to_string()]),
                    ("group-name", &["default".to_string()]),
                ]),
                false,
            )
            .await?;
        Ok(groups
            .into_iter()
            .find(|g| g.name == "default" && g.vpc_id.as_deref() == Some(vpc)))
    }

    /// The instances among `ids` in a state that can be registered (pending, running,
    /// stopping, stopped), with their private address and zone.
    pub async fn instances(
        &self,
        region: &str,
        ids: &[String],
    ) -> Result<Vec<InventoryInstance>, CloudError> {
        let action = "DescribeInstances";
        let mut out = Vec::new();
        for chunk in ids.chunks(100) {
            let base = filters(&[("instance-id", chunk)]);
            let mut next_token: Option<String> = None;
            // EC2 pages results; a bounded number of pages guards against a looping endpoint.
            for _ in 0..50 {
                let mut params = base.clone();
                if let Some(token) = &next_token {
                    params.push(("NextToken".into(), token.clone()));
                }
                // Instances are read fresh: registering one is rare and must see it.
                let text = self.call(region, action, &params, true).await?;
                let doc = parse(&self.client, action, &text)?;
                out.extend(instances(&doc));
                match child_text(doc.root_element(), "nextToken") {
                    Some(t) if !t.is_empty() => next_token = Some(t.to_string()),
                    _ => break,
                }
            }
        }
        Ok(out)
    }
}

/// One `securityGroupInfo/item`: its IPv4 CIDR ingress rules. Rules that name other groups,
/// IPv6 ranges or prefix lists are not carried (servos see client addresses only: such rules
/// admit no one through a load balancer), and are logged once per read at debug level.
fn group(item: roxmltree::Node<'_, '_>) -> Option<SecurityGroupRecord> {
    let id = child_text(item, "groupId")?.to_string();
    let mut ingress = Vec::new();
    for p in items(item, "ipPermissions") {
        let protocol = child_text(p, "ipProtocol").unwrap_or("-1").to_string();
        let port = |name| child_text(p, name).and_then(|v| v.parse::<i32>().ok());
        let (from, to) = if protocol == "-1" {
            (None, None)
        } else {
            (port("fromPort"), port("toPort"))
        };
        for r in items(p, "ipRanges") {
            match child_text(r, "cidrIp").map(str::parse::<Ipv4Cidr>) {
                Some(Ok(cidr)) => ingress.push(IngressRule {
                    ip_protocol: protocol.clone(),
                    from_port: from,
                    to_port: to,
                    cidr_ip: cidr,
                }),
                _ => tracing::warn!(group = %id, "ingress rule with an unreadable CIDR left out"),
            }
        }
        let references = items(p, "groups").count();
        if references > 0 {
            tracing::debug!(group = %id, references, "ingress rules naming security groups admit no one through a load balancer");
        }
    }
    // Rules EC2 lists once per protocol and range come out in EC2's order; keep it.
    Some(SecurityGroupRecord {
        name: child_text(item, "groupName").unwrap_or("").to_string(),
        description: child_text(item, "groupDescription")
            .unwrap_or("")
            .to_string(),
        vpc_id: child_text(item, "vpcId").map(str::to_string),
        account_id: None,
        ingress,
        origin: GroupOrigin::Cloud,
        id,
    })
}

/// Instances (in a live state) of a DescribeInstances response.
fn instances(doc: &roxmltree::Document<'_>) -> Vec<InventoryInstance> {
    let mut out = Vec::new();
    for set in doc
        .descendants()
        .filter(|n| n.tag_name().name() == "instancesSet")
    {
        for item in set.children().filter(|n| n.tag_name().name() == "item") {
            let Some(id) = child_text(item, "instanceId") else {
                continue;
            };
            let state = child(item, "instanceState")
                .and_then(|s| child_text(s, "name"))
                .unwrap_or("running");
            if !LIVE_STATES.contains(&state) {
                continue;
            }
            let address =
                child_text(item, "privateIpAddress").or_else(|| child_text(item, "ipAddress"));
            let zone = child(item, "placement").and_then(|p| child_text(p, "availabilityZone"));
            if let (Some(address), Some(zone)) = (address, zone) {
                out.push(InventoryInstance {
                    id: id.to_string(),
                    address: address.to_string(),
                    zone: zone.to_string(),
                    account_id: None,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_describe_instances() {
        let xml = r#"<?xml version="1.0"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>r</requestId>
  <reservationSet><item><reservationId>r-1</reservationId><ownerId>123</ownerId>
    <instancesSet>
      <item><instanceId>i-1</instanceId><instanceState><code>16</code><name>running</name></instanceState>
        <privateIpAddress>10.0.0.5</privateIpAddress><placement><availabilityZone>us-east-1a</availabilityZone></placement></item>
      <item><instanceId>i-2</instanceId><instanceState><code>48</code><name>terminated</name></instanceState>
        <privateIpAddress>10.0.0.6</privateIpAddress><placement><availabilityZone>us-east-1a</availabilityZone></placement></item>
    </instancesSet></item></reservationSet>
  <nextToken>abc</nextToken>
</DescribeInstancesResponse>"#;
        let doc = roxmltree::Document::parse(xml).unwrap();
        let found = instances(&doc);
        assert_eq!(found.len(), 1, "terminated instances are not usable");
        assert_eq!(
            (
                found[0].id.as_str(),
                found[0].address.as_str(),
                found[0].zone.as_str()
            ),
            ("i-1", "10.0.0.5", "us-east-1a")
        );
    }

    #[test]
    fn parses_security_groups() {
        let xml = r#"<DescribeSecurityGroupsResponse><securityGroupInfo><item>
            <groupId>sg-1</groupId><groupName>web</groupName><groupDescription>d</groupDescription><vpcId>vpc-1</vpcId>
            <ipPermissions>
              <item><ipProtocol>tcp</ipProtocol><fromPort>80</fromPort><toPort>80</toPort><groups/>
                <ipRanges><item><cidrIp>198.18.1.0/24</cidrIp></item><item><cidrIp>198.18.2.0/24</cidrIp></item></ipRanges>
                <ipv6Ranges><item><cidrIpv6>::/0</cidrIpv6></item></ipv6Ranges></item>
              <item><ipProtocol>-1</ipProtocol><groups><item><groupId>sg-1</groupId></item></groups><ipRanges/></item>
              <item><ipProtocol>-1</ipProtocol><ipRanges><item><cidrIp>10.0.0.0/8</cidrIp></item></ipRanges></item>
            </ipPermissions>
            <ipPermissionsEgress><item><ipProtocol>-1</ipProtocol><ipRanges><item><cidrIp>0.0.0.0/0</cidrIp></item></ipRanges></item></ipPermissionsEgress>
          </item></securityGroupInfo></DescribeSecurityGroupsResponse>"#;
        let doc = roxmltree::Document::parse(xml).unwrap();
        let groups: Vec<SecurityGroupRecord> = items(doc.root_element(), "securityGroupInfo")
            .filter_map(group)
            .collect();
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        assert_eq!(
            (g.id.as_str(), g.name.as_str(), g.vpc_id.as_deref()),
            ("sg-1", "web", Some("vpc-1"))
        );
        let rules: Vec<String> = g.ingress.iter().map(ToString::to_string).collect();
        assert_eq!(
            rules,
            [
                "tcp 80 from 198.18.1.0/24",
                "tcp 80 from 198.18.2.0/24",
                "-1 from 10.0.0.0/8"
            ],
            "IPv4 CIDR ingress only: no egress, IPv6 or group references"
        );
    }

    #[test]
    fn filters_are_numbered() {
        let f = filters(&[
            ("vpc-id", &["vpc-1".into()]),
            ("group-name", &["a".into(), "b".into()]),
        ]);
        let text: Vec<String> = f.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            text,
            [
                "Filter.1.Name=vpc-id",
                "Filter.1.Value.1=vpc-1",
                "Filter.2.Name=group-name",
                "Filter.2.Value.1=a",
                "Filter.2.Value.2=b"
            ]
        );
    }
}
