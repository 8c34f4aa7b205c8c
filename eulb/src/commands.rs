//! The 28 `eulb-*` commands: their options (after euca2ools), the request each sends and the
//! lines each prints (after euca2ools' `print_result` methods: tab-separated fields with a
//! leading record type such as `LOAD_BALANCER` or `INSTANCE`).

use clap::{ArgGroup, Args, Parser};

use crate::argtypes::{
    LbAttribute, Listener, PolicyAttribute, Tag, classify_lb_attribute, delimited_list,
    parse_attribute_file, parse_attribute_list, parse_key_value, parse_listener,
    parse_policy_attribute, parse_tag, parse_tag_key,
};
use crate::client::{Api, CliError, Params};
use crate::xmltree::Elem;

/// One output line: its fields (an empty field prints as nothing, or `(nil)` with
/// `--show-empty-fields`).
pub type Row = Vec<String>;

/// Options every command takes.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Common options")]
pub struct Common {
    /// load balancing service endpoint URL (default: $AWS_ELB_URL)
    #[arg(short = 'U', long = "url", value_name = "URL")]
    pub url: Option<String>,
    /// name of the region and/or user in config files to use (a [user] section of the
    /// euca2ools files, or else a profile of the AWS files)
    #[arg(long, value_name = "[USER@]REGION")]
    pub region: Option<String>,
    /// profile of the AWS credentials file to use
    #[arg(long, value_name = "PROFILE")]
    pub profile: Option<String>,
    /// access key ID to sign requests with
    #[arg(short = 'I', long = "access-key-id", value_name = "KEY_ID")]
    pub access_key_id: Option<String>,
    /// secret key to sign requests with
    #[arg(short = 'S', long = "secret-key", value_name = "KEY")]
    pub secret_key: Option<String>,
    /// security token of temporary credentials
    #[arg(long = "security-token", value_name = "TOKEN")]
    pub security_token: Option<String>,
    /// show empty values as "(nil)"
    #[arg(long = "show-empty-fields")]
    pub show_empty_fields: bool,
    /// print requests and responses to stderr
    #[arg(long)]
    pub debug: bool,
}

/// A comma-separated list option (`A,B,...`); repeating the option appends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct List(pub Vec<String>);

fn list(text: &str) -> Result<List, String> {
    Ok(List(delimited_list(text)))
}

fn flat(lists: &[List]) -> Vec<String> {
    lists.iter().flat_map(|l| l.0.iter().cloned()).collect()
}

/// What each command implements.
pub trait EulbCommand: Parser {
    /// The name after `eulb-`.
    const NAME: &'static str;
    fn common(&self) -> &Common;
    /// Sends the request(s) and returns the lines to print.
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError>;
}

macro_rules! common {
    () => {
        fn common(&self) -> &Common {
            &self.common
        }
    };
}

fn p(key: &str, value: impl ToString) -> (String, String) {
    (key.to_string(), value.to_string())
}

/// `prefix.member.N` for each item.
fn push_list(params: &mut Params, prefix: &str, items: &[String]) {
    for (i, item) in items.iter().enumerate() {
        params.push((format!("{prefix}.member.{}", i + 1), item.clone()));
    }
}

/// Like [`push_list`], but an empty list is sent as `prefix=` (which clears policy lists).
fn push_list_or_empty(params: &mut Params, prefix: &str, items: &[String]) {
    if items.is_empty() {
        params.push((prefix.to_string(), String::new()));
    } else {
        push_list(params, prefix, items);
    }
}

fn push_instances(params: &mut Params, ids: &[String]) {
    for (i, id) in ids.iter().enumerate() {
        params.push((format!("Instances.member.{}.InstanceId", i + 1), id.clone()));
    }
}

fn push_listeners(params: &mut Params, listeners: &[Listener]) {
    for (i, l) in listeners.iter().enumerate() {
        params.extend(l.params("Listeners", i + 1));
    }
}

fn row<S: AsRef<str>>(fields: &[S]) -> Row {
    fields.iter().map(|f| f.as_ref().to_string()).collect()
}

/// `{a,b}`, or an empty field for no items.
fn braced(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", items.join(","))
    }
}

/// `{k1=v1,k2=v2}` of the non-empty values.
fn kv_braced(pairs: &[(&str, String)]) -> String {
    let bits: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    braced(&bits)
}

// ---------------------------------------------------------------------------------------------

/// [VPC only] Associate one or more security groups with a load balancer
///
/// All previous associations with security groups will be replaced.
#[derive(Parser, Debug)]
pub struct ApplySecurityGroupsToLb {
    /// name of the load balancer to modify (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// security groups to associate the load balancer with (required)
    #[arg(short = 'g', long = "security-groups", value_name = "GROUP1,GROUP2,...",
          required = true, value_parser = list)]
    pub groups: Vec<List>,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for ApplySecurityGroupsToLb {
    const NAME: &'static str = "apply-security-groups-to-lb";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let mut params = vec![p("LoadBalancerName", &self.elb)];
        push_list(&mut params, "SecurityGroups", &flat(&self.groups));
        let r = api.call("ApplySecurityGroupsToLoadBalancer", &params)?;
        Ok(vec![row(&[
            "SECURITY_GROUPS".to_string(),
            r.member_texts("SecurityGroups").join(", "),
        ])])
    }
}

/// [VPC only] Add a load balancer to one or more subnets
#[derive(Parser, Debug)]
pub struct AttachLbToSubnets {
    /// name of the load balancer to modify (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// IDs of the subnets to add the load balancer to (required)
    #[arg(short = 's', long = "subnets", value_name = "SUBNET1,SUBNET2,...", required = true,
          value_parser = list)]
    pub subnets: Vec<List>,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for AttachLbToSubnets {
    const NAME: &'static str = "attach-lb-to-subnets";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let mut params = vec![p("LoadBalancerName", &self.elb)];
        push_list(&mut params, "Subnets", &flat(&self.subnets));
        let r = api.call("AttachLoadBalancerToSubnets", &params)?;
        Ok(vec![row(&[
            "SUBNETS".to_string(),
            r.member_texts("Subnets").join(", "),
        ])])
    }
}

/// Configure health checking for instance registerd with a load balancer
#[derive(Parser, Debug)]
pub struct ConfigureHealthcheck {
    /// name of the load balancer to modify (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// number of consecutive successful health checks that will mark instances as Healthy
    /// (required)
    #[arg(long = "healthy-threshold", value_name = "COUNT")]
    pub healthy_threshold: String,
    /// approximate interval between health checks (required)
    #[arg(short = 'i', long = "interval", value_name = "SECONDS")]
    pub interval: String,
    /// connection target for health checks (required)
    #[arg(short = 't', long = "target", value_name = "PROTOCOL:PORT[/PATH]")]
    pub target: String,
    /// maximum health check duration (required)
    #[arg(long = "timeout", value_name = "SECONDS")]
    pub timeout: String,
    /// number of consecutive failed health checks that will mark instances as Unhealthy
    /// (required)
    #[arg(long = "unhealthy-threshold", value_name = "COUNT")]
    pub unhealthy_threshold: String,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for ConfigureHealthcheck {
    const NAME: &'static str = "configure-healthcheck";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let params = vec![
            p("LoadBalancerName", &self.elb),
            p("HealthCheck.Target", &self.target),
            p("HealthCheck.Interval", &self.interval),
            p("HealthCheck.Timeout", &self.timeout),
            p("HealthCheck.UnhealthyThreshold", &self.unhealthy_threshold),
            p("HealthCheck.HealthyThreshold", &self.healthy_threshold),
        ];
        let r = api.call("ConfigureHealthCheck", &params)?;
        Ok(vec![row(&[
            "HEALTH_CHECK".to_string(),
            r.text("HealthCheck/Target"),
            r.text("HealthCheck/Interval"),
            r.text("HealthCheck/Timeout"),
            r.text("HealthCheck/HealthyThreshold"),
            r.text("HealthCheck/UnhealthyThreshold"),
        ])])
    }
}

