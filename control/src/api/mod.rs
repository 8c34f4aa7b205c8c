//! The ELB Query API actions. [`dispatch`] maps `Action` to a handler; every handler parses
//! its parameters, authorises the caller on the resources it names, applies the rules, and
//! writes the result document.

mod attributes;
mod instances;
mod lbs;
mod limits;
mod listeners;
mod placement;
mod policies;
mod resolve;
mod tags;

use crate::error::{ApiError, ErrorCode};
use crate::iam::{self, Decision, PolicyDocument};
use crate::model::{LbKey, LoadBalancer, Scheme};
use crate::query::Params;
use crate::quota::Quotas;
use crate::server::AppState;
use crate::store::{LbPlacement, PlacementState, StoreError, servo_lb_name};
use crate::xml::{self, XmlWriter};

macro_rules! actions {
    ($($name:ident),* $(,)?) => {
        /// Every action of the classic ELB API (2012-06-01).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Action { $($name),* }

        impl Action {
            pub const ALL: &'static [Action] = &[$(Action::$name),*];

            pub fn as_str(self) -> &'static str {
                match self { $(Action::$name => stringify!($name)),* }
            }
        }
    };
}

actions!(
    AddTags,
    ApplySecurityGroupsToLoadBalancer,
    AttachLoadBalancerToSubnets,
    ConfigureHealthCheck,
    CreateAppCookieStickinessPolicy,
    CreateLBCookieStickinessPolicy,
    CreateLoadBalancer,
    CreateLoadBalancerListeners,
    CreateLoadBalancerPolicy,
    DeleteLoadBalancer,
    DeleteLoadBalancerListeners,
    DeleteLoadBalancerPolicy,
    DeregisterInstancesFromLoadBalancer,
    DescribeAccountLimits,
    DescribeInstanceHealth,
    DescribeLoadBalancerAttributes,
    DescribeLoadBalancerPolicies,
    DescribeLoadBalancerPolicyTypes,
    DescribeLoadBalancers,
    DescribeTags,
    DetachLoadBalancerFromSubnets,
    DisableAvailabilityZonesForLoadBalancer,
    EnableAvailabilityZonesForLoadBalancer,
    ModifyLoadBalancerAttributes,
    RegisterInstancesWithLoadBalancer,
    RemoveTags,
    SetLoadBalancerListenerSSLCertificate,
    SetLoadBalancerPoliciesForBackendServer,
    SetLoadBalancerPoliciesOfListener,
);

impl Action {
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.as_str() == text)
    }

    /// `elasticloadbalancing:<Action>`, the IAM action name.
    pub fn iam_name(self) -> String {
        format!("{}:{}", iam::SERVICE_PREFIX, self.as_str())
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account_id: String,
    pub user_name: String,
    pub access_key_id: String,
    pub is_root: bool,
    /// Member of an administrator account (may use `verbose`).
    pub is_admin: bool,
    /// The user's policies (unused for root users, who may do anything in their account).
    pub policies: Vec<PolicyDocument>,
}

impl Caller {
    pub fn arn(&self) -> String {
        if self.is_root {
            format!("arn:aws:iam::{}:root", self.account_id)
        } else {
            format!("arn:aws:iam::{}:user/{}", self.account_id, self.user_name)
        }
    }
}

/// Everything a handler needs about the request it serves.
pub struct Ctx<'a> {
    pub state: &'a AppState,
    pub caller: &'a Caller,
    pub region: &'a str,
    pub action: Action,
    pub request_id: &'a str,
    pub params: &'a Params,
}

