//! Server certificates through IAM's API (2010-05-08): `UploadServerCertificate`,
//! `GetServerCertificate`, `ListServerCertificates`, `DeleteServerCertificate`, on the same
//! listener and with the same accounts, keys and policies as the ELB API (requests signed for
//! the `iam` service), so `aws iam upload-server-certificate --endpoint-url ...` works. The ARN
//! an upload returns (`arn:aws:iam::<account>:server-certificate/<path><name>`) is what
//! HTTPS and SSL listeners name as `SSLCertificateId`.
//!
//! Private keys are checked against their certificate, sealed with control's key file
//! ([`seal`]) before they reach the store, and never returned by the API.

mod check;
pub mod seal;

use crate::api::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::iam::{self, Decision};
use crate::query::Params;
use crate::server::AppState;
use crate::store::{CertificateDeletion, ServerCertificate, StoreError};
use crate::timefmt;
use crate::xml::{self, XmlWriter};

pub use check::{CertificateProblem, CheckedCertificate, check};

/// The IAM API version served.
pub const API_VERSION: &str = "2010-05-08";
/// The SigV4 service name of IAM requests.
pub const SIGNING_SERVICE: &str = "iam";
/// IAM's XML namespace.
pub const NAMESPACE: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
/// IAM's default quota of server certificates per account.
pub const MAX_CERTIFICATES: usize = 20;

const MAX_BODY: usize = 16_384;
const MAX_KEY: usize = 16_384;
const MAX_CHAIN: usize = 2_097_152;

/// The IAM actions this service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IamAction {
    UploadServerCertificate,
    GetServerCertificate,
    ListServerCertificates,
    DeleteServerCertificate,
}

impl IamAction {
    pub const ALL: &'static [Self] = &[
        Self::UploadServerCertificate,
        Self::GetServerCertificate,
        Self::ListServerCertificates,
        Self::DeleteServerCertificate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UploadServerCertificate => "UploadServerCertificate",
            Self::GetServerCertificate => "GetServerCertificate",
            Self::ListServerCertificates => "ListServerCertificates",
            Self::DeleteServerCertificate => "DeleteServerCertificate",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.as_str() == text)
    }

    /// `iam:<Action>`, the name policies use.
    pub fn iam_name(self) -> String {
        format!("iam:{}", self.as_str())
    }
}

/// `arn:aws:iam::<account>:server-certificate<path><name>` (`path` starts and ends with `/`).
pub fn certificate_arn(account_id: &str, path: &str, name: &str) -> String {
    format!("arn:aws:iam::{account_id}:server-certificate{path}{name}")
}

/// One IAM request.
struct IamCtx<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    action: IamAction,
    request_id: &'a str,
    params: &'a Params,
}

impl IamCtx<'_> {
    fn authorize(&self, resource: &str) -> Result<(), ApiError> {
        if self.caller.is_root
            || iam::evaluate(&self.caller.policies, &self.action.iam_name(), resource)
                == Decision::Allow
        {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::AccessDenied,
            format!(
                "User: {} is not authorized to perform: {} on resource: {resource}",
                self.caller.arn(),
                self.action.iam_name()
            ),
        ))
    }

    fn respond(&self, result: impl FnOnce(&mut XmlWriter)) -> String {
        xml::response_document_in(NAMESPACE, self.action.as_str(), self.request_id, result)
    }

    /// `ServerCertificateName`, checked as IAM names are.
    fn name(&self) -> Result<&str, ApiError> {
        let name = self.params.required("ServerCertificateName")?;
        let ok = name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
        if !ok {
            return Err(ApiError::validation(format!(
                "ServerCertificateName '{}' is invalid: 1-128 letters, digits and _+=,.@-",
                crate::validate::printable(name)
            )));
        }
        Ok(name)
    }
}

/// Runs an IAM action for an authenticated caller.
pub async fn dispatch(
    state: &AppState,
    caller: &Caller,
    action: IamAction,
    request_id: &str,
    params: &Params,
) -> Result<String, ApiError> {
    let ctx = IamCtx {
        state,
        caller,
        action,
        request_id,
        params,
    };
    match action {
        IamAction::UploadServerCertificate => upload(&ctx).await,
        IamAction::GetServerCertificate => get(&ctx).await,
        IamAction::ListServerCertificates => list(&ctx).await,
        IamAction::DeleteServerCertificate => delete(&ctx).await,
    }
}