/// Create a stickiness policy that follows a cookie of the application
///
/// Create a new stickiness policy for a load balancer, whereby the server application
/// generates a cookie and adds it to its responses.  The load balancer will then use this
/// cookie to route requests to the same back end instance.  This type of policy can only be
/// associated with HTTP or HTTPS listeners.
#[derive(Parser, Debug)]
pub struct CreateAppCookieStickinessPolicy {
    /// name of the load balancer to modify (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// name of the cookie used for stickiness (required)
    #[arg(short = 'c', long = "cookie-name", value_name = "COOKIE")]
    pub cookie_name: String,
    /// name of the new policy (required)
    #[arg(short = 'p', long = "policy-name", value_name = "POLICY")]
    pub policy_name: String,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for CreateAppCookieStickinessPolicy {
    const NAME: &'static str = "create-app-cookie-stickiness-policy";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let params = vec![
            p("LoadBalancerName", &self.elb),
            p("PolicyName", &self.policy_name),
            p("CookieName", &self.cookie_name),
        ];
        api.call("CreateAppCookieStickinessPolicy", &params)?;
        Ok(Vec::new())
    }
}

/// Create a load balancer
///
/// After the load balancer is created, instances must be registered with it separately.
#[derive(Parser, Debug)]
#[command(group(ArgGroup::new("placement").required(true).args(["subnets", "zones"])))]
pub struct CreateLb {
    /// name of the new load balancer (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// [VPC only] subnets the load balancer should run in (required)
    #[arg(short = 's', long = "subnets", value_name = "SUBNET1,SUBNET2,...",
          value_parser = list)]
    pub subnets: Vec<List>,
    /// [Non-VPC only] availability zones the load balancer should run in (required)
    #[arg(short = 'z', long = "availability-zones", value_name = "ZONE1,ZONE2,...",
          value_parser = list)]
    pub zones: Vec<List>,
    /// port/protocol settings for the load balancer, as "lb-port=PORT, protocol=PROTOCOL,
    /// instance-port=PORT, instance-protocol=PROTOCOL, cert-id=ARN", where lb-port is the
    /// external port number, protocol is the external protocol, instance-port is the back end
    /// server port number, instance-protocol is the protocol to use for routing traffic to back end
    /// instances, and cert-id is the ARN of the server certificate to use for encrypted
    /// connections.  lb-port, protocol, and instance-port are required.  This option may be
    /// used multiple times.  (at least 1 required)
    #[arg(short = 'l', long = "listener", required = true, value_parser = parse_listener,
          value_name = "LISTENER")]
    pub listeners: Vec<Listener>,
    /// [VPC only] "internal" to make the new load balancer private to a VPC
    #[arg(short = 'i', long = "scheme", value_name = "internal")]
    pub scheme: Option<String>,
    /// [VPC only] IDs of the security groups to assign to the new load balancer
    #[arg(short = 'g', long = "security-groups", value_name = "GROUP1,GROUP2,...",
          value_parser = list)]
    pub groups: Vec<List>,
    /// key and optional value of a tag to add to the new load balancer (may be used
    /// multiple times)
    #[arg(short = 't', long = "tag", value_name = "KEY[=VALUE]", value_parser = parse_tag)]
    pub tags: Vec<Tag>,
    #[command(flatten)]
    pub common: Common,
}

fn push_tags(params: &mut Params, tags: &[Tag]) {
    for (i, t) in tags.iter().enumerate() {
        params.push((format!("Tags.member.{}.Key", i + 1), t.key.clone()));
        params.push((format!("Tags.member.{}.Value", i + 1), t.value.clone()));
    }
}

impl EulbCommand for CreateLb {
    const NAME: &'static str = "create-lb";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let mut params = vec![p("LoadBalancerName", &self.elb)];
        push_listeners(&mut params, &self.listeners);
        push_list(&mut params, "AvailabilityZones", &flat(&self.zones));
        push_list(&mut params, "Subnets", &flat(&self.subnets));
        push_list(&mut params, "SecurityGroups", &flat(&self.groups));
        if let Some(scheme) = &self.scheme {
            params.push(p("Scheme", scheme));
        }
        push_tags(&mut params, &self.tags);
        let r = api.call("CreateLoadBalancer", &params)?;
        Ok(vec![row(&["DNS_NAME".to_string(), r.text("DNSName")])])
    }
}

/// Create a stickiness policy with cookies generated by the load balancer
///
/// Create a new stickiness policy for a load balancer, whereby the load balancer
/// automatically generates cookies that it uses to route requests from each user to the same
/// back end instance.  This type of policy can only be associated with HTTP or HTTPS
/// listeners.
#[derive(Parser, Debug)]
pub struct CreateLbCookieStickinessPolicy {
    /// name of the load balancer to modify (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// time period after which cookies should be considered stale (default: user's session
    /// length)
    #[arg(short = 'e', long = "expiration-period", value_name = "SECONDS")]
    pub expiration_period: Option<String>,
    /// name of the new policy (required)
    #[arg(short = 'p', long = "policy-name", value_name = "POLICY")]
    pub policy_name: String,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for CreateLbCookieStickinessPolicy {
    const NAME: &'static str = "create-lb-cookie-stickiness-policy";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let mut params = vec![
            p("LoadBalancerName", &self.elb),
            p("PolicyName", &self.policy_name),
        ];
        if let Some(period) = &self.expiration_period {
            params.push(p("CookieExpirationPeriod", period));
        }
        api.call("CreateLBCookieStickinessPolicy", &params)?;
        Ok(Vec::new())
    }
}

/// Add one or more listeners to a load balancer
#[derive(Parser, Debug)]
pub struct CreateLbListeners {
    /// name of the load balancer to modify (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// port/protocol settings for the load balancer, as "lb-port=PORT, protocol=PROTOCOL,
    /// instance-port=PORT, instance-protocol=PROTOCOL, cert-id=ARN", where lb-port is the
    /// external port number, protocol is the external protocol, instance-port is the back end
    /// server port number, instance-protocol is the protocol to use for routing traffic to back end
    /// instances, and cert-id is the ARN of the server certificate to use for encrypted
    /// connections.  lb-port, protocol, and instance-port are required.  This option may be
    /// used multiple times.  (at least 1 required)
    #[arg(short = 'l', long = "listener", required = true, value_parser = parse_listener,
          value_name = "LISTENER")]
    pub listeners: Vec<Listener>,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for CreateLbListeners {
    const NAME: &'static str = "create-lb-listeners";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let mut params = vec![p("LoadBalancerName", &self.elb)];
        push_listeners(&mut params, &self.listeners);
        api.call("CreateLoadBalancerListeners", &params)?;
        Ok(Vec::new())
    }
}

