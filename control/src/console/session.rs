//! Console sessions: a browser signs in once with an access key id and its secret; control
//! checks them against the identity store SigV4 uses and issues a random session token in an
//! `HttpOnly`, `SameSite=Strict` cookie. The secret is never stored by the browser.
//!
//! - The token is 256 random bits; the database keeps only its SHA-256 (like servo secrets: a
//!   stolen database does not let anyone act as a signed-in user).
//! - A session ends at sign-out, after [`IDLE_TIMEOUT`] without requests, after
//!   [`MAX_LIFETIME`] in any case, and as soon as its access key is deleted or deactivated.
//! - State-changing requests carry `X-CSRF-Token`, derived from the token (so it needs no
//!   storage) and handed to the page's script in the sign-in answer; a cross-site page can
//!   neither read it nor, with `SameSite=Strict`, send the cookie. A request whose `Origin`
//!   names another site is refused as well.
//! - Sessions live in the store, so every control replica sharing a PostgreSQL database
//!   accepts them. They are not configuration: writing them does not bump the config version
//!   (which would wake every servo's long-poll).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use sqlx::Row;

use crate::store::{Store, StoreError};

/// Name of the session cookie.
pub const COOKIE: &str = "elb_console_session";
/// Header that carries the CSRF token of state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session ends this long after sign-in, whatever happens.
pub const MAX_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// A session ends after this long without a request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// `last_seen` is written at most this often (pages poll every few seconds).
const TOUCH_EVERY_MS: i64 = 60_000;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub token_hash: String,
    pub access_key_id: String,
    pub region: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_seen: i64,
}

impl Session {
    /// When the session ends if nothing else happens (idle or absolute limit).
    pub fn ends_at(&self) -> i64 {
        self.expires_at
            .min(self.last_seen.saturating_add(ms(IDLE_TIMEOUT)))
    }

    pub fn is_valid_at(&self, now: i64) -> bool {
        now < self.ends_at()
    }
}

/// A new random session token (64 hex digits).
pub fn new_token() -> String {
    crate::store::random_hex(32)
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    elb_sigv4::sha256_hex(&parts.concat())
}

/// What the store keeps of a token.
pub fn token_hash(token: &str) -> String {
    sha256_hex(&[token.as_bytes()])
}

/// The CSRF token of a session: a hash of its token under another label, so it differs from
/// what the database stores and cannot be turned back into the session token.
pub fn csrf_token(token: &str) -> String {
    sha256_hex(&[b"elb-console-csrf\0", token.as_bytes()])
}

/// Equality that takes the same time wherever the inputs differ (hashes first, so lengths
/// leak nothing either).
pub fn same_secret(a: &str, b: &str) -> bool {
    elb_sigv4::constant_time_eq(
        elb_sigv4::sha256_hex(a.as_bytes()).as_bytes(),
        elb_sigv4::sha256_hex(b.as_bytes()).as_bytes(),
    )
}

/// The session token from the request's cookies, if any.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value that installs `token`. No `Secure` flag: control serves plain HTTP
/// on its listener (put it behind TLS in production; the flag would make browsers drop the
/// cookie on http:// addresses other than localhost).
pub fn set_cookie(token: &str) -> HeaderValue {
    let value = format!(
        "{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
        MAX_LIFETIME.as_secs()
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "elb_console_session=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
    )
}

