//! Administration operations (`elb-control admin ...`): accounts, users, keys, policies,
//! quotas, the built-in inventory ([`security_groups`] too), and every account's load
//! balancers ([`load_balancers`]). They work directly on the store, so they can run while
//! servers are up; servers see the changes on their next request (and through the config
//! version poll).

pub mod load_balancers;
pub mod security_groups;

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::iam::PolicyDocument;
use crate::quota::{QuotaName, Quotas};
use crate::store::{InventoryInstance, Store, StoreError};
use crate::timefmt::format_iso8601_millis;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> AdminError {
    AdminError::Invalid(message.into())
}

fn simple_name(what: &str, name: &str, max: usize) -> Result<(), AdminError> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} '{name}' is invalid: 1-{max} of letters, digits and +=,.@_-"
        )))
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

pub async fn account_create(store: &Store, name: &str, admin: bool) -> Result<Value, AdminError> {
    simple_name("account name", name, 64)?;
    let (account, key) = store.create_account(name, admin).await?;
    Ok(json!({
        "AccountId": account.id,
        "AccountName": account.name,
        "Admin": account.is_admin,
        "UserName": key.user_name,
        "AccessKeyId": key.id,
        "SecretAccessKey": key.secret,
    }))
}

pub async fn account_list(store: &Store) -> Result<Value, AdminError> {
    Ok(to_json(&store.list_accounts().await?))
}

pub async fn user_create(store: &Store, account: &str, name: &str) -> Result<Value, AdminError> {
    simple_name("user name", name, 64)?;
    if name == crate::store::ROOT_USER_NAME {
        return Err(invalid(
            "the user name 'root' is reserved for the account's root user",
        ));
    }
    let account = store.find_account(account).await?;
    let (user, key) = store.create_user(&account.id, name).await?;
    Ok(json!({
        "AccountId": user.account_id,
        "UserName": user.name,
        "AccessKeyId": key.id,
        "SecretAccessKey": key.secret,
    }))
}

pub async fn user_list(store: &Store, account: &str) -> Result<Value, AdminError> {
    let account = store.find_account(account).await?;
    Ok(to_json(&store.list_users(&account.id).await?))
}

pub async fn key_create(store: &Store, account: &str, user: &str) -> Result<Value, AdminError> {
    let account = store.find_account(account).await?;
    Ok(to_json(&store.create_access_key(&account.id, user).await?))
}

pub async fn key_list(store: &Store, account: &str) -> Result<Value, AdminError> {
    let account = store.find_account(account).await?;
    let keys = store.list_access_keys(&account.id).await?;
    Ok(Value::Array(
        keys.into_iter()
            .map(
                |(id, user, active)| json!({"AccessKeyId": id, "UserName": user, "Active": active}),
            )
            .collect(),
    ))
}

pub async fn policy_put(
    store: &Store,
    account: &str,
    user: &str,
    name: &str,
    document: &str,
) -> Result<Value, AdminError> {
    simple_name("policy name", name, 128)?;
    PolicyDocument::parse(document).map_err(|e| invalid(e.to_string()))?;
    let account = store.find_account(account).await?;
    if user == crate::store::ROOT_USER_NAME {
        return Err(invalid(
            "the root user is allowed everything in its account; policies apply to IAM users",
        ));
    }
    store
        .put_user_policy(&account.id, user, name, document)
        .await?;
    Ok(json!({"AccountId": account.id, "UserName": user, "PolicyName": name}))
}

pub async fn policy_list(
    store: &Store,
    account: &str,
    user: Option<&str>,
) -> Result<Value, AdminError> {
    let account = store.find_account(account).await?;
    Ok(to_json(&store.user_policies(&account.id, user).await?))
}

pub async fn policy_delete(
    store: &Store,
    account: &str,
    user: &str,
    name: &str,
) -> Result<Value, AdminError> {
    let account = store.find_account(account).await?;
    if !store.delete_user_policy(&account.id, user, name).await? {
        return Err(invalid(format!(
            "user '{user}' of account {} has no policy '{name}'",
            account.id
        )));
    }
    Ok(json!({"Deleted": name}))
}

pub async fn quota_set(
    store: &Store,
    account: &str,
    name: &str,
    value: i64,
) -> Result<Value, AdminError> {
    let quota = QuotaName::parse(name).ok_or_else(|| {
        let names: Vec<&str> = QuotaName::ALL.iter().map(|q| q.as_str()).collect();
        invalid(format!(
            "unknown quota '{name}': one of {}",
            names.join(", ")
        ))
    })?;
    if !(0..=1_000_000).contains(&value) {
        return Err(invalid("quota values must be between 0 and 1000000"));
    }
    let account = store.find_account(account).await?;
    store.set_quota(&account.id, quota.as_str(), value).await?;
    quota_list(store, &account.id).await
}

pub async fn quota_list(store: &Store, account: &str) -> Result<Value, AdminError> {
    let account = store.find_account(account).await?;
    let quotas = Quotas::from_overrides(&store.quota_overrides(&account.id).await?);
    Ok(Value::Array(
        QuotaName::ALL
            .iter()
            .map(|q| json!({"AccountId": account.id, "Name": q.as_str(), "Max": quotas.get(*q), "Default": q.default_value()}))
            .collect(),
    ))
}