/// Add a new policy to a load balancer
#[derive(Parser, Debug)]
pub struct CreateLbPolicy {
    /// name of the load balancer to modify (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// name of the new policy (required)
    #[arg(short = 'n', long = "policy-name", value_name = "POLICY")]
    pub policy_name: String,
    /// type of the new policy.  For a list of policy types, use
    /// eulb-describe-lb-policy-types.  (required)
    #[arg(short = 't', long = "policy-type", value_name = "POLTYPE")]
    pub policy_type: String,
    /// name and value for each attribute associated with the new policy.  Use this option
    /// multiple times to supply multiple attributes.
    #[arg(short = 'a', long = "attribute", value_name = "\"name=NAME, value=VALUE\"",
          value_parser = parse_policy_attribute)]
    pub attributes: Vec<PolicyAttribute>,
    /// a comma-delimited list of attribute names and values to associate with the new policy,
    /// each pair of which is separated by "=".  This is a more concise alternative to the
    /// -a/--attribute option.
    #[arg(short = 'A', long = "attributes", value_name = "NAME=VALUE,...",
          value_parser = parse_attribute_list)]
    pub attribute_lists: Vec<Vec<PolicyAttribute>>,
    /// a file containing attribute names and values to associate with the new policy, one per
    /// line, each pair of which is separated by "=".  Lines that are blank or begin with "#"
    /// are ignored.  "-" reads standard input.
    #[arg(long = "attributes-from-file", value_name = "FILE")]
    pub attributes_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub common: Common,
}

impl CreateLbPolicy {
    /// Every attribute, in euca2ools' order: `-a`, then `-A`, then the file's lines.
    pub fn all_attributes(&self) -> Result<Vec<PolicyAttribute>, CliError> {
        let mut all = self.attributes.clone();
        all.extend(self.attribute_lists.iter().flatten().cloned());
        if let Some(path) = &self.attributes_file {
            let (source, text) = if path.as_os_str() == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .map_err(|e| CliError::Other(format!("reading standard input: {e}")))?;
                ("<stdin>".to_string(), text)
            } else {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| CliError::Other(format!("cannot read {}: {e}", path.display())))?;
                (path.display().to_string(), text)
            };
            all.extend(parse_attribute_file(&source, &text).map_err(CliError::Other)?);
        }
        Ok(all)
    }
}

impl EulbCommand for CreateLbPolicy {
    const NAME: &'static str = "create-lb-policy";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let mut params = vec![
            p("LoadBalancerName", &self.elb),
            p("PolicyName", &self.policy_name),
            p("PolicyTypeName", &self.policy_type),
        ];
        for (i, a) in self.all_attributes()?.iter().enumerate() {
            let base = format!("PolicyAttributes.member.{}", i + 1);
            params.push((format!("{base}.AttributeName"), a.name.clone()));
            params.push((format!("{base}.AttributeValue"), a.value.clone()));
        }
        api.call("CreateLoadBalancerPolicy", &params)?;
        Ok(Vec::new())
    }
}

/// Add one or more tags to a load balancer
#[derive(Parser, Debug)]
pub struct CreateTags {
    /// name of the load balancer to tag (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// key and value of each tag to add (required)
    #[arg(short = 't', long = "tag", value_name = "KEY=VALUE", required = true,
          value_parser = parse_tag)]
    pub tags: Vec<Tag>,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for CreateTags {
    const NAME: &'static str = "create-tags";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let mut params = vec![p("LoadBalancerNames.member.1", &self.elb)];
        push_tags(&mut params, &self.tags);
        api.call("AddTags", &params)?;
        Ok(Vec::new())
    }
}

/// Delete a load balancer
///
/// If the load balancer does not exist, this command still succeeds.
#[derive(Parser, Debug)]
pub struct DeleteLb {
    /// name of the load balancer to delete (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// accepted for compatibility; has no effect
    #[arg(long, hide = true)]
    pub force: bool,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for DeleteLb {
    const NAME: &'static str = "delete-lb";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        api.call("DeleteLoadBalancer", &[p("LoadBalancerName", &self.elb)])?;
        Ok(Vec::new())
    }
}

/// Delete one or more listeners from a load balancer
///
/// If a listener named with -l/--lb-ports does not exist, this command still succeeds.
#[derive(Parser, Debug)]
pub struct DeleteLbListeners {
    /// name of the load balancer to modify (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// port numbers of the listeners to remove (required)
    #[arg(short = 'l', long = "lb-ports", value_name = "PORT1,PORT2,...", required = true,
          value_parser = list)]
    pub ports: Vec<List>,
    /// accepted for compatibility; has no effect
    #[arg(long, hide = true)]
    pub force: bool,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for DeleteLbListeners {
    const NAME: &'static str = "delete-lb-listeners";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let mut params = vec![p("LoadBalancerName", &self.elb)];
        push_list(&mut params, "LoadBalancerPorts", &flat(&self.ports));
        api.call("DeleteLoadBalancerListeners", &params)?;
        Ok(Vec::new())
    }
}

/// Delete a policy from a load balancer
#[derive(Parser, Debug)]
pub struct DeleteLbPolicy {
    /// name of the load balancer to modify (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// name of the policy to delete (required)
    #[arg(short = 'p', long = "policy-name", value_name = "POLICY")]
    pub policy_name: String,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for DeleteLbPolicy {
    const NAME: &'static str = "delete-lb-policy";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let params = vec![
            p("LoadBalancerName", &self.elb),
            p("PolicyName", &self.policy_name),
        ];
        api.call("DeleteLoadBalancerPolicy", &params)?;
        Ok(Vec::new())
    }
}

/// Remove one or more tags from a load balancer
#[derive(Parser, Debug)]
pub struct DeleteTags {
    /// name of the load balancer to untag (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// key of each tag to remove (required)
    #[arg(short = 't', long = "tag", value_name = "KEY", required = true,
          value_parser = parse_tag_key)]
    pub keys: Vec<String>,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for DeleteTags {
    const NAME: &'static str = "delete-tags";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let mut params = vec![p("LoadBalancerNames.member.1", &self.elb)];
        for (i, key) in self.keys.iter().enumerate() {
            params.push((format!("Tags.member.{}.Key", i + 1), key.clone()));
        }
        api.call("RemoveTags", &params)?;
        Ok(Vec::new())
    }
}

fn instance_rows(r: &Elem) -> Vec<Row> {
    r.members("Instances")
        .iter()
        .map(|m| row(&["INSTANCE".to_string(), m.text("InstanceId")]))
        .collect()
}

/// Remove one or more instances from a load balancer
#[derive(Parser, Debug)]
pub struct DeregisterInstancesFromLb {
    /// name of the load balancer to modify (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// IDs of the instances to remove from the load balancer (required)
    #[arg(long = "instances", value_name = "INSTANCE1,INSTANCE2,...", required = true,
          value_parser = list)]
    pub instances: Vec<List>,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for DeregisterInstancesFromLb {
    const NAME: &'static str = "deregister-instances-from-lb";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let mut params = vec![p("LoadBalancerName", &self.elb)];
        push_instances(&mut params, &flat(&self.instances));
        let r = api.call("DeregisterInstancesFromLoadBalancer", &params)?;
        Ok(instance_rows(&r))
    }
}

/// Show the state of instances registered with a load balancer
#[derive(Parser, Debug)]
pub struct DescribeInstanceHealth {
    /// name of the load balancer to describe instances for (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// limit results to specific instances
    #[arg(long = "instances", value_name = "INSTANCE1,INSTANCE2,...", value_parser = list)]
    pub instances: Vec<List>,
    /// show all of the instances' info
    #[arg(long = "show-long")]
    pub show_long: bool,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for DescribeInstanceHealth {
    const NAME: &'static str = "describe-instance-health";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let mut params = vec![p("LoadBalancerName", &self.elb)];
        push_instances(&mut params, &flat(&self.instances));
        let r = api.call("DescribeInstanceHealth", &params)?;
        Ok(r.members("InstanceStates")
            .iter()
            .map(|m| {
                let state = m.text("State");
                let mut fields = vec!["INSTANCE".to_string(), m.text("InstanceId"), state.clone()];
                if self.show_long {
                    fields.push(m.text("Description"));
                    fields.push(m.text("ReasonCode"));
                }
                fields
            })
            .collect())
    }
}

