//! Accounts, users, access keys, user policies and quota overrides.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, flag, is_unique_violation};
use crate::timefmt::now_millis;

/// The user every account has; its keys are the account's root credentials.
pub const ROOT_USER: &str = "root";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    #[serde(rename = "AccountId")]
    pub id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Admin")]
    pub is_admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    #[serde(rename = "AccountId")]
    pub account_id: String,
    #[serde(rename = "UserName")]
    pub name: String,
    #[serde(rename = "Root")]
    pub is_root: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AccessKey {
    #[serde(rename = "AccessKeyId")]
    pub id: String,
    #[serde(rename = "SecretAccessKey")]
    pub secret: String,
    #[serde(rename = "AccountId")]
    pub account_id: String,
    #[serde(rename = "UserName")]
    pub user_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserPolicy {
    #[serde(rename = "UserName")]
    pub user_name: String,
    #[serde(rename = "PolicyName")]
    pub name: String,
    #[serde(rename = "PolicyDocument")]
    pub document: String,
}

/// Who an access key belongs to, with what SigV4 verification needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub access_key_id: String,
    pub secret: String,
    pub account_id: String,
    pub account_name: String,
    pub account_is_admin: bool,
    pub user_name: String,
    pub is_root: bool,
}

const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut buf = vec![0u8; len];
    super::fill_random(&mut buf);
    // Both alphabets have a power-of-two size, so the modulo is unbiased.
    buf.iter()
        .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
        .collect()
}

fn new_access_key(account_id: &str, user_name: &str) -> AccessKey {
    AccessKey {
        id: format!("AKIA{}", random_string(KEY_ALPHABET, 16)),
        secret: random_string(SECRET_ALPHABET, 40),
        account_id: account_id.to_string(),
        user_name: user_name.to_string(),
    }
}

fn new_account_id() -> String {
    let mut buf = [0u8; 8];
    super::fill_random(&mut buf);
    // 12 digits, first one non-zero like AWS's.
    let n = u64::from_le_bytes(buf) % 900_000_000_000 + 100_000_000_000;
    n.to_string()
}

fn account_from_row(row: &AnyRow) -> Result<Account, StoreError> {
    Ok(Account {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        is_admin: row.try_get::<i64, _>("is_admin")? != 0,
    })
}

impl Store {
    /// Creates an account with its root user and a first access key for it.
    pub async fn create_account(
        &self,
        name: &str,
        is_admin: bool,
    ) -> Result<(Account, AccessKey), StoreError> {
        let mut tx = self.write().await?;
        let exists = sqlx::query("SELECT id FROM accounts WHERE name = $1")
            .bind(name)
            .fetch_optional(tx.conn())
            .await?
            .is_some();
        if exists {
            return Err(StoreError::AlreadyExists {
                what: "account",
                name: name.to_string(),
            });
        }
        let account = Account {
            id: new_account_id(),
            name: name.to_string(),
            is_admin,
        };
        let now = now_millis();
        sqlx::query(
            "INSERT INTO accounts (id, name, is_admin, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&account.id)
        .bind(&account.name)
        .bind(flag(is_admin))
        .bind(now)
        .execute(tx.conn())
        .await?;
        sqlx::query(
            "INSERT INTO users (account_id, name, is_root, created_at) VALUES ($1, $2, 1, $3)",
        )
        .bind(&account.id)
        .bind(ROOT_USER)
        .bind(now)
        .execute(tx.conn())
        .await?;
        let key = new_access_key(&account.id, ROOT_USER);
        insert_key(&mut tx, &key).await?;
        self.commit(tx).await?;
        Ok((account, key))
    }

    pub async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows = sqlx::query("SELECT id, name, is_admin FROM accounts ORDER BY name")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(account_from_row).collect()
    }

    /// Finds an account by id or by name.
    pub async fn find_account(&self, id_or_name: &str) -> Result<Account, StoreError> {
        let row = sqlx::query("SELECT id, name, is_admin FROM accounts WHERE id = $1 OR name = $1")
            .bind(id_or_name)
            .fetch_optional(self.pool())
            .await?;
        match row {
            Some(row) => account_from_row(&row),
            None => Err(StoreError::NotFound {
                what: "account",
                name: id_or_name.to_string(),
            }),
        }
    }

