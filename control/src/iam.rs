//! IAM-style identity policies for the `elasticloadbalancing` service: parsing of the JSON
//! document and evaluation (explicit Deny wins over Allow; no matching Allow is a deny).
//!
//! Supported: `Version`, `Statement` (object or list), `Sid`, `Effect`, `Action`/`NotAction`,
//! `Resource`/`NotResource`, with `*` and `?` wildcards. `Condition` and `Principal` are rejected
//! when the policy is stored, so that nothing in a stored policy is silently ignored.

use serde_json::Value;

/// The IAM service prefix of every action of this API.
pub const SERVICE_PREFIX: &str = "elasticloadbalancing";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid policy document: {0}")]
pub struct PolicyError(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// A list of patterns, or its negation (`NotAction` / `NotResource`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Patterns {
    Any(Vec<String>),
    NotAny(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    effect: Effect,
    actions: Patterns,
    resources: Patterns,
}

/// A parsed policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDocument {
    statements: Vec<Statement>,
}

/// Outcome of evaluating a request against a principal's policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    ExplicitDeny,
    ImplicitDeny,
}

fn string_or_list(value: &Value, field: &str) -> Result<Vec<String>, PolicyError> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| PolicyError(format!("{field} entries must be strings")))
            })
            .collect(),
        _ => Err(PolicyError(format!(
            "{field} must be a string or a non-empty list of strings"
        ))),
    }
}

fn patterns(
    stmt: &serde_json::Map<String, Value>,
    plain: &str,
    not: &str,
) -> Result<Patterns, PolicyError> {
    match (stmt.get(plain), stmt.get(not)) {
        (Some(v), None) => Ok(Patterns::Any(string_or_list(v, plain)?)),
        (None, Some(v)) => Ok(Patterns::NotAny(string_or_list(v, not)?)),
        (Some(_), Some(_)) => Err(PolicyError(format!(
            "a statement cannot have both {plain} and {not}"
        ))),
        (None, None) => Err(PolicyError(format!(
            "every statement needs {plain} or {not}"
        ))),
    }
}

impl PolicyDocument {
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let doc: Value =
            serde_json::from_str(text).map_err(|e| PolicyError(format!("not valid JSON: {e}")))?;
        let obj = doc
            .as_object()
            .ok_or_else(|| PolicyError("must be a JSON object".into()))?;
        for key in obj.keys() {
            if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
                return Err(PolicyError(format!("unsupported top-level element {key}")));
            }
        }
        if let Some(version) = obj.get("Version")
            && !matches!(version.as_str(), Some("2012-10-17" | "2008-10-17"))
        {
            return Err(PolicyError(
                "Version must be 2012-10-17 or 2008-10-17".into(),
            ));
        }
        let raw = match obj.get("Statement") {
            Some(Value::Array(items)) => items.clone(),
            Some(v @ Value::Object(_)) => vec![v.clone()],
            _ => return Err(PolicyError("Statement must be an object or a list".into())),
        };
        let mut statements = Vec::with_capacity(raw.len());
        for item in &raw {
            let stmt = item
                .as_object()
                .ok_or_else(|| PolicyError("statements must be objects".into()))?;
            for key in stmt.keys() {
                match key.as_str() {
                    "Sid" | "Effect" | "Action" | "NotAction" | "Resource" | "NotResource" => {}
                    "Condition" | "Principal" | "NotPrincipal" => {
                        return Err(PolicyError(format!(
                            "{key} is not supported in identity policies of this service"
                        )));
                    }
                    other => return Err(PolicyError(format!("unknown statement element {other}"))),
                }
            }
            let effect = match stmt.get("Effect").and_then(Value::as_str) {
                Some("Allow") => Effect::Allow,
                Some("Deny") => Effect::Deny,
                _ => return Err(PolicyError("Effect must be \"Allow\" or \"Deny\"".into())),
            };
            let actions = patterns(stmt, "Action", "NotAction")?;
            let resources = patterns(stmt, "Resource", "NotResource")?;
            statements.push(Statement {
                effect,
                actions,
                resources,
            });
        }
        Ok(Self { statements })
    }
}

/// Wildcard match: `*` is any run of characters, `?` exactly one.
fn wildcard_match(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let eq = |a: char, b: char| {
        if ignore_case {
            a.to_lowercase().eq(b.to_lowercase())
        } else {
            a == b
        }
    };
    // Iterative matcher with single-star backtracking: linear in practice, no recursion.
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && eq(p[pi], t[ti]))) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

impl Patterns {
    fn matches(&self, value: &str, ignore_case: bool) -> bool {
        match self {
            Patterns::Any(list) => list.iter().any(|p| wildcard_match(p, value, ignore_case)),
            Patterns::NotAny(list) => !list.iter().any(|p| wildcard_match(p, value, ignore_case)),
        }
    }
}