fn no_such_entity(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NoSuchEntity,
        format!(
            "The Server Certificate with name {} cannot be found.",
            crate::validate::printable(name)
        ),
    )
}

fn bounded<'p>(params: &'p Params, field: &str, max: usize) -> Result<Option<&'p str>, ApiError> {
    match params.get(field) {
        Some(v) if v.len() > max => Err(ApiError::validation(format!(
            "{field} must have at most {max} characters"
        ))),
        other => Ok(other),
    }
}

/// `/` or `/segments/`, printable ASCII, as IAM allows.
fn valid_path(path: &str) -> bool {
    path == "/"
        || (path.len() <= 512
            && path.len() >= 2
            && path.starts_with('/')
            && path.ends_with('/')
            && path.bytes().all(|b| (0x21..=0x7e).contains(&b)))
}

async fn upload(ctx: &IamCtx<'_>) -> Result<String, ApiError> {
    let name = ctx.name()?;
    let path = ctx.params.get("Path").unwrap_or("/");
    if !valid_path(path) {
        return Err(ApiError::validation(format!(
            "Path '{}' is invalid: '/' or '/text/' of printable characters, at most 512",
            crate::validate::printable(path)
        )));
    }
    let account = &ctx.caller.account_id;
    let arn = certificate_arn(account, path, name);
    ctx.authorize(&arn)?;
    let body = bounded(ctx.params, "CertificateBody", MAX_BODY)?
        .filter(|b| !b.is_empty())
        .ok_or_else(|| ApiError::missing("CertificateBody"))?;
    let key = bounded(ctx.params, "PrivateKey", MAX_KEY)?
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::missing("PrivateKey"))?;
    let chain = bounded(ctx.params, "CertificateChain", MAX_CHAIN)?.filter(|c| !c.is_empty());
    let tags = tags(ctx.params)?;
    let now = timefmt::now_millis();
    let checked = check(body, key, chain, now).map_err(|problem| match problem {
        CertificateProblem::Malformed(m) => ApiError::new(ErrorCode::MalformedCertificate, m),
        CertificateProblem::KeyMismatch(m) => ApiError::new(ErrorCode::KeyPairMismatch, m),
    })?;
    let store = ctx.state.store();
    if store.list_server_certificates(account, "/").await?.len() >= MAX_CERTIFICATES {
        return Err(ApiError::new(
            ErrorCode::LimitExceeded,
            format!("Cannot exceed quota for ServerCertificatesPerAccount: {MAX_CERTIFICATES}"),
        ));
    }
    let sealer = ctx.state.sealer()?;
    let cert = ServerCertificate {
        account_id: account.clone(),
        name: name.to_string(),
        path: path.to_string(),
        id: new_certificate_id(),
        sealed_key: sealer.seal(key.as_bytes(), &arn),
        arn,
        body: body.to_string(),
        chain: chain.map(str::to_string),
        uploaded_at_ms: now,
        not_after_ms: checked.not_after_ms,
        tags,
    };
    match store.insert_server_certificate(&cert).await {
        Err(StoreError::AlreadyExists { .. }) => {
            return Err(ApiError::new(
                ErrorCode::EntityAlreadyExists,
                format!("The Server Certificate with name {name} already exists."),
            ));
        }
        other => other?,
    }
    tracing::info!(account = %account, certificate = %cert.arn, "server certificate uploaded");
    Ok(ctx.respond(|w| {
        metadata(w, &cert);
        write_tags(w, &cert.tags);
    }))
}

async fn get(ctx: &IamCtx<'_>) -> Result<String, ApiError> {
    let name = ctx.name()?;
    let cert = ctx
        .state
        .store()
        .server_certificate(&ctx.caller.account_id, name)
        .await?
        .ok_or_else(|| no_such_entity(name))?;
    ctx.authorize(&cert.arn)?;
    Ok(ctx.respond(|w| {
        w.elem("ServerCertificate", |w| {
            metadata(w, &cert);
            w.text("CertificateBody", &cert.body);
            w.opt_text("CertificateChain", cert.chain.as_deref());
            write_tags(w, &cert.tags);
        });
    }))
}