    /// Creates an IAM user (no permissions until a policy is put) with an access key.
    pub async fn create_user(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<(User, AccessKey), StoreError> {
        let mut tx = self.write().await?;
        let result = sqlx::query(
            "INSERT INTO users (account_id, name, is_root, created_at) VALUES ($1, $2, 0, $3)",
        )
        .bind(account_id)
        .bind(name)
        .bind(now_millis())
        .execute(tx.conn())
        .await;
        match result {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::AlreadyExists {
                    what: "user",
                    name: name.to_string(),
                });
            }
            other => other?,
        };
        let key = new_access_key(account_id, name);
        insert_key(&mut tx, &key).await?;
        self.commit(tx).await?;
        Ok((
            User {
                account_id: account_id.to_string(),
                name: name.to_string(),
                is_root: false,
            },
            key,
        ))
    }

    pub async fn list_users(&self, account_id: &str) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(
            "SELECT account_id, name, is_root FROM users WHERE account_id = $1 ORDER BY name",
        )
        .bind(account_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(User {
                    account_id: r.try_get("account_id")?,
                    name: r.try_get("name")?,
                    is_root: r.try_get::<i64, _>("is_root")? != 0,
                })
            })
            .collect()
    }

    async fn user_exists(&self, account_id: &str, user: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("SELECT name FROM users WHERE account_id = $1 AND name = $2")
                .bind(account_id)
                .bind(user)
                .fetch_optional(self.pool())
                .await?
                .is_some(),
        )
    }

    /// A further access key for an existing user.
    pub async fn create_access_key(
        &self,
        account_id: &str,
        user: &str,
    ) -> Result<AccessKey, StoreError> {
        if !self.user_exists(account_id, user).await? {
            return Err(StoreError::NotFound {
                what: "user",
                name: user.to_string(),
            });
        }
        let mut tx = self.write().await?;
        let key = new_access_key(account_id, user);
        insert_key(&mut tx, &key).await?;
        self.commit(tx).await?;
        Ok(key)
    }

    /// Access key ids of an account (secrets are shown only when a key is created).
    pub async fn list_access_keys(
        &self,
        account_id: &str,
    ) -> Result<Vec<(String, String, bool)>, StoreError> {
        let rows = sqlx::query("SELECT id, user_name, active FROM access_keys WHERE account_id = $1 ORDER BY user_name, id")
            .bind(account_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("user_name")?,
                    r.try_get::<i64, _>("active")? != 0,
                ))
            })
            .collect()
    }

    /// Looks up the principal behind an access key id (active keys only).
    pub async fn principal(&self, access_key_id: &str) -> Result<Option<Principal>, StoreError> {
        let row = sqlx::query(
            "SELECT k.id, k.secret, k.account_id, k.user_name, a.name AS account_name, a.is_admin, u.is_root
             FROM access_keys k
             JOIN accounts a ON a.id = k.account_id
             JOIN users u ON u.account_id = k.account_id AND u.name = k.user_name
             WHERE k.id = $1 AND k.active = 1",
        )
        .bind(access_key_id)
        .fetch_optional(self.pool())
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(Principal {
            access_key_id: r.try_get("id")?,
            secret: r.try_get("secret")?,
            account_id: r.try_get("account_id")?,
            account_name: r.try_get("account_name")?,
            account_is_admin: r.try_get::<i64, _>("is_admin")? != 0,
            user_name: r.try_get("user_name")?,
            is_root: r.try_get::<i64, _>("is_root")? != 0,
        }))
    }

    /// Creates or replaces a named policy of a user. The document must already be validated.
    pub async fn put_user_policy(
        &self,
        account_id: &str,
        user: &str,
        name: &str,
        document: &str,
    ) -> Result<(), StoreError> {
        if !self.user_exists(account_id, user).await? {
            return Err(StoreError::NotFound {
                what: "user",
                name: user.to_string(),
            });
        }
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO user_policies (account_id, user_name, name, document) VALUES ($1, $2, $3, $4)
             ON CONFLICT (account_id, user_name, name) DO UPDATE SET document = excluded.document",
        )
        .bind(account_id)
        .bind(user)
        .bind(name)
        .bind(document)
        .execute(tx.conn())
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    pub async fn delete_user_policy(
        &self,
        account_id: &str,
        user: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "DELETE FROM user_policies WHERE account_id = $1 AND user_name = $2 AND name = $3",
        )
        .bind(account_id)
        .bind(user)
        .bind(name)
        .execute(tx.conn())
        .await?
        .rows_affected();
        self.commit(tx).await?;
        Ok(done > 0)
    }

    /// Policies of one user, or of every user of the account when `user` is `None`.
    pub async fn user_policies(
        &self,
        account_id: &str,
        user: Option<&str>,
    ) -> Result<Vec<UserPolicy>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_name, name, document FROM user_policies
             WHERE account_id = $1 AND ($2 = '' OR user_name = $2) ORDER BY user_name, name",
        )
        .bind(account_id)
        .bind(user.unwrap_or(""))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UserPolicy {
                    user_name: r.try_get("user_name")?,
                    name: r.try_get("name")?,
                    document: r.try_get("document")?,
                })
            })
            .collect()
    }

    /// Quota values set for an account (names as in DescribeAccountLimits).
    pub async fn quota_overrides(
        &self,
        account_id: &str,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows =
            sqlx::query("SELECT name, quota FROM quotas WHERE account_id = $1 ORDER BY name")
                .bind(account_id)
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("quota")?)))
            .collect()
    }

    pub async fn set_quota(
        &self,
        account_id: &str,
        name: &str,
        value: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO quotas (account_id, name, quota) VALUES ($1, $2, $3)
             ON CONFLICT (account_id, name) DO UPDATE SET quota = excluded.quota",
        )
        .bind(account_id)
        .bind(name)
        .bind(value)
        .execute(tx.conn())
        .await?;
        self.commit(tx).await?;
        Ok(())
    }
}

async fn insert_key(tx: &mut super::WriteTx, key: &AccessKey) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO access_keys (id, secret, account_id, user_name, active, created_at) VALUES ($1, $2, $3, $4, 1, $5)",
    )
    .bind(&key.id)
    .bind(&key.secret)
    .bind(&key.account_id)
    .bind(&key.user_name)
    .bind(now_millis())
    .execute(tx.conn())
    .await?;
    Ok(())
}