/// Evaluates `action` (e.g. `elasticloadbalancing:CreateLoadBalancer`, matched without regard
/// to case) on `resource` (an ARN, matched exactly) against all of a principal's policies.
pub fn evaluate(policies: &[PolicyDocument], action: &str, resource: &str) -> Decision {
    let mut allowed = false;
    for stmt in policies.iter().flat_map(|p| &p.statements) {
        if stmt.actions.matches(action, true) && stmt.resources.matches(resource, false) {
            match stmt.effect {
                Effect::Deny => return Decision::ExplicitDeny,
                Effect::Allow => allowed = true,
            }
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

/// Whether any statement could allow `action` on some resource: the gate for list-style
/// requests whose results are then filtered resource by resource.
pub fn may_allow_some(policies: &[PolicyDocument], action: &str) -> bool {
    policies
        .iter()
        .flat_map(|p| &p.statements)
        .any(|s| s.effect == Effect::Allow && s.actions.matches(action, true))
}

/// `arn:aws:elasticloadbalancing:<region>:<account>:loadbalancer/<name>`.
pub fn load_balancer_arn(region: &str, account_id: &str, name: &str) -> String {
    format!("arn:aws:{SERVICE_PREFIX}:{region}:{account_id}:loadbalancer/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/web-1";

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", "", false));
        assert!(wildcard_match(
            "elasticloadbalancing:*",
            "elasticloadbalancing:AddTags",
            false
        ));
        assert!(wildcard_match(
            "ELASTICloadbalancing:describe*",
            "elasticloadbalancing:DescribeTags",
            true
        ));
        assert!(!wildcard_match(
            "elasticloadbalancing:describe*",
            "elasticloadbalancing:DescribeTags",
            false
        ));
        assert!(wildcard_match("a?c*f", "abcdef", false));
        assert!(!wildcard_match("a?c", "ac", false));
        assert!(wildcard_match("*:loadbalancer/web-*", ARN, false));
        assert!(!wildcard_match("*:loadbalancer/db-*", ARN, false));
    }

    #[test]
    fn explicit_deny_wins() {
        let allow = PolicyDocument::parse(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"elasticloadbalancing:*","Resource":"*"}}"#,
        )
        .unwrap();
        let deny = PolicyDocument::parse(
            r#"{"Statement":[{"Effect":"Deny","Action":["elasticloadbalancing:Delete*"],"Resource":"*:loadbalancer/web-*"}]}"#,
        )
        .unwrap();
        let both = [allow.clone(), deny];
        assert_eq!(
            evaluate(&both, "elasticloadbalancing:DescribeLoadBalancers", ARN),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&both, "elasticloadbalancing:DeleteLoadBalancer", ARN),
            Decision::ExplicitDeny
        );
        let other = ARN.replace("web-1", "db-1");
        assert_eq!(
            evaluate(&both, "elasticloadbalancing:DeleteLoadBalancer", &other),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&[], "elasticloadbalancing:DescribeLoadBalancers", ARN),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn not_action_and_not_resource() {
        let doc = PolicyDocument::parse(
            r#"{"Statement":[{"Effect":"Allow","NotAction":"elasticloadbalancing:Delete*","NotResource":"*/secret"}]}"#,
        )
        .unwrap();
        assert_eq!(
            evaluate(
                std::slice::from_ref(&doc),
                "elasticloadbalancing:AddTags",
                ARN
            ),
            Decision::Allow
        );
        assert_eq!(
            evaluate(
                std::slice::from_ref(&doc),
                "elasticloadbalancing:DeleteLoadBalancer",
                ARN
            ),
            Decision::ImplicitDeny
        );
        let secret = ARN.replace("web-1", "secret");
        assert_eq!(
            evaluate(&[doc], "elasticloadbalancing:AddTags", &secret),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn rejects_what_it_cannot_honour() {
        for bad in [
            "not json",
            "[]",
            r#"{"Statement":[]}"#.replace("[]", "7").as_str(),
            r#"{"Statement":{"Effect":"Maybe","Action":"*","Resource":"*"}}"#,
            r#"{"Statement":{"Effect":"Allow","Resource":"*"}}"#,
            r#"{"Statement":{"Effect":"Allow","Action":"*"}}"#,
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{}}}"#,
            r#"{"Statement":{"Effect":"Allow","Action":[],"Resource":"*"}}"#,
            r#"{"Version":"1999-01-01","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#,
        ] {
            assert!(PolicyDocument::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn may_allow_some_checks_actions_only() {
        let doc = PolicyDocument::parse(
            r#"{"Statement":{"Effect":"Allow","Action":"elasticloadbalancing:Describe*","Resource":"*/web-*"}}"#,
        )
        .unwrap();
        assert!(may_allow_some(
            std::slice::from_ref(&doc),
            "elasticloadbalancing:DescribeLoadBalancers"
        ));
        assert!(!may_allow_some(
            &[doc],
            "elasticloadbalancing:CreateLoadBalancer"
        ));
    }
}
