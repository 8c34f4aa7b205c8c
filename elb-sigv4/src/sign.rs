//! The client half: signs a request with an `Authorization` header, as botocore's `SigV4Auth`
//! and euca2ools' `HmacV4Auth` do.

use crate::canonical::{canonical_request, hex, hmac, signing_key, string_to_sign};
use crate::{ALGORITHM, Request, SigV4Error};

/// Who signs, for which scope.
#[derive(Clone, Copy)]
pub struct Signer<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

impl std::fmt::Debug for Signer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("region", &self.region)
            .field("service", &self.service)
            .finish()
    }
}

impl Signer<'_> {
    /// The `Authorization` header value for `req`, signing every header it carries. The
    /// request must carry `Host` and `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`, the signing time).
    pub fn authorization(&self, req: &Request<'_>) -> Result<String, SigV4Error> {
        let amz_date = req
            .header("x-amz-date")
            .ok_or_else(|| SigV4Error::Incomplete("an X-Amz-Date header is required".into()))?;
        if req.header("host").is_none() {
            return Err(SigV4Error::Incomplete("a Host header is required".into()));
        }
        let date = amz_date.get(..8).unwrap_or(amz_date);
        let mut signed: Vec<String> = req
            .headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        signed.sort();
        signed.dedup();
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let canonical = canonical_request(req, &signed, None)?;
        let key = signing_key(self.secret_access_key, date, self.region, self.service);
        let signature = hex(&hmac(
            &key,
            string_to_sign(amz_date, &scope, &canonical).as_bytes(),
        ));
        Ok(format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={signature}",
            self.access_key_id,
            signed.join(";")
        ))
    }
}
