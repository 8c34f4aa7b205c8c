//! Server certificates (the IAM `server-certificate` resources): certificate and chain in PEM,
//! the private key sealed (see `crate::certs::seal`), never in clear.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, is_unique_violation};

/// One uploaded server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertificate {
    pub account_id: String,
    /// As uploaded; IAM names are unique per account without regard to case.
    pub name: String,
    /// `/` or `/a/b/`.
    pub path: String,
    /// `ASCA...`, IAM's ServerCertificateId.
    pub id: String,
    pub arn: String,
    pub body: String,
    pub chain: Option<String>,
    pub sealed_key: String,
    pub uploaded_at_ms: i64,
    pub not_after_ms: i64,
    pub tags: Vec<(String, String)>,
}

/// What DeleteServerCertificate found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateDeletion {
    Deleted,
    NotFound,
    /// Listeners still use it: `(region, load balancer name, port)`.
    InUse(Vec<(String, String, i64)>),
}

const COLUMNS: &str =
    "account_id, name, path, id, arn, body, chain, sealed_key, uploaded_at, not_after, tags";

fn from_row(row: &AnyRow) -> Result<ServerCertificate, StoreError> {
    let tags: Option<String> = row.try_get("tags")?;
    let tags = match tags {
        None => Vec::new(),
        Some(text) => serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
            table: "server_certificates",
            detail: format!("tags: {e}"),
        })?,
    };
    Ok(ServerCertificate {
        account_id: row.try_get("account_id")?,
        name: row.try_get("name")?,
        path: row.try_get("path")?,
        id: row.try_get("id")?,
        arn: row.try_get("arn")?,
        body: row.try_get("body")?,
        chain: row.try_get("chain")?,
        sealed_key: row.try_get("sealed_key")?,
        uploaded_at_ms: row.try_get("uploaded_at")?,
        not_after_ms: row.try_get("not_after")?,
        tags,
    })
}

impl Store {
    /// Stores a new certificate; `AlreadyExists` when the account has one of that name.
    pub async fn insert_server_certificate(
        &self,
        cert: &ServerCertificate,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let tags = (!cert.tags.is_empty())
            .then(|| serde_json::to_string(&cert.tags).expect("strings serialise"));
        let result = sqlx::query(
            "INSERT INTO server_certificates (account_id, name, name_key, path, id, arn, body, chain, sealed_key, uploaded_at, not_after, tags)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&cert.account_id)
        .bind(&cert.name)
        .bind(cert.name.to_ascii_lowercase())
        .bind(&cert.path)
        .bind(&cert.id)
        .bind(&cert.arn)
        .bind(&cert.body)
        .bind(cert.chain.as_deref())
        .bind(&cert.sealed_key)
        .bind(cert.uploaded_at_ms)
        .bind(cert.not_after_ms)
        .bind(tags)
        .execute(tx.conn())
        .await;
        match result {
            Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists {
                what: "server certificate",
                name: cert.name.clone(),
            }),
            Err(e) => Err(e.into()),
            Ok(_) => {
                self.commit(tx).await?;
                Ok(())
            }
        }
    }

    /// The account's certificate named `name` (any case).
    pub async fn server_certificate(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<Option<ServerCertificate>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM server_certificates WHERE account_id = $1 AND name_key = $2"
        ))
        .bind(account_id)
        .bind(name.to_ascii_lowercase())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The certificate with this ARN.
    pub async fn server_certificate_by_arn(
        &self,
        arn: &str,
    ) -> Result<Option<ServerCertificate>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM server_certificates WHERE arn = $1"
        ))
        .bind(arn)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The account's certificates whose path starts with `path_prefix`, by name.
    pub async fn list_server_certificates(
        &self,
        account_id: &str,
        path_prefix: &str,
    ) -> Result<Vec<ServerCertificate>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM server_certificates WHERE account_id = $1 ORDER BY name_key"
        ))
        .bind(account_id)
        .fetch_all(self.pool())
        .await?;
        let mut certs = Vec::with_capacity(rows.len());
        for row in &rows {
            let cert = from_row(row)?;
            if cert.path.starts_with(path_prefix) {
                certs.push(cert);
            }
        }
        Ok(certs)
    }

    /// Deletes the account's certificate `name` unless a listener uses it (checked in the same
    /// transaction, so a listener cannot start using it in between).
    pub async fn delete_server_certificate(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<CertificateDeletion, StoreError> {
        let mut tx = self.write().await?;
        let row = sqlx::query(
            "SELECT arn FROM server_certificates WHERE account_id = $1 AND name_key = $2",
        )
        .bind(account_id)
        .bind(name.to_ascii_lowercase())
        .fetch_optional(tx.conn())
        .await?;
        let Some(row) = row else {
            return Ok(CertificateDeletion::NotFound);
        };
        let arn: String = row.try_get("arn")?;
        let users = sqlx::query(
            "SELECT lb.region, lb.name, l.lb_port FROM lb_listeners l
             JOIN load_balancers lb ON lb.id = l.lb_id
             WHERE l.ssl_certificate_id = $1 ORDER BY lb.name, l.lb_port",
        )
        .bind(&arn)
        .fetch_all(tx.conn())
        .await?;
        if !users.is_empty() {
            let mut listeners = Vec::with_capacity(users.len());
            for row in &users {
                listeners.push((
                    row.try_get("region")?,
                    row.try_get("name")?,
                    row.try_get("lb_port")?,
                ));
            }
            return Ok(CertificateDeletion::InUse(listeners));
        }
        sqlx::query("DELETE FROM server_certificates WHERE arn = $1")
            .bind(&arn)
            .execute(tx.conn())
            .await?;
        self.commit(tx).await?;
        Ok(CertificateDeletion::Deleted)
    }
}