async fn list(ctx: &IamCtx<'_>) -> Result<String, ApiError> {
    let account = &ctx.caller.account_id;
    ctx.authorize(&certificate_arn(account, "/", "*"))?;
    let prefix = ctx.params.get("PathPrefix").unwrap_or("/");
    if !prefix.starts_with('/') || prefix.len() > 512 {
        return Err(ApiError::validation(
            "PathPrefix must start with '/' and have at most 512 characters",
        ));
    }
    let max_items =
        usize::try_from(ctx.params.int("MaxItems", 1, 1000)?.unwrap_or(100)).unwrap_or(100);
    let marker = ctx.params.get("Marker").filter(|m| !m.is_empty());
    let certs = ctx
        .state
        .store()
        .list_server_certificates(account, prefix)
        .await?;
    // The marker is the lower-cased name of the first certificate of the next page.
    let start = match marker {
        None => 0,
        Some(m) => certs
            .iter()
            .position(|c| c.name.to_ascii_lowercase() >= m.to_ascii_lowercase())
            .unwrap_or(certs.len()),
    };
    let page = &certs[start..certs.len().min(start + max_items)];
    let next = certs.get(start + max_items);
    Ok(ctx.respond(|w| {
        w.list("ServerCertificateMetadataList", page, |w, c| {
            metadata_fields(w, c);
        });
        w.boolean("IsTruncated", next.is_some());
        if let Some(next) = next {
            w.text("Marker", &next.name.to_ascii_lowercase());
        }
    }))
}