/// Show a load balancer's attributes
#[derive(Parser, Debug)]
pub struct DescribeLbAttributes {
    /// the load balancer to describe (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    #[command(flatten)]
    pub common: Common,
}

/// `Structure.Field  value` lines of a `LoadBalancerAttributes` element, sorted by name;
/// additional attributes as `AdditionalAttributes.<key>`.
pub fn attribute_rows(attrs: &Elem) -> Vec<Row> {
    fn walk(e: &Elem, prefix: &str, out: &mut Vec<(String, String)>) {
        for child in &e.children {
            let path = if prefix.is_empty() {
                child.name.clone()
            } else {
                format!("{prefix}.{}", child.name)
            };
            if child.name == "AdditionalAttributes" {
                for m in child.children.iter().filter(|m| m.name == "member") {
                    out.push((format!("{path}.{}", m.text("Key")), m.text("Value")));
                }
            } else if child.children.is_empty() {
                out.push((path, child.text.clone()));
            } else {
                walk(child, &path, out);
            }
        }
    }
    let mut pairs = Vec::new();
    walk(attrs, "", &mut pairs);
    pairs.sort();
    pairs.into_iter().map(|(k, v)| vec![k, v]).collect()
}

impl EulbCommand for DescribeLbAttributes {
    const NAME: &'static str = "describe-lb-attributes";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let r = api.call(
            "DescribeLoadBalancerAttributes",
            &[p("LoadBalancerName", &self.elb)],
        )?;
        Ok(r.child("LoadBalancerAttributes")
            .map(attribute_rows)
            .unwrap_or_default())
    }
}

/// Show information about load balancer policies
#[derive(Parser, Debug)]
pub struct DescribeLbPolicies {
    /// show policies associated with a specific load balancer (default: only describe sample
    /// policies provided by the service)
    #[arg(value_name = "ELB")]
    pub elb: Option<String>,
    /// limit results to specific policies
    #[arg(short = 'p', long = "policy-names", value_name = "POLICY1,POLICY2,...",
          value_parser = list)]
    pub policy_names: Vec<List>,
    /// show all of the policies' info
    #[arg(long = "show-long")]
    pub show_long: bool,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for DescribeLbPolicies {
    const NAME: &'static str = "describe-lb-policies";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let mut params = Vec::new();
        if let Some(elb) = &self.elb {
            params.push(p("LoadBalancerName", elb));
        }
        push_list(&mut params, "PolicyNames", &flat(&self.policy_names));
        let r = api.call("DescribeLoadBalancerPolicies", &params)?;
        Ok(r.members("PolicyDescriptions")
            .iter()
            .map(|d| {
                let mut fields = vec![
                    "POLICY".to_string(),
                    d.text("PolicyName"),
                    d.text("PolicyTypeName"),
                ];
                if self.show_long {
                    let attrs: Vec<String> = d
                        .members("PolicyAttributeDescriptions")
                        .iter()
                        .map(|a| {
                            format!(
                                "{{name={},value={}}}",
                                a.text("AttributeName"),
                                a.text("AttributeValue")
                            )
                        })
                        .collect();
                    fields.push(attrs.join(","));
                }
                fields
            })
            .collect())
    }
}

/// Show information about load balancer policy types
#[derive(Parser, Debug)]
pub struct DescribeLbPolicyTypes {
    /// limit results to specific policy types
    #[arg(value_name = "POLTYPE")]
    pub types: Vec<String>,
    /// show all of the policy types' info
    #[arg(long = "show-long")]
    pub show_long: bool,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for DescribeLbPolicyTypes {
    const NAME: &'static str = "describe-lb-policy-types";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let mut params = Vec::new();
        push_list(&mut params, "PolicyTypeNames", &self.types);
        let r = api.call("DescribeLoadBalancerPolicyTypes", &params)?;
        Ok(r.members("PolicyTypeDescriptions")
            .iter()
            .map(|t| {
                let mut fields = vec![
                    "POLICY_TYPE".to_string(),
                    t.text("PolicyTypeName"),
                    t.text("Description"),
                ];
                if self.show_long {
                    let attrs: Vec<String> = t
                        .members("PolicyAttributeTypeDescriptions")
                        .iter()
                        .map(|a| {
                            format!(
                                "{{name={},description={},type={},default-value={},\
                                 cardinality={}}}",
                                a.text("AttributeName"),
                                a.text("Description"),
                                a.text("AttributeType"),
                                a.text("DefaultValue"),
                                a.text("Cardinality")
                            )
                        })
                        .collect();
                    fields.push(attrs.join(","));
                }
                fields
            })
            .collect())
    }
}

/// Show information about load balancers
#[derive(Parser, Debug)]
pub struct DescribeLbs {
    /// limit results to specific load balancers
    #[arg(value_name = "ELB")]
    pub names: Vec<String>,
    /// show all of the load balancers' info
    #[arg(long = "show-long")]
    pub show_long: bool,
    #[command(flatten)]
    pub common: Common,
}

/// The line of one `LoadBalancerDescriptions/member`.
pub fn load_balancer_row(d: &Elem, long: bool) -> Row {
    let mut bits = vec![
        "LOAD_BALANCER".to_string(),
        d.text("LoadBalancerName"),
        d.text("DNSName"),
    ];
    if long {
        bits.push(d.text("CanonicalHostedZoneName"));
        bits.push(d.text("CanonicalHostedZoneNameID"));
        bits.push(match d.child("HealthCheck") {
            Some(hc) => kv_braced(&[
                ("interval", hc.text("Interval")),
                ("target", hc.text("Target")),
                ("timeout", hc.text("Timeout")),
                ("healthy-threshold", hc.text("HealthyThreshold")),
                ("unhealthy-threshold", hc.text("UnhealthyThreshold")),
            ]),
            None => String::new(),
        });
        bits.push(d.member_texts("AvailabilityZones").join(","));
        bits.push(d.member_texts("Subnets").join(","));
        bits.push(d.text("VPCId"));
        bits.push(
            d.members("Instances")
                .iter()
                .map(|i| i.text("InstanceId"))
                .collect::<Vec<_>>()
                .join(","),
        );
        let listeners: Vec<String> = d
            .members("ListenerDescriptions")
            .iter()
            .map(|ld| {
                let l = ld.child("Listener").cloned().unwrap_or_default();
                let mut parts: Vec<String> = [
                    ("protocol", l.text("Protocol")),
                    ("lb-port", l.text("LoadBalancerPort")),
                    ("instance-protocol", l.text("InstanceProtocol")),
                    ("instance-port", l.text("InstancePort")),
                    ("cert-id", l.text("SSLCertificateId")),
                ]
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
                let policies = ld.member_texts("PolicyNames");
                if !policies.is_empty() {
                    parts.push(braced(&policies));
                }
                format!("{{{}}}", parts.join(","))
            })
            .collect();
        bits.push(listeners.join(","));
        let backends: Vec<String> = d
            .members("BackendServerDescriptions")
            .iter()
            .map(|b| {
                let mut parts = Vec::new();
                if b.child("InstancePort").is_some() {
                    parts.push(format!("instance-port={}", b.text("InstancePort")));
                }
                if b.child("PolicyNames").is_some() {
                    parts.push(format!(
                        "policies={{{}}}",
                        b.member_texts("PolicyNames").join(",")
                    ));
                }
                format!("{{{}}}", parts.join(","))
            })
            .collect();
        bits.push(backends.join(","));
        bits.push(
            d.members("Policies/AppCookieStickinessPolicies")
                .iter()
                .map(|pol| {
                    format!(
                        "{{policy-name={},cookie-name={}}}",
                        pol.text("PolicyName"),
                        pol.text("CookieName")
                    )
                })
                .collect::<Vec<_>>()
                .join(","),
        );
        bits.push(
            d.members("Policies/LBCookieStickinessPolicies")
                .iter()
                .map(|pol| {
                    format!(
                        "{{policy-name={},expiration-period={}}}",
                        pol.text("PolicyName"),
                        pol.text("CookieExpirationPeriod")
                    )
                })
                .collect::<Vec<_>>()
                .join(","),
        );
        bits.push(braced(&d.member_texts("Policies/OtherPolicies")));
        bits.push(match d.child("SourceSecurityGroup") {
            Some(g) => format!(
                "{{owner-alias={},group-name={}}}",
                g.text("OwnerAlias"),
                g.text("GroupName")
            ),
            None => String::new(),
        });
        bits.push(braced(&d.member_texts("SecurityGroups")));
    }
    bits.push(d.text("CreatedTime"));
    bits.push(d.text("Scheme"));
    bits
}