impl Ctx<'_> {
    pub fn key(&self, name: &str) -> LbKey {
        LbKey {
            account_id: self.caller.account_id.clone(),
            region: self.region.to_string(),
            name: name.to_string(),
        }
    }

    pub fn arn(&self, account_id: &str, name: &str) -> String {
        iam::load_balancer_arn(self.region, account_id, name)
    }

    /// Whether the caller may perform this action on `account_id`'s load balancer `name`.
    pub fn allowed(&self, account_id: &str, name: &str) -> bool {
        if self.caller.is_root && account_id == self.caller.account_id {
            return true;
        }
        if self.caller.is_root {
            // Administrators' root users act on other accounts only through `verbose` reads.
            return self.caller.is_admin;
        }
        iam::evaluate(
            &self.caller.policies,
            &self.action.iam_name(),
            &self.arn(account_id, name),
        ) == Decision::Allow
    }

    fn denied(&self, resource: &str) -> ApiError {
        ApiError::new(
            ErrorCode::AccessDenied,
            format!(
                "User: {} is not authorized to perform: {} on resource: {resource}",
                self.caller.arn(),
                self.action.iam_name()
            ),
        )
    }

    /// Authorises the action on the caller's own load balancers named `names`.
    pub fn authorize<'n>(&self, names: impl IntoIterator<Item = &'n str>) -> Result<(), ApiError> {
        for name in names {
            if !self.allowed(&self.caller.account_id, name) {
                return Err(self.denied(&self.arn(&self.caller.account_id, name)));
            }
        }
        Ok(())
    }

    /// Authorises an action that names no load balancer (or lists them): some statement must
    /// allow it; list results are then filtered with [`allowed`](Self::allowed).
    pub fn authorize_any(&self) -> Result<(), ApiError> {
        if self.caller.is_root {
            return Ok(());
        }
        let action = self.action.iam_name();
        // A Deny on every resource ends it here; otherwise some Allow must exist.
        let denied_everywhere =
            iam::evaluate(&self.caller.policies, &action, "*") == Decision::ExplicitDeny;
        if !denied_everywhere && iam::may_allow_some(&self.caller.policies, &action) {
            Ok(())
        } else {
            Err(self.denied("*"))
        }
    }

    pub async fn quotas(&self) -> Result<Quotas, ApiError> {
        let overrides = self
            .state
            .store()
            .quota_overrides(&self.caller.account_id)
            .await?;
        Ok(Quotas::from_overrides(&overrides))
    }

    /// The result document of this action.
    pub fn respond(&self, result: impl FnOnce(&mut XmlWriter)) -> String {
        xml::response_document(self.action.as_str(), self.request_id, result)
    }

    /// The single required `LoadBalancerName`, checked and authorised.
    pub fn lb_name(&self) -> Result<&str, ApiError> {
        let name = self.params.required("LoadBalancerName")?;
        crate::validate::lb_name_lookup(name)?;
        self.authorize([name])?;
        Ok(name)
    }

    /// Changes the caller's load balancer `name` with `change`, which may refuse; the result
    /// must pass the contract's rules ([`crate::validate::check_rules`]) or nothing is
    /// written.
    pub async fn update_lb<T>(
        &self,
        name: &str,
        change: impl FnOnce(&mut LoadBalancer) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        self.state
            .store()
            .update_lb(&self.key(name), |lb| {
                let out = change(lb)?;
                crate::validate::check_rules(lb)?;
                Ok(out)
            })
            .await
    }

    /// Where servos stand now, for [`servable`](Self::servable).
    pub async fn placement(&self) -> Result<PlacementState, ApiError> {
        Ok(self
            .state
            .store()
            .placement_snapshot(self.state.config().servo.timeout_ms())
            .await?)
    }

    /// Refuses a load balancer (new or changed) that no live servo could serve, naming the
    /// zone and the port, rather than one whose DNS name answers nothing or a change that
    /// would take it off a zone's servos. `check` says which zones must be servable.
    pub fn servable(
        &self,
        placement: &PlacementState,
        lb: &LoadBalancer,
        check: Servable<'_>,
    ) -> Result<(), ApiError> {
        let wanted = LbPlacement {
            id: lb.id.clone(),
            servo_name: servo_lb_name(&lb.key.name, &lb.key.account_id),
            internal: lb.scheme == Scheme::Internal,
            zones: lb.zones.clone(),
            ports: lb.listeners.iter().map(|l| l.load_balancer_port).collect(),
        };
        let all = crate::readiness::unservable(
            placement,
            wanted,
            self.state.config().servo.servos_per_zone,
        );
        let dead_everywhere =
            !all.is_empty() && all.len() == lb.zones.len() && all.iter().all(|u| u.no_live_servo);
        let why: Vec<&str> = all
            .iter()
            .filter(|u| match check {
                Servable::Everywhere => true,
                Servable::InZones(zones) => zones.contains(&u.zone),
                Servable::WhereServosLive => !u.no_live_servo || dead_everywhere,
            })
            .map(|u| u.why.as_str())
            .collect();
        if why.is_empty() {
            return Ok(());
        }
        Err(ApiError::invalid_config(format!(
            "Load balancer {} cannot be served: {}. Start servos there (elb-control admin servo \
             create, elb-servo run) or use other zones or ports; `elb-control admin status` shows \
             what is free.",
            lb.key.name,
            why.join("; ")
        )))
    }
}

