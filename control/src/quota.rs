//! Per-account quotas: AWS's Classic ELB defaults, overridable per account by an admin, and
//! reported by DescribeAccountLimits under these names.

/// A quota an account is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaName {
    /// Load balancers per region.
    LoadBalancers,
    /// Listeners per load balancer.
    Listeners,
    /// Registered instances per load balancer.
    RegisteredInstances,
    /// Tags per load balancer.
    Tags,
}

impl QuotaName {
    pub const ALL: [QuotaName; 4] = [
        Self::LoadBalancers,
        Self::Listeners,
        Self::RegisteredInstances,
        Self::Tags,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoadBalancers => "classic-load-balancers",
            Self::Listeners => "classic-listeners",
            Self::RegisteredInstances => "classic-registered-instances",
            Self::Tags => "classic-tags-per-load-balancer",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|q| q.as_str() == text)
    }

    /// AWS's defaults (Classic Load Balancer quotas; 10 tags per the AddTags documentation).
    pub fn default_value(self) -> i64 {
        match self {
            Self::LoadBalancers => 20,
            Self::Listeners => 100,
            Self::RegisteredInstances => 1000,
            Self::Tags => 10,
        }
    }
}

/// An account's effective quotas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quotas {
    values: [i64; 4],
}

impl Quotas {
    /// Defaults with the account's overrides applied (unknown names are ignored).
    pub fn from_overrides(overrides: &[(String, i64)]) -> Self {
        let mut values = QuotaName::ALL.map(QuotaName::default_value);
        for (name, value) in overrides {
            if let Some(q) = QuotaName::parse(name) {
                values[q as usize] = *value;
            }
        }
        Self { values }
    }

    pub fn get(&self, name: QuotaName) -> i64 {
        self.values[name as usize]
    }

    pub fn max_usize(&self, name: QuotaName) -> usize {
        usize::try_from(self.get(name)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let q = Quotas::from_overrides(&[("classic-listeners".into(), 3), ("bogus".into(), 1)]);
        assert_eq!(q.get(QuotaName::LoadBalancers), 20);
        assert_eq!(q.get(QuotaName::Listeners), 3);
        assert_eq!(q.get(QuotaName::RegisteredInstances), 1000);
        assert_eq!(q.get(QuotaName::Tags), 10);
        assert_eq!(
            QuotaName::parse("classic-tags-per-load-balancer"),
            Some(QuotaName::Tags)
        );
    }
}