impl EulbCommand for DescribeLbs {
    const NAME: &'static str = "describe-lbs";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let mut rows = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut params = Vec::new();
            push_list(&mut params, "LoadBalancerNames", &self.names);
            if let Some(m) = &marker {
                params.push(p("Marker", m));
            }
            let r = api.call("DescribeLoadBalancers", &params)?;
            rows.extend(
                r.members("LoadBalancerDescriptions")
                    .iter()
                    .map(|d| load_balancer_row(d, self.show_long)),
            );
            let next = r.text("NextMarker");
            if next.is_empty() || marker.as_deref() == Some(next.as_str()) {
                break;
            }
            marker = Some(next);
        }
        Ok(rows)
    }
}

/// Show the tags associated with one or more load balancers
#[derive(Parser, Debug)]
pub struct DescribeTags {
    /// load balancer(s) to show tags for (required)
    #[arg(value_name = "ELB", required = true)]
    pub names: Vec<String>,
    /// show column headers
    #[arg(long = "show-headers")]
    pub show_headers: bool,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for DescribeTags {
    const NAME: &'static str = "describe-tags";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let mut params = Vec::new();
        push_list(&mut params, "LoadBalancerNames", &self.names);
        let r = api.call("DescribeTags", &params)?;
        let mut rows = Vec::new();
        if self.show_headers {
            rows.push(row(&["TAG", "TYPE", "NAME", "KEY", "VALUE"]));
        }
        for desc in r.members("TagDescriptions") {
            let lb = desc.text("LoadBalancerName");
            for tag in desc.members("Tags") {
                rows.push(vec![
                    "TAG".to_string(),
                    "load-balancer".to_string(),
                    lb.clone(),
                    tag.text("Key"),
                    tag.text("Value"),
                ]);
            }
        }
        Ok(rows)
    }
}

/// [VPC only] Remove a load balancer from one or more subnets
#[derive(Parser, Debug)]
pub struct DetachLbFromSubnets {
    /// name of the load balancer to modify (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// IDs of the subnets to remove the load balancer from (required)
    #[arg(short = 's', long = "subnets", value_name = "SUBNET1,SUBNET2,...", required = true,
          value_parser = list)]
    pub subnets: Vec<List>,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for DetachLbFromSubnets {
    const NAME: &'static str = "detach-lb-from-subnets";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let mut params = vec![p("LoadBalancerName", &self.elb)];
        push_list(&mut params, "Subnets", &flat(&self.subnets));
        let r = api.call("DetachLoadBalancerFromSubnets", &params)?;
        Ok(vec![row(&[
            "SUBNETS".to_string(),
            r.member_texts("Subnets").join(","),
        ])])
    }
}

/// Remove a load balancer from one or more availability zones
#[derive(Parser, Debug)]
pub struct DisableZonesForLb {
    /// name of the load balancer to modify (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// availability zones to remove the load balancer from (required)
    #[arg(short = 'z', long = "availability-zones", value_name = "ZONE1,ZONE2,...",
          required = true, value_parser = list)]
    pub zones: Vec<List>,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for DisableZonesForLb {
    const NAME: &'static str = "disable-zones-for-lb";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        zones_call(
            api,
            "DisableAvailabilityZonesForLoadBalancer",
            &self.elb,
            &self.zones,
        )
    }
}

fn zones_call(
    api: &dyn Api,
    action: &str,
    elb: &str,
    zones: &[List],
) -> Result<Vec<Row>, CliError> {
    let mut params = vec![p("LoadBalancerName", elb)];
    push_list(&mut params, "AvailabilityZones", &flat(zones));
    let r = api.call(action, &params)?;
    Ok(vec![row(&[
        "AVAILABILITY_ZONES".to_string(),
        r.member_texts("AvailabilityZones").join(", "),
    ])])
}

/// Add a load balancer to one or more availability zones
#[derive(Parser, Debug)]
pub struct EnableZonesForLb {
    /// name of the load balancer to modify (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// availability zones to add the load balancer to (required)
    #[arg(short = 'z', long = "availability-zones", value_name = "ZONE1,ZONE2,...",
          required = true, value_parser = list)]
    pub zones: Vec<List>,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for EnableZonesForLb {
    const NAME: &'static str = "enable-zones-for-lb";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        zones_call(
            api,
            "EnableAvailabilityZonesForLoadBalancer",
            &self.elb,
            &self.zones,
        )
    }
}

/// Modify a load balancer's attributes
///
/// Attributes are given as ATTR=VALUE (positionally or with -a), where ATTR is one of
/// CrossZoneLoadBalancing.Enabled, AccessLog.Enabled, AccessLog.S3BucketName,
/// AccessLog.EmitInterval, AccessLog.S3BucketPrefix, ConnectionDraining.Enabled,
/// ConnectionDraining.Timeout, ConnectionSettings.IdleTimeout, or the key of an additional
/// attribute such as elb.http.desyncmitigationmode; or with the dedicated options below.
#[derive(Parser, Debug)]
#[command(group(ArgGroup::new("attributes").required(true).multiple(true).args([
    "attrs", "attribute", "cross_zone", "access_log_enabled", "access_log_bucket",
    "access_log_prefix", "access_log_interval", "draining_enabled", "draining_timeout",
    "idle_timeout",
])))]
pub struct ModifyLbAttributes {
    /// the load balancer to modify (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// name and new value of each attribute to modify
    #[arg(value_name = "ATTR=VALUE", value_parser = parse_key_value)]
    pub attrs: Vec<(String, String)>,
    /// name and new value of an attribute to modify (may be used multiple times)
    #[arg(short = 'a', long = "attribute", value_name = "ATTR=VALUE",
          value_parser = parse_key_value)]
    pub attribute: Vec<(String, String)>,
    /// whether to route traffic evenly across all instances in all enabled zones
    #[arg(long = "cross-zone-load-balancing", value_name = "true|false")]
    pub cross_zone: Option<String>,
    /// whether to write access logs
    #[arg(long = "access-log-enabled", value_name = "true|false")]
    pub access_log_enabled: Option<String>,
    /// S3 bucket to write access logs to
    #[arg(long = "access-log-s3-bucket-name", value_name = "BUCKET")]
    pub access_log_bucket: Option<String>,
    /// prefix of the access log objects in the bucket
    #[arg(long = "access-log-s3-bucket-prefix", value_name = "PREFIX")]
    pub access_log_prefix: Option<String>,
    /// minutes between access log writes
    #[arg(long = "access-log-emit-interval", value_name = "MINUTES")]
    pub access_log_interval: Option<String>,
    /// whether to let in-flight requests finish on deregistered or unhealthy instances
    #[arg(long = "connection-draining-enabled", value_name = "true|false")]
    pub draining_enabled: Option<String>,
    /// longest time to keep draining connections open
    #[arg(long = "connection-draining-timeout", value_name = "SECONDS")]
    pub draining_timeout: Option<String>,
    /// time after which idle connections are closed
    #[arg(long = "idle-timeout", value_name = "SECONDS")]
    pub idle_timeout: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