pub async fn zone_add(store: &Store, name: &str, region: &str) -> Result<Value, AdminError> {
    crate::validate::zone_name(name).map_err(|e| invalid(e.message))?;
    crate::validate::zone_name(region)
        .map_err(|_| invalid(format!("region '{region}' is invalid")))?;
    store.add_zone(name, region).await?;
    Ok(json!({"ZoneName": name, "Region": region}))
}

pub async fn zone_list(store: &Store) -> Result<Value, AdminError> {
    Ok(to_json(&store.list_zones().await?))
}

pub async fn subnet_add(
    store: &Store,
    id: &str,
    zone: &str,
    vpc: &str,
) -> Result<Value, AdminError> {
    if !crate::validate::is_subnet_id(id) {
        return Err(invalid(format!(
            "subnet id '{id}' must look like subnet-0123abcd"
        )));
    }
    if !vpc
        .strip_prefix("vpc-")
        .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return Err(invalid(format!(
            "VPC id '{vpc}' must look like vpc-0123abcd"
        )));
    }
    store.add_subnet(id, zone, vpc).await?;
    Ok(json!({"SubnetId": id, "AvailabilityZone": zone, "VpcId": vpc}))
}

pub async fn subnet_list(store: &Store) -> Result<Value, AdminError> {
    Ok(to_json(&store.list_subnets().await?))
}

pub async fn instance_add(
    store: &Store,
    id: &str,
    address: &str,
    zone: &str,
    account: Option<&str>,
) -> Result<Value, AdminError> {
    if !crate::validate::is_instance_id(id) {
        return Err(invalid(format!(
            "instance id '{id}' must look like i-0123abcd"
        )));
    }
    let ip: IpAddr = address
        .parse()
        .map_err(|_| invalid(format!("'{address}' is not an IP address")))?;
    let account_id = match account {
        Some(a) => Some(store.find_account(a).await?.id),
        None => None,
    };
    let instance = InventoryInstance {
        id: id.to_string(),
        address: ip.to_string(),
        zone: zone.to_string(),
        account_id,
    };
    store.add_instance(&instance).await?;
    Ok(to_json(&instance))
}

pub async fn instance_list(store: &Store) -> Result<Value, AdminError> {
    Ok(to_json(&store.list_instances().await?))
}

pub async fn instance_remove(store: &Store, id: &str) -> Result<Value, AdminError> {
    if !store.remove_instance(id).await? {
        return Err(invalid(format!("instance '{id}' is not in the inventory")));
    }
    Ok(json!({"Removed": id}))
}

/// Servo ids: letters, digits, `.`, `_`, `-` (no `:`, the token separator).
fn servo_id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A new servo secret: 40 characters of a 64-letter URL-safe alphabet (240 random bits).
fn new_servo_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut buf = [0u8; 40];
    crate::store::fill_random(&mut buf);
    // 64 letters: the modulo is unbiased.
    buf.iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// Creates a servo identity; the secret is printed once and only its hash stored.
/// Creates a servo identity. `control_certificate_sha256` is the pin of control's TLS
/// certificate (see [`crate::tls`]), written into the credentials so the servo trusts only it.
pub async fn servo_create(
    store: &Store,
    id: &str,
    zone: &str,
    control_certificate_sha256: Option<&str>,
) -> Result<Value, AdminError> {
    if !servo_id_ok(id) {
        return Err(invalid(format!(
            "servo id '{id}' is invalid: 1-64 of letters, digits and ._-"
        )));
    }
    let secret = new_servo_secret();
    store
        .create_servo(id, zone, &crate::servo_api::secret_hash(&secret))
        .await?;
    let mut credentials = json!({"ServoId": id, "Zone": zone, "Secret": secret});
    if let Some(pin) = control_certificate_sha256 {
        credentials["ControlCertificateSha256"] = json!(pin);
    }
    Ok(credentials)
}

/// Servos with zone, addresses, last heartbeat, liveness (judged with `timeout_secs`),
/// assigned load balancers and the ones they refuse (with why).
pub async fn servo_list(store: &Store, timeout_secs: u64) -> Result<Value, AdminError> {
    let timeout_ms = i64::try_from(timeout_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let servos = store.list_servos(timeout_ms).await?;
    Ok(Value::Array(
        servos
            .into_iter()
            .map(|info| {
                let s = info.servo;
                json!({
                    "ServoId": s.id,
                    "Zone": s.zone,
                    "PublicAddresses": s.public_addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "PrivateAddresses": s.private_addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "Capacity": s.capacity,
                    "Registered": s.registered_at.map(format_iso8601_millis),
                    "LastHeartbeat": s.last_heartbeat.map(format_iso8601_millis),
                    "Live": info.live,
                    "Counters": s.counters.as_deref().and_then(|c| serde_json::from_str::<Value>(c).ok()),
                    "LoadBalancers": info.load_balancers.iter()
                        .map(|a| json!({"LoadBalancerName": a.name, "Vip": a.vip}))
                        .collect::<Vec<_>>(),
                    "Refused": to_json(&info.refused),
                })
            })
            .collect(),
    ))
}

/// Whether each zone has live servos with room (what `/health` answers).
pub async fn status(store: &Store, timeout_secs: u64) -> Result<Value, AdminError> {
    let timeout_ms = i64::try_from(timeout_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    Ok(to_json(&crate::readiness::status(store, timeout_ms).await?))
}

pub async fn servo_remove(store: &Store, id: &str) -> Result<Value, AdminError> {
    if !store.remove_servo(id).await? {
        return Err(invalid(format!("there is no servo '{id}'")));
    }
    Ok(json!({"Removed": id}))
}