async fn delete(ctx: &IamCtx<'_>) -> Result<String, ApiError> {
    let name = ctx.name()?;
    let account = &ctx.caller.account_id;
    let store = ctx.state.store();
    let cert = store
        .server_certificate(account, name)
        .await?
        .ok_or_else(|| no_such_entity(name))?;
    ctx.authorize(&cert.arn)?;
    match store.delete_server_certificate(account, name).await? {
        CertificateDeletion::Deleted => {
            tracing::info!(account = %account, certificate = %cert.arn, "server certificate deleted");
            Ok(ctx.respond(|_| {}))
        }
        CertificateDeletion::NotFound => Err(no_such_entity(name)),
        CertificateDeletion::InUse(users) => {
            let list = users
                .iter()
                .map(|(region, lb, port)| {
                    format!(
                        "{} (listener {port})",
                        iam::load_balancer_arn(region, account, lb)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            Err(ApiError::new(
                ErrorCode::DeleteConflict,
                format!("Certificate: {} is currently in use by {list}", cert.id),
            ))
        }
    }
}

fn tags(params: &Params) -> Result<Vec<(String, String)>, ApiError> {
    let Some(members) = params.struct_list("Tags", &["Key", "Value"])? else {
        return Ok(Vec::new());
    };
    if members.len() > 50 {
        return Err(ApiError::new(
            ErrorCode::LimitExceeded,
            "A server certificate can have at most 50 tags",
        ));
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(members.len());
    for m in members {
        let key = m
            .get("Key")
            .filter(|k| !k.is_empty())
            .cloned()
            .ok_or_else(|| ApiError::missing("Tags.member.N.Key"))?;
        let value = m.get("Value").cloned().unwrap_or_default();
        crate::validate::free_text("Tag key", &key, 128)?;
        crate::validate::free_text("Tag value", &value, 256)?;
        if out.iter().any(|(k, _)| k == &key) {
            return Err(ApiError::validation(format!(
                "Duplicate tag key {}",
                crate::validate::printable(&key)
            )));
        }
        out.push((key, value));
    }
    Ok(out)
}

/// The `ServerCertificateMetadata` structure (its fields; list members carry them bare).
fn metadata_fields(w: &mut XmlWriter, cert: &ServerCertificate) {
    w.text("Path", &cert.path);
    w.text("ServerCertificateName", &cert.name);
    w.text("ServerCertificateId", &cert.id);
    w.text("Arn", &cert.arn);
    w.text(
        "UploadDate",
        &timefmt::format_iso8601_millis(cert.uploaded_at_ms),
    );
    w.text(
        "Expiration",
        &timefmt::format_iso8601_millis(cert.not_after_ms),
    );
}

fn metadata(w: &mut XmlWriter, cert: &ServerCertificate) {
    w.elem("ServerCertificateMetadata", |w| metadata_fields(w, cert));
}

fn write_tags(w: &mut XmlWriter, tags: &[(String, String)]) {
    if !tags.is_empty() {
        w.list("Tags", tags, |w, (k, v)| {
            w.text("Key", k);
            w.text("Value", v);
        });
    }
}

/// `ASCA` and 17 random upper-case letters and digits, the form of IAM's ids.
fn new_certificate_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut buf = [0u8; 17];
    crate::store::fill_random(&mut buf);
    let tail: String = buf
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("ASCA{tail}")
}

/// The certificate a listener names, checked: an ARN of control's own IAM must name a
/// certificate of the caller's account that exists; any other ARN must name a certificate of
/// the cloud's IAM or ACM (when configured) whose private key a servo can be given
/// ([`crate::cloud::certificates`]), or `CertificateNotFound` / `InvalidConfigurationRequest`.
pub async fn require_listener_certificate(
    state: &AppState,
    account_id: &str,
    arn: &str,
) -> Result<(), ApiError> {
    crate::validate::certificate_arn(arn)?;
    let own_account =
        crate::cloud::certificates::parse_arn(arn).is_some_and(|(service, _, account)| {
            service == crate::cloud::certificates::ArnService::Iam && account == account_id
        });
    if own_account {
        return match state.store().server_certificate_by_arn(arn).await? {
            Some(cert) if cert.account_id == account_id => Ok(()),
            _ => Err(ApiError::new(
                ErrorCode::CertificateNotFound,
                format!(
                    "The specified SSL certificate '{}' does not exist: upload it with `aws iam \
                     upload-server-certificate`",
                    crate::validate::printable(arn)
                ),
            )),
        };
    }
    crate::cloud::certificates::require(state, account_id, arn).await
}

/// A certificate's chain (server certificate first) and private key, in PEM: what a servo
/// that serves a listener with it needs.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateMaterial {
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertificateMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateMaterial")
            .field("chain_pem", &self.chain_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The chain and key a servo serves listener certificate `arn` of `account_id`'s load
/// balancer with: from control's own store, or from the cloud
/// ([`crate::cloud::certificates::material`]); `None` when it does not exist (any more).
pub async fn material(
    state: &AppState,
    account_id: &str,
    arn: &str,
) -> Result<Option<CertificateMaterial>, ApiError> {
    if let Some(m) = stored_material(state, account_id, arn).await? {
        return Ok(Some(m));
    }
    crate::cloud::certificates::material(state, account_id, arn).await
}

/// Opens certificate `arn` of `account_id` from control's own store; `None` when it has none.
pub(crate) async fn stored_material(
    state: &AppState,
    account_id: &str,
    arn: &str,
) -> Result<Option<CertificateMaterial>, ApiError> {
    let Some(cert) = state.store().server_certificate_by_arn(arn).await? else {
        return Ok(None);
    };
    if cert.account_id != account_id {
        return Ok(None);
    }
    let key = state
        .sealer()?
        .open(&cert.sealed_key, &cert.arn)
        .map_err(ApiError::internal)?;
    let key_pem = String::from_utf8(key).map_err(ApiError::internal)?;
    let mut chain_pem = cert.body.trim_end().to_string();
    chain_pem.push('\n');
    if let Some(chain) = &cert.chain {
        chain_pem.push_str(chain.trim_end());
        chain_pem.push('\n');
    }
    Ok(Some(CertificateMaterial { chain_pem, key_pem }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arns() {
        assert_eq!(
            certificate_arn("123456789012", "/", "site"),
            "arn:aws:iam::123456789012:server-certificate/site"
        );
        assert_eq!(
            certificate_arn("123456789012", "/cloudfront/test/", "site"),
            "arn:aws:iam::123456789012:server-certificate/cloudfront/test/site"
        );
        for a in IamAction::ALL {
            assert_eq!(IamAction::parse(a.as_str()), Some(*a));
        }
        assert_eq!(
            IamAction::UploadServerCertificate.iam_name(),
            "iam:UploadServerCertificate"
        );
        assert!(valid_path("/"));
        assert!(valid_path("/a/b/"));
        assert!(!valid_path("a/"));
        assert!(!valid_path("/a b/"));
        assert!(!valid_path("//x"));
        assert_eq!(new_certificate_id().len(), 21);
    }
}