impl ModifyLbAttributes {
    /// The request parameters after the load balancer name.
    pub fn attribute_params(&self) -> Params {
        let mut given: Vec<(String, String)> = Vec::new();
        given.extend(self.attrs.iter().cloned());
        given.extend(self.attribute.iter().cloned());
        let options: [(&str, Option<String>); 8] = [
            ("CrossZoneLoadBalancing.Enabled", self.cross_zone.clone()),
            ("AccessLog.Enabled", self.access_log_enabled.clone()),
            ("AccessLog.S3BucketName", self.access_log_bucket.clone()),
            ("AccessLog.S3BucketPrefix", self.access_log_prefix.clone()),
            ("AccessLog.EmitInterval", self.access_log_interval.clone()),
            ("ConnectionDraining.Enabled", self.draining_enabled.clone()),
            ("ConnectionDraining.Timeout", self.draining_timeout.clone()),
            ("ConnectionSettings.IdleTimeout", self.idle_timeout.clone()),
        ];
        for (name, value) in options {
            if let Some(value) = value {
                given.push((name.to_string(), value));
            }
        }
        let mut structured: Vec<(String, String)> = Vec::new();
        let mut additional: Vec<(String, String)> = Vec::new();
        for (key, value) in given {
            let (target, k, v) = match classify_lb_attribute(&key, &value) {
                LbAttribute::Structured(k, v) => (&mut structured, k, v),
                LbAttribute::Additional(k, v) => (&mut additional, k, v),
            };
            // A later value for the same attribute replaces an earlier one.
            match target.iter_mut().find(|(existing, _)| *existing == k) {
                Some(slot) => slot.1 = v,
                None => target.push((k, v)),
            }
        }
        let mut params: Params = structured
            .into_iter()
            .map(|(k, v)| (format!("LoadBalancerAttributes.{k}"), v))
            .collect();
        for (i, (k, v)) in additional.into_iter().enumerate() {
            let base = format!(
                "LoadBalancerAttributes.AdditionalAttributes.member.{}",
                i + 1
            );
            params.push((format!("{base}.Key"), k));
            params.push((format!("{base}.Value"), v));
        }
        params
    }
}

impl EulbCommand for ModifyLbAttributes {
    const NAME: &'static str = "modify-lb-attributes";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let mut params = vec![p("LoadBalancerName", &self.elb)];
        params.extend(self.attribute_params());
        api.call("ModifyLoadBalancerAttributes", &params)?;
        Ok(Vec::new())
    }
}

/// Add one or more instances to a load balancer
#[derive(Parser, Debug)]
pub struct RegisterInstancesWithLb {
    /// name of the load balancer to modify (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// IDs of the instances to register with the load balancer (required)
    #[arg(long = "instances", value_name = "INSTANCE1,INSTANCE2,...", required = true,
          value_parser = list)]
    pub instances: Vec<List>,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for RegisterInstancesWithLb {
    const NAME: &'static str = "register-instances-with-lb";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let mut params = vec![p("LoadBalancerName", &self.elb)];
        push_instances(&mut params, &flat(&self.instances));
        let r = api.call("RegisterInstancesWithLoadBalancer", &params)?;
        Ok(instance_rows(&r))
    }
}

/// Change the certificate that terminates a load balancer's listener's SSL connections
#[derive(Parser, Debug)]
pub struct SetLbListenerSslCert {
    /// name of the load balancer to modify (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// port that should use the certificate (required)
    #[arg(short = 'l', long = "lb-port", value_name = "PORT")]
    pub lb_port: String,
    /// ARN for the server certificate to use (required)
    #[arg(short = 'c', long = "cert-id", value_name = "ARN")]
    pub cert_id: String,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for SetLbListenerSslCert {
    const NAME: &'static str = "set-lb-listener-ssl-cert";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let params = vec![
            p("LoadBalancerName", &self.elb),
            p("LoadBalancerPort", &self.lb_port),
            p("SSLCertificateId", &self.cert_id),
        ];
        api.call("SetLoadBalancerListenerSSLCertificate", &params)?;
        Ok(Vec::new())
    }
}

/// Change the policies associated with a port on which load-balanced back end servers
/// listen.
#[derive(Parser, Debug)]
pub struct SetLbPoliciesForBackendServer {
    /// name of the load balancer to modify (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// port number of the back end server (required)
    #[arg(short = 'i', long = "instance-port", value_name = "PORT")]
    pub instance_port: String,
    /// list of policies to associate with the back end server; "" removes them all
    /// (required)
    #[arg(short = 'p', long = "policy-names", value_name = "POLICY1,POLICY2,...",
          required = true, value_parser = list)]
    pub policy_names: Vec<List>,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for SetLbPoliciesForBackendServer {
    const NAME: &'static str = "set-lb-policies-for-backend-server";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let mut params = vec![
            p("LoadBalancerName", &self.elb),
            p("InstancePort", &self.instance_port),
        ];
        push_list_or_empty(&mut params, "PolicyNames", &flat(&self.policy_names));
        api.call("SetLoadBalancerPoliciesForBackendServer", &params)?;
        Ok(Vec::new())
    }
}

/// Change the policy associated with a load balancer listener
#[derive(Parser, Debug)]
pub struct SetLbPoliciesOfListener {
    /// name of the load balancer to modify (required)
    #[arg(value_name = "ELB")]
    pub elb: String,
    /// port of the listener to modify (required)
    #[arg(short = 'l', long = "lb-port", value_name = "PORT")]
    pub lb_port: String,
    /// list of policies to associate with the listener; "" removes them all (required)
    #[arg(short = 'p', long = "policy-names", value_name = "POLICY1,POLICY2,...",
          required = true, value_parser = list)]
    pub policy_names: Vec<List>,
    #[command(flatten)]
    pub common: Common,
}

