//! The service's S3-compatible object storage client, used by the servo (access log files,
//! `elb-userspace::accesslog`) and by control (`ModifyLoadBalancerAttributes` checks that an
//! access log bucket exists). object_store's S3 client underneath: SigV4, path-style requests,
//! plain HTTP allowed for endpoints inside a site, no retries of its own (callers decide).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};

/// An S3-compatible endpoint and the credentials to use there (servo.toml's `[access_logs]`,
/// control's `--s3-*` flags).
#[derive(Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// `http://host:port` or `https://host:port`.
    pub endpoint: String,
    #[serde(default = "default_region")]
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

fn default_region() -> String {
    "us-east-1".into()
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("S3 endpoint {endpoint}: {source}")]
    Client {
        endpoint: String,
        #[source]
        source: object_store::Error,
    },
    #[error("bucket {bucket} does not exist at {endpoint}")]
    NoSuchBucket { bucket: String, endpoint: String },
}

/// Writes objects; one client per bucket (object_store's clients are bucket-scoped).
#[derive(Debug)]
pub struct S3Writer {
    settings: S3Settings,
    buckets: Mutex<HashMap<String, Arc<AmazonS3>>>,
}

impl S3Writer {
    pub fn new(settings: S3Settings) -> Self {
        Self {
            settings,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, bucket: &str) -> Result<Arc<AmazonS3>, S3Error> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = buckets.get(bucket) {
            return Ok(client.clone());
        }
        let client = AmazonS3Builder::new()
            .with_endpoint(&self.settings.endpoint)
            .with_allow_http(self.settings.endpoint.starts_with("http://"))
            .with_region(&self.settings.region)
            .with_bucket_name(bucket)
            .with_access_key_id(&self.settings.access_key_id)
            .with_secret_access_key(&self.settings.secret_access_key)
            .with_virtual_hosted_style_request(false)
            // The spool retries with its own back-off; one attempt per call here.
            .with_retry(object_store::RetryConfig {
                max_retries: 0,
                ..Default::default()
            })
            .build()
            .map_err(|source| self.error(source))?;
        let client = Arc::new(client);
        buckets.insert(bucket.to_string(), client.clone());
        Ok(client)
    }

    fn error(&self, source: object_store::Error) -> S3Error {
        S3Error::Client {
            endpoint: self.settings.endpoint.clone(),
            source,
        }
    }

    /// Stores `body` at `bucket`/`key`.
    pub async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), S3Error> {
        let client = self.client(bucket)?;
        client
            .put(&ObjectPath::from(key), PutPayload::from(body))
            .await
            .map_err(|source| self.error(source))?;
        Ok(())
    }

    /// Whether `bucket` exists (a one-key listing; a missing bucket is `NoSuchBucket`).
    pub async fn check_bucket(&self, bucket: &str) -> Result<(), S3Error> {
        use futures_util::StreamExt as _;
        let client = self.client(bucket)?;
        let mut listing = client.list(None);
        match listing.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e))
                if matches!(e, object_store::Error::NotFound { .. })
                    || e.to_string().contains("NoSuchBucket") =>
            {
                Err(S3Error::NoSuchBucket {
                    bucket: bucket.to_string(),
                    endpoint: self.settings.endpoint.clone(),
                })
            }
            Some(Err(source)) => Err(self.error(source)),
        }
    }
}