/// Whether the request's `Origin` (when the browser sent one) is this server itself. Browsers
/// send `Origin` on every cross-origin request and on same-origin POSTs; a request without it
/// comes from a non-browser client, which the cookie and CSRF checks cover.
pub fn origin_is_same(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(Ok(host))) = (
        origin.to_str(),
        headers.get(header::HOST).map(HeaderValue::to_str),
    ) else {
        return false;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

fn session_from_row(r: &sqlx::any::AnyRow) -> Result<Session, StoreError> {
    Ok(Session {
        token_hash: r.try_get("token_hash")?,
        access_key_id: r.try_get("access_key_id")?,
        region: r.try_get("region")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        last_seen: r.try_get("last_seen")?,
    })
}

/// Stores a new session for `access_key_id` in `region`, signed in at `now` (milliseconds
/// since the epoch); returns it.
pub async fn create(
    store: &Store,
    token: &str,
    access_key_id: &str,
    region: &str,
    now: i64,
) -> Result<Session, StoreError> {
    let session = Session {
        token_hash: token_hash(token),
        access_key_id: access_key_id.to_string(),
        region: region.to_string(),
        created_at: now,
        expires_at: now.saturating_add(ms(MAX_LIFETIME)),
        last_seen: now,
    };
    sqlx::query(
        "INSERT INTO console_sessions (token_hash, access_key_id, region, created_at, expires_at, last_seen)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&session.token_hash)
    .bind(&session.access_key_id)
    .bind(&session.region)
    .bind(session.created_at)
    .bind(session.expires_at)
    .bind(session.last_seen)
    .execute(store.pool())
    .await?;
    Ok(session)
}

/// The session of `token`, if it exists (valid or not).
pub async fn find(store: &Store, token: &str) -> Result<Option<Session>, StoreError> {
    let row = sqlx::query(
        "SELECT token_hash, access_key_id, region, created_at, expires_at, last_seen
         FROM console_sessions WHERE token_hash = $1",
    )
    .bind(token_hash(token))
    .fetch_optional(store.pool())
    .await?;
    row.as_ref().map(session_from_row).transpose()
}

/// Records activity on the session (at most once a minute).
pub async fn touch(store: &Store, session: &mut Session, now: i64) -> Result<(), StoreError> {
    if now - session.last_seen < TOUCH_EVERY_MS {
        return Ok(());
    }
    sqlx::query("UPDATE console_sessions SET last_seen = $1 WHERE token_hash = $2")
        .bind(now)
        .bind(&session.token_hash)
        .execute(store.pool())
        .await?;
    session.last_seen = now;
    Ok(())
}

/// Ends a session.
pub async fn delete(store: &Store, token_hash: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
        .bind(token_hash)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Removes sessions that can no longer be used; returns how many.
pub async fn delete_stale(store: &Store, now: i64) -> Result<u64, StoreError> {
    let done =
        sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1 OR last_seen <= $2")
            .bind(now)
            .bind(now.saturating_sub(ms(IDLE_TIMEOUT)))
            .execute(store.pool())
            .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_hashes_and_csrf_differ() {
        let t = new_token();
        assert_eq!(t.len(), 64);
        assert_ne!(t, new_token());
        assert_ne!(token_hash(&t), csrf_token(&t));
        assert_eq!(csrf_token(&t), csrf_token(&t));
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; elb_console_session=tok; b=2"),
        );
        assert_eq!(cookie_token(&h).as_deref(), Some("tok"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("elb_console_session="),
        );
        assert_eq!(cookie_token(&h), None);
        let set = set_cookie("tok");
        let set = set.to_str().unwrap();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
    }

    #[test]
    fn origins() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("198.18.0.5:8773"));
        assert!(origin_is_same(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://198.18.0.5:8773"),
        );
        assert!(origin_is_same(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!origin_is_same(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!origin_is_same(&h));
    }

    #[test]
    fn idle_and_absolute_limits() {
        let s = Session {
            token_hash: String::new(),
            access_key_id: String::new(),
            region: String::new(),
            created_at: 0,
            expires_at: ms(MAX_LIFETIME),
            last_seen: 0,
        };
        assert!(s.is_valid_at(ms(IDLE_TIMEOUT) - 1));
        assert!(!s.is_valid_at(ms(IDLE_TIMEOUT)));
        let busy = Session {
            last_seen: ms(MAX_LIFETIME) - 1,
            ..s
        };
        assert!(busy.is_valid_at(ms(MAX_LIFETIME) - 1));
        assert!(!busy.is_valid_at(ms(MAX_LIFETIME)));
    }
}