impl EulbCommand for SetLbPoliciesOfListener {
    const NAME: &'static str = "set-lb-policies-of-listener";
    common!();
    fn run(&self, api: &dyn Api) -> Result<Vec<Row>, CliError> {
        let mut params = vec![
            p("LoadBalancerName", &self.elb),
            p("LoadBalancerPort", &self.lb_port),
        ];
        push_list_or_empty(&mut params, "PolicyNames", &flat(&self.policy_names));
        api.call("SetLoadBalancerPoliciesOfListener", &params)?;
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Records requests and answers each with the next canned result document.
    struct Fake {
        answers: RefCell<Vec<&'static str>>,
        calls: RefCell<Vec<(String, Params)>>,
    }

    impl Fake {
        fn new(answers: &[&'static str]) -> Self {
            Self {
                answers: RefCell::new(answers.iter().rev().copied().collect()),
                calls: RefCell::new(Vec::new()),
            }
        }
    }

    impl Api for Fake {
        fn call(&self, action: &str, params: &[(String, String)]) -> Result<Elem, CliError> {
            self.calls
                .borrow_mut()
                .push((action.to_string(), params.to_vec()));
            let answer = self.answers.borrow_mut().pop().unwrap_or("<R/>");
            Ok(Elem::parse(answer).unwrap())
        }
    }

    fn parse<T: EulbCommand>(args: &[&str]) -> T {
        T::try_parse_from(std::iter::once("eulb-x").chain(args.iter().copied())).unwrap()
    }

    const LB: &str = "<R><LoadBalancerDescriptions><member>\
        <LoadBalancerName>web</LoadBalancerName><DNSName>web-1.lb.elb.local</DNSName>\
        <CanonicalHostedZoneName>web-1.lb.elb.local</CanonicalHostedZoneName>\
        <ListenerDescriptions>\
          <member><Listener><Protocol>HTTP</Protocol><LoadBalancerPort>80</LoadBalancerPort>\
            <InstanceProtocol>HTTP</InstanceProtocol><InstancePort>8080</InstancePort></Listener>\
            <PolicyNames><member>sticky</member></PolicyNames></member>\
          <member><Listener><Protocol>TCP</Protocol><LoadBalancerPort>25</LoadBalancerPort>\
            <InstanceProtocol>TCP</InstanceProtocol><InstancePort>2525</InstancePort></Listener>\
            <PolicyNames/></member>\
        </ListenerDescriptions>\
        <Policies><AppCookieStickinessPolicies/><LBCookieStickinessPolicies><member>\
          <PolicyName>sticky</PolicyName><CookieExpirationPeriod>60</CookieExpirationPeriod>\
        </member></LBCookieStickinessPolicies><OtherPolicies/></Policies>\
        <BackendServerDescriptions/><AvailabilityZones><member>us-east-1a</member>\
        <member>us-east-1b</member></AvailabilityZones><Subnets/>\
        <Instances><member><InstanceId>i-1</InstanceId></member></Instances>\
        <HealthCheck><Target>HTTP:8080/ping</Target><Interval>30</Interval><Timeout>5</Timeout>\
          <UnhealthyThreshold>2</UnhealthyThreshold><HealthyThreshold>10</HealthyThreshold>\
        </HealthCheck><SourceSecurityGroup><OwnerAlias>amazon-elb</OwnerAlias>\
          <GroupName>amazon-elb-sg</GroupName></SourceSecurityGroup><SecurityGroups/>\
        <CreatedTime>2024-01-02T03:04:05.678Z</CreatedTime><Scheme>internet-facing</Scheme>\
        </member></LoadBalancerDescriptions><NextMarker>web</NextMarker></R>";

    #[test]
    fn describe_lbs_short_long_and_paging() {
        let fake = Fake::new(&[LB, "<R><LoadBalancerDescriptions/></R>"]);
        let rows = parse::<DescribeLbs>(&["web"]).run(&fake).unwrap();
        assert_eq!(
            rows,
            vec![row(&[
                "LOAD_BALANCER",
                "web",
                "web-1.lb.elb.local",
                "2024-01-02T03:04:05.678Z",
                "internet-facing"
            ])]
        );
        let calls = fake.calls.borrow();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].1, vec![p("LoadBalancerNames.member.1", "web")]);
        assert_eq!(calls[1].1[1], p("Marker", "web"));

        let fake = Fake::new(&[LB, "<R/>"]);
        let rows = parse::<DescribeLbs>(&["--show-long"]).run(&fake).unwrap();
        assert_eq!(
            rows[0],
            row(&[
                "LOAD_BALANCER",
                "web",
                "web-1.lb.elb.local",
                "web-1.lb.elb.local",
                "",
                "{interval=30,target=HTTP:8080/ping,timeout=5,healthy-threshold=10,\
                 unhealthy-threshold=2}",
                "us-east-1a,us-east-1b",
                "",
                "",
                "i-1",
                "{protocol=HTTP,lb-port=80,instance-protocol=HTTP,instance-port=8080,{sticky}},\
                 {protocol=TCP,lb-port=25,instance-protocol=TCP,instance-port=2525}",
                "",
                "",
                "{policy-name=sticky,expiration-period=60}",
                "",
                "{owner-alias=amazon-elb,group-name=amazon-elb-sg}",
                "",
                "2024-01-02T03:04:05.678Z",
                "internet-facing",
            ])
        );
    }