/// Which zones of a load balancer [`Ctx::servable`] requires a live servo to take it in.
#[derive(Debug, Clone, Copy)]
pub enum Servable<'a> {
    /// Every zone (a new load balancer).
    Everywhere,
    /// These zones (zones being enabled).
    InZones(&'a [String]),
    /// Every zone with a live servo (a change of an existing load balancer: a port taken on
    /// every address would take it off that zone's servos); zones without any live servo do
    /// not count unless no zone has one.
    WhereServosLive,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound {
                what: "load balancer",
                name,
            } => ApiError::lb_not_found(&name),
            StoreError::AlreadyExists {
                what: "load balancer",
                name,
            } => ApiError::new(
                ErrorCode::DuplicateLoadBalancerName,
                format!("The specified load balancer name already exists for this account: {name}"),
            ),
            StoreError::QuotaExceeded {
                what: "load balancers",
                limit,
            } => ApiError::new(
                ErrorCode::TooManyLoadBalancers,
                format!(
                    "Exceeded the quota of {limit} load balancers for this account in this region"
                ),
            ),
            other => ApiError::internal(other),
        }
    }
}

/// Runs the handler of `ctx.action`.
pub async fn dispatch(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    use Action::*;
    match ctx.action {
        CreateLoadBalancer => lbs::create(ctx).await,
        DeleteLoadBalancer => lbs::delete(ctx).await,
        DescribeLoadBalancers => lbs::describe(ctx).await,
        CreateLoadBalancerListeners => listeners::create(ctx).await,
        DeleteLoadBalancerListeners => listeners::delete(ctx).await,
        SetLoadBalancerListenerSSLCertificate => listeners::set_certificate(ctx).await,
        RegisterInstancesWithLoadBalancer => instances::register(ctx).await,
        DeregisterInstancesFromLoadBalancer => instances::deregister(ctx).await,
        DescribeInstanceHealth => instances::describe_health(ctx).await,
        ConfigureHealthCheck => instances::configure_health_check(ctx).await,
        EnableAvailabilityZonesForLoadBalancer => placement::enable_zones(ctx).await,
        DisableAvailabilityZonesForLoadBalancer => placement::disable_zones(ctx).await,
        ApplySecurityGroupsToLoadBalancer => placement::apply_security_groups(ctx).await,
        AttachLoadBalancerToSubnets => placement::attach_subnets(ctx).await,
        DetachLoadBalancerFromSubnets => placement::detach_subnets(ctx).await,
        CreateAppCookieStickinessPolicy => policies::create_app_cookie(ctx).await,
        CreateLBCookieStickinessPolicy => policies::create_lb_cookie(ctx).await,
        CreateLoadBalancerPolicy => policies::create(ctx).await,
        DeleteLoadBalancerPolicy => policies::delete(ctx).await,
        DescribeLoadBalancerPolicies => policies::describe(ctx).await,
        DescribeLoadBalancerPolicyTypes => policies::describe_types(ctx).await,
        SetLoadBalancerPoliciesOfListener => policies::set_listener(ctx).await,
        SetLoadBalancerPoliciesForBackendServer => policies::set_backend(ctx).await,
        DescribeLoadBalancerAttributes => attributes::describe(ctx).await,
        ModifyLoadBalancerAttributes => attributes::modify(ctx).await,
        AddTags => tags::add(ctx).await,
        RemoveTags => tags::remove(ctx).await,
        DescribeTags => tags::describe(ctx).await,
        DescribeAccountLimits => limits::describe(ctx).await,
    }
}

/// Paging of the Describe* actions: `PageSize` 1-400 (default 400).
pub fn page_size(params: &Params) -> Result<usize, ApiError> {
    let size = params.int("PageSize", 1, 400)?.unwrap_or(400);
    Ok(usize::try_from(size).unwrap_or(400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_actions_parse() {
        assert_eq!(Action::ALL.len(), 29);
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(*a));
        }
        assert_eq!(Action::parse("CreateTargetGroup"), None);
        assert_eq!(
            Action::CreateLoadBalancer.iam_name(),
            "elasticloadbalancing:CreateLoadBalancer"
        );
    }
}
