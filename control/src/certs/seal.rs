//! Sealing of private keys at rest: AES-256-GCM under a key-encryption key kept in a file
//! outside the database, so a copy of the database (a backup, a replica's disk) holds no usable
//! private key. Every replica of a PostgreSQL deployment is given the same file.
//!
//! A sealed value is `v1:<key fingerprint>:<hex nonce><hex ciphertext and tag>`. The
//! fingerprint names the key that sealed it, so a control started with the wrong file says so
//! instead of failing with an opaque authentication error; the additional data binds the
//! ciphertext to the row it belongs to (a sealed key copied to another certificate's row does
//! not open).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use elb_sigv4::hex;

/// Bytes of key material in a key file (stored as hex).
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot read the key file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the key file {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the key file {path} must hold {len} hex digits (a 256-bit key) on one line")]
    BadKeyFile { path: PathBuf, len: usize },
    #[error(
        "this value was sealed with key {sealed_with}, but control's key file holds key {have}: \
         start control with the key file it was created with"
    )]
    WrongKey { sealed_with: String, have: String },
    #[error("the sealed value is damaged or was moved from another record")]
    Damaged,
}

/// The key-encryption key.
pub struct Sealer {
    key: LessSafeKey,
    fingerprint: String,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Sealer {
    /// A sealer over raw key material.
    pub fn from_key(material: &[u8; KEY_LEN]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, material);
        let fingerprint = hex(&digest.as_ref()[..8]);
        let unbound = UnboundKey::new(&AES_256_GCM, material).expect("32 bytes is an AES-256 key");
        Self {
            key: LessSafeKey::new(unbound),
            fingerprint,
        }
    }

    /// Reads the key file, creating it (mode 0600, 256 random bits) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, SealError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(source) => Err(SealError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn parse(path: &Path, text: &str) -> Result<Self, SealError> {
        let bad = || SealError::BadKeyFile {
            path: path.to_path_buf(),
            len: KEY_LEN * 2,
        };
        let bytes = unhex(text.trim()).ok_or_else(bad)?;
        let material: [u8; KEY_LEN] = bytes.try_into().map_err(|_| bad())?;
        Ok(Self::from_key(&material))
    }

    fn create(path: &Path) -> Result<Self, SealError> {
        let mut material = [0u8; KEY_LEN];
        crate::store::fill_random(&mut material);
        let created = {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
        };
        match created {
            Ok(mut file) => {
                let write = file
                    .write_all(format!("{}\n", hex(&material)).as_bytes())
                    .and_then(|()| file.sync_all());
                if let Err(source) = write {
                    let _ = std::fs::remove_file(path);
                    return Err(SealError::Create {
                        path: path.to_path_buf(),
                        source,
                    });
                }
                tracing::info!(path = %path.display(), "created the key file that seals certificate private keys");
                Ok(Self::from_key(&material))
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path).map_err(|source| SealError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                Self::parse(path, &text)
            }
            Err(source) => Err(SealError::Create {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The short name of this key (first 8 bytes of its SHA-256, hex).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Encrypts `plaintext`, bound to `context` (which must be given again to open it).
    pub fn seal(&self, plaintext: &[u8], context: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        crate::store::fill_random(&mut nonce);
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .expect("AES-GCM sealing cannot fail for inputs below 64 GiB");
        format!("v1:{}:{}{}", self.fingerprint, hex(&nonce), hex(&buf))
    }

    /// Decrypts a value made by [`seal`](Self::seal) with the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, SealError> {
        let mut parts = sealed.splitn(3, ':');
        let (Some("v1"), Some(fingerprint), Some(body)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::Damaged);
        };
        if fingerprint != self.fingerprint {
            return Err(SealError::WrongKey {
                sealed_with: fingerprint.to_string(),
                have: self.fingerprint.clone(),
            });
        }
        let bytes = unhex(body).ok_or(SealError::Damaged)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Damaged);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Damaged)?;
        let mut buf = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| SealError::Damaged)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open() {
        let sealer = Sealer::from_key(&[7; 32]);
        let sealed = sealer.seal(b"-----BEGIN PRIVATE KEY-----", "acct/site");
        assert!(sealed.starts_with(&format!("v1:{}:", sealer.fingerprint())));
        assert!(!sealed.contains("PRIVATE"));
        assert_eq!(
            sealer.open(&sealed, "acct/site").unwrap(),
            b"-----BEGIN PRIVATE KEY-----"
        );
        // Bound to its record.
        assert!(matches!(
            sealer.open(&sealed, "acct/other"),
            Err(SealError::Damaged)
        ));
        // Another key says which one it needs.
        let other = Sealer::from_key(&[8; 32]);
        assert!(matches!(
            other.open(&sealed, "acct/site"),
            Err(SealError::WrongKey { .. })
        ));
        // Tampering is detected.
        let mut bad = sealed.clone();
        let last = bad.pop().unwrap();
        bad.push(if last == '0' { '1' } else { '0' });
        assert!(matches!(
            sealer.open(&bad, "acct/site"),
            Err(SealError::Damaged)
        ));
        assert!(matches!(
            sealer.open("v2:x:y", "acct/site"),
            Err(SealError::Damaged)
        ));
    }

    #[test]
    fn key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.key");
        let first = Sealer::load_or_create(&path).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let again = Sealer::load_or_create(&path).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        let sealed = first.seal(b"k", "c");
        assert_eq!(again.open(&sealed, "c").unwrap(), b"k");
        std::fs::write(&path, "not hex\n").unwrap();
        assert!(matches!(
            Sealer::load_or_create(&path),
            Err(SealError::BadKeyFile { .. })
        ));
    }
}