    #[test]
    fn create_lb_request() {
        let cmd = parse::<CreateLb>(&[
            "web",
            "-z",
            "us-east-1a,us-east-1b",
            "-l",
            "lb-port=80, protocol=http, instance-port=8080",
            "--listener",
            "lb-port=443,protocol=TCP,instance-port=8443,instance-protocol=ssl",
            "-t",
            "env=prod",
        ]);
        let fake = Fake::new(&["<R><DNSName>web-1.lb</DNSName></R>"]);
        assert_eq!(
            cmd.run(&fake).unwrap(),
            vec![row(&["DNS_NAME", "web-1.lb"])]
        );
        let calls = fake.calls.borrow();
        assert_eq!(calls[0].0, "CreateLoadBalancer");
        let params: Vec<String> = calls[0].1.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            params,
            vec![
                "LoadBalancerName=web",
                "Listeners.member.1.Protocol=http",
                "Listeners.member.1.LoadBalancerPort=80",
                "Listeners.member.1.InstancePort=8080",
                "Listeners.member.2.Protocol=TCP",
                "Listeners.member.2.LoadBalancerPort=443",
                "Listeners.member.2.InstancePort=8443",
                "Listeners.member.2.InstanceProtocol=ssl",
                "AvailabilityZones.member.1=us-east-1a",
                "AvailabilityZones.member.2=us-east-1b",
                "Tags.member.1.Key=env",
                "Tags.member.1.Value=prod",
            ]
        );
    }

    #[test]
    fn usage_errors() {
        // A zone or subnet list is required, but not both.
        assert!(
            CreateLb::try_parse_from([
                "x",
                "web",
                "-l",
                "protocol=HTTP,lb-port=80,instance-port=80"
            ])
            .is_err()
        );
        assert!(
            CreateLb::try_parse_from([
                "x",
                "web",
                "-z",
                "a",
                "-s",
                "s",
                "-l",
                "protocol=HTTP,lb-port=80,instance-port=80"
            ])
            .is_err()
        );
        let e = CreateLb::try_parse_from(["x", "web", "-z", "a", "-l", "protocol"]).unwrap_err();
        assert!(e.to_string().contains("must have format KEY=VALUE"), "{e}");
        // An incomplete listener is the service's to refuse: it parses.
        CreateLb::try_parse_from(["x", "web", "-z", "a", "-l", "protocol=HTTP"]).unwrap();
        assert!(ModifyLbAttributes::try_parse_from(["x", "web"]).is_err());
        // Every health check setting is required; their values are the service's to check.
        let full = [
            "x",
            "web",
            "-t",
            "HTTP:80",
            "-i",
            "30",
            "--timeout",
            "5",
            "--healthy-threshold",
            "2",
            "--unhealthy-threshold",
            "2",
        ];
        ConfigureHealthcheck::try_parse_from(full).unwrap();
        assert!(ConfigureHealthcheck::try_parse_from(&full[..full.len() - 2]).is_err());
    }

    #[test]
    fn modify_attributes_params() {
        let cmd = parse::<ModifyLbAttributes>(&[
            "web",
            "CrossZoneLoadBalancing.Enabled=false",
            "elb.http.desyncmitigationmode=monitor",
            "--cross-zone-load-balancing",
            "TRUE",
            "-a",
            "ConnectionDraining.Timeout=120",
            "--idle-timeout",
            "30",
        ]);
        let params: Vec<String> = cmd
            .attribute_params()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            params,
            vec![
                "LoadBalancerAttributes.CrossZoneLoadBalancing.Enabled=TRUE",
                "LoadBalancerAttributes.ConnectionDraining.Timeout=120",
                "LoadBalancerAttributes.ConnectionSettings.IdleTimeout=30",
                "LoadBalancerAttributes.AdditionalAttributes.member.1.Key=\
                 elb.http.desyncmitigationmode",
                "LoadBalancerAttributes.AdditionalAttributes.member.1.Value=monitor",
            ]
        );
    }

    #[test]
    fn attributes_health_policies_and_tags_output() {
        let attrs = Elem::parse(
            "<LoadBalancerAttributes><CrossZoneLoadBalancing><Enabled>true</Enabled>\
             </CrossZoneLoadBalancing><ConnectionSettings><IdleTimeout>60</IdleTimeout>\
             </ConnectionSettings><AdditionalAttributes><member><Key>elb.k</Key>\
             <Value>v</Value></member></AdditionalAttributes></LoadBalancerAttributes>",
        )
        .unwrap();
        assert_eq!(
            attribute_rows(&attrs),
            vec![
                row(&["AdditionalAttributes.elb.k", "v"]),
                row(&["ConnectionSettings.IdleTimeout", "60"]),
                row(&["CrossZoneLoadBalancing.Enabled", "true"]),
            ]
        );

        let health = "<R><InstanceStates>\
            <member><InstanceId>i-1</InstanceId><State>InService</State>\
              <ReasonCode>N/A</ReasonCode><Description>N/A</Description></member>\
            <member><InstanceId>i-2</InstanceId><State>OutOfService</State>\
              <ReasonCode>ELB</ReasonCode>\
              <Description>Instance registration is still in progress.</Description></member>\
            </InstanceStates></R>";
        let rows = parse::<DescribeInstanceHealth>(&["web"])
            .run(&Fake::new(&[health]))
            .unwrap();
        assert_eq!(
            rows,
            vec![
                row(&["INSTANCE", "i-1", "InService"]),
                row(&["INSTANCE", "i-2", "OutOfService"]),
            ]
        );
        // The description and reason code only with --show-long, as in euca2ools.
        let rows = parse::<DescribeInstanceHealth>(&["web", "--show-long"])
            .run(&Fake::new(&[health]))
            .unwrap();
        assert_eq!(
            rows,
            vec![
                row(&["INSTANCE", "i-1", "InService", "N/A", "N/A"]),
                row(&[
                    "INSTANCE",
                    "i-2",
                    "OutOfService",
                    "Instance registration is still in progress.",
                    "ELB"
                ]),
            ]
        );

        let policies = "<R><PolicyDescriptions><member><PolicyName>p</PolicyName>\
            <PolicyTypeName>ProxyProtocolPolicyType</PolicyTypeName>\
            <PolicyAttributeDescriptions><member><AttributeName>ProxyProtocol</AttributeName>\
            <AttributeValue>true</AttributeValue></member></PolicyAttributeDescriptions>\
            </member></PolicyDescriptions></R>";
        let rows = parse::<DescribeLbPolicies>(&["web", "--show-long"])
            .run(&Fake::new(&[policies]))
            .unwrap();
        assert_eq!(
            rows,
            vec![row(&[
                "POLICY",
                "p",
                "ProxyProtocolPolicyType",
                "{name=ProxyProtocol,value=true}"
            ])]
        );

        let tags = "<R><TagDescriptions><member><LoadBalancerName>web</LoadBalancerName>\
            <Tags><member><Key>env</Key><Value>prod</Value></member></Tags></member>\
            </TagDescriptions></R>";
        let rows = parse::<DescribeTags>(&["web"])
            .run(&Fake::new(&[tags]))
            .unwrap();
        assert_eq!(
            rows,
            vec![row(&["TAG", "load-balancer", "web", "env", "prod"])]
        );
    }

    #[test]
    fn create_lb_policy_attribute_sources_in_euca2ools_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("attrs");
        std::fs::write(
            &file,
            "# from a file\n\nReference = ELBSecurityPolicy-2016-08\n",
        )
        .unwrap();
        let cmd = parse::<CreateLbPolicy>(&[
            "web",
            "-n",
            "tls",
            "-t",
            "SSLNegotiationPolicyType",
            "--attributes-from-file",
            file.to_str().unwrap(),
            "-A",
            "Protocol-TLSv1.2=true,Protocol-TLSv1=false",
            "-a",
            "name=Server-Defined-Cipher-Order, value=true",
            "--attributes",
            "ECDHE-RSA-AES128-GCM-SHA256=true",
        ]);
        let fake = Fake::new(&["<R/>"]);
        cmd.run(&fake).unwrap();
        let calls = fake.calls.borrow();
        assert_eq!(calls[0].0, "CreateLoadBalancerPolicy");
        let params: Vec<String> = calls[0].1.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let attr = |i: usize, name: &str, value: &str| {
            [
                format!("PolicyAttributes.member.{i}.AttributeName={name}"),
                format!("PolicyAttributes.member.{i}.AttributeValue={value}"),
            ]
        };
        let mut expected = vec![
            "LoadBalancerName=web".to_string(),
            "PolicyName=tls".into(),
            "PolicyTypeName=SSLNegotiationPolicyType".into(),
        ];
        expected.extend(attr(1, "Server-Defined-Cipher-Order", "true"));
        expected.extend(attr(2, "Protocol-TLSv1.2", "true"));
        expected.extend(attr(3, "Protocol-TLSv1", "false"));
        expected.extend(attr(4, "ECDHE-RSA-AES128-GCM-SHA256", "true"));
        expected.extend(attr(5, "Reference", "ELBSecurityPolicy-2016-08"));
        assert_eq!(params, expected);

        // Long forms, and a bad file line names the file and line; nothing is sent.
        std::fs::write(&file, "ok=1\nbroken\n").unwrap();
        let cmd = parse::<CreateLbPolicy>(&[
            "web",
            "--policy-name",
            "p",
            "--policy-type",
            "T",
            "--attributes-from-file",
            file.to_str().unwrap(),
        ]);
        let fake = Fake::new(&[]);
        let e = cmd.run(&fake).unwrap_err().to_string();
        assert!(
            e.contains("line 2: attribute 'broken' must have format NAME=VALUE"),
            "{e}"
        );
        assert!(fake.calls.borrow().is_empty());
        assert!(
            CreateLbPolicy::try_parse_from(["x", "web", "-n", "p", "-t", "T", "-A", "x"]).is_err()
        );
    }

    #[test]
    fn policy_lists_may_be_empty() {
        let fake = Fake::new(&["<R/>"]);
        parse::<SetLbPoliciesOfListener>(&["web", "-l", "80", "-p", ""])
            .run(&fake)
            .unwrap();
        assert_eq!(
            fake.calls.borrow()[0].1,
            vec![
                p("LoadBalancerName", "web"),
                p("LoadBalancerPort", "80"),
                p("PolicyNames", "")
            ]
        );
    }
}
