//! Where eulb finds its endpoint, region and credentials: command-line options first, then
//! the environment variables of euca2ools and the AWS tools, then the AWS shared files.

use std::path::PathBuf;

/// What the command line says (all optional).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub url: Option<String>,
    /// `REGION`, `USER@REGION` or `USER@` (USER names a profile of the credentials file).
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_key: Option<String>,
    pub security_token: Option<String>,
    pub profile: Option<String>,
}

/// Everything needed to send a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `http://host[:port]/path`.
    pub url: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_key: String,
    pub security_token: Option<String>,
}

/// Environment variables naming the endpoint, in order of precedence.
pub const URL_VARS: [&str; 4] = [
    "AWS_ELB_URL",
    "EUCA_ELB_URL",
    "AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING",
    "AWS_ENDPOINT_URL",
];
/// Environment variables naming the region, in order of precedence.
pub const REGION_VARS: [&str; 4] = [
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "EUCA_DEFAULT_REGION",
    "EUCA_REGION",
];
pub const DEFAULT_REGION: &str = "us-east-1";

/// Sections of an INI file (`[name]` then `key = value` lines; `#`/`;` comments).
pub fn parse_ini(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push((name.trim().to_string(), Vec::new()));
        } else if let Some((k, v)) = line.split_once('=')
            && let Some((_, entries)) = sections.last_mut()
        {
            entries.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    sections
}

fn ini_get<'a>(
    sections: &'a [(String, Vec<(String, String)>)],
    section: &str,
    key: &str,
) -> Option<&'a str> {
    sections
        .iter()
        .filter(|(name, _)| name == section)
        .flat_map(|(_, entries)| entries.iter())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn has_section(sections: &[(String, Vec<(String, String)>)], section: &str) -> bool {
    sections.iter().any(|(name, _)| name == section)
}

/// Resolves the settings. `env` reads an environment variable; `read` reads a file (both are
/// parameters so tests need neither the process environment nor a home directory).
pub fn resolve(
    o: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
    read: &dyn Fn(&PathBuf) -> Option<String>,
) -> Result<Settings, String> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let (region_user, region_name) = match o.region.as_deref() {
        Some(r) => match r.split_once('@') {
            Some((user, region)) => (
                Some(user.to_string()).filter(|u| !u.is_empty()),
                Some(region.to_string()).filter(|r| !r.is_empty()),
            ),
            None => (None, Some(r.to_string()).filter(|r| !r.is_empty())),
        },
        None => (None, None),
    };
    let explicit_profile = o.profile.clone().or(region_user);
    let profile = explicit_profile
        .clone()
        .or_else(|| env("AWS_PROFILE"))
        .or_else(|| env("AWS_DEFAULT_PROFILE"))
        .unwrap_or_else(|| "default".to_string());
    let home = env("HOME").map(PathBuf::from);
    let credentials_path = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".aws").join("credentials")));
    let config_path = env("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".aws").join("config")));
    let credentials = credentials_path
        .as_ref()
        .and_then(read)
        .map(|t| parse_ini(&t))
        .unwrap_or_default();
    let config = config_path
        .as_ref()
        .and_then(read)
        .map(|t| parse_ini(&t))
        .unwrap_or_default();
    let config_section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };

    // Endpoint.
    let url = o
        .url
        .clone()
        .or_else(|| URL_VARS.iter().find_map(|v| env(v)))
        .ok_or_else(|| {
            "no load balancing service URL: use -U/--url or set AWS_ELB_URL".to_string()
        })?;
    let url = normalize_url(&url)?;

    // Region.
    let region = region_name
        .or_else(|| REGION_VARS.iter().find_map(|v| env(v)))
        .or_else(|| ini_get(&config, &config_section, "region").map(str::to_string))
        .unwrap_or_else(|| DEFAULT_REGION.to_string());

    // Credentials.
    let from_profile = || -> Option<(String, String, Option<String>)> {
        let id = ini_get(&credentials, &profile, "aws_access_key_id")
            .or_else(|| ini_get(&config, &config_section, "aws_access_key_id"))?;
        let secret = ini_get(&credentials, &profile, "aws_secret_access_key")
            .or_else(|| ini_get(&config, &config_section, "aws_secret_access_key"))?;
        let token = ini_get(&credentials, &profile, "aws_session_token")
            .or_else(|| ini_get(&config, &config_section, "aws_session_token"))
            .map(str::to_string);
        Some((id.to_string(), secret.to_string(), token))
    };
    let from_env = || -> Option<(String, String, Option<String>)> {
        [
            ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
            ("AWS_ACCESS_KEY", "AWS_SECRET_KEY"),
            ("EC2_ACCESS_KEY", "EC2_SECRET_KEY"),
        ]
        .iter()
        .find_map(|(id, secret)| Some((env(id)?, env(secret)?, env("AWS_SESSION_TOKEN"))))
    };
    let from_credential_file = || -> Option<(String, String, Option<String>)> {
        // euca2ools/AWS-tools style: `AWSAccessKeyId=...` and `AWSSecretKey=...` lines.
        let text = read(&PathBuf::from(env("AWS_CREDENTIAL_FILE")?))?;
        let get = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
        };
        Some((get("AWSAccessKeyId")?, get("AWSSecretKey")?, None))
    };

    // -I and -S override what the other sources say; one of them alone replaces that half.
    let found = if o.access_key_id.is_some() && o.secret_key.is_some() {
        None
    } else if let Some(p) = &explicit_profile {
        if !has_section(&credentials, p) && !has_section(&config, &config_section) {
            return Err(format!("the profile '{p}' was not found in the AWS files"));
        }
        Some(from_profile().ok_or_else(|| format!("the profile '{p}' has no credentials"))?)
    } else {
        from_env()
            .or_else(from_credential_file)
            .or_else(from_profile)
    };
    let (found_id, found_secret, file_token) = match found {
        Some((id, secret, token)) => (Some(id), Some(secret), token),
        None => (None, None, None),
    };
    let access_key_id = o.access_key_id.clone().or(found_id);
    let secret_key = o.secret_key.clone().or(found_secret);
    let (Some(access_key_id), Some(secret_key)) = (access_key_id, secret_key) else {
        return Err(match (&o.access_key_id, &o.secret_key) {
            (Some(_), None) => "-I/--access-key-id needs -S/--secret-key".to_string(),
            (None, Some(_)) => "-S/--secret-key needs -I/--access-key-id".to_string(),
            _ => "no credentials: use -I/-S, set AWS_ACCESS_KEY_ID and \
                  AWS_SECRET_ACCESS_KEY, or write ~/.aws/credentials"
                .to_string(),
        });
    };
    Ok(Settings {
        url,
        region,
        access_key_id,
        secret_key,
        security_token: o.security_token.clone().or(file_token),
    })
}

/// Adds `http://` to a bare `host:port`, refuses schemes other than http, and gives the URL
/// a path.
pub fn normalize_url(url: &str) -> Result<String, String> {
    let url = url.trim();
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let parsed = reqwest::Url::parse(&url).map_err(|e| format!("invalid URL '{url}': {e}"))?;
    match parsed.scheme() {
        "http" => {}
        "https" => {
            return Err(format!(
                "'{url}': https endpoints are not supported (this build links no TLS \
                 library); use http:// or a local TLS proxy"
            ));
        }
        other => return Err(format!("'{url}': unsupported URL scheme '{other}'")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("invalid URL '{url}': no host"));
    }
    Ok(parsed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(
        o: &Overrides,
        vars: &[(&str, &str)],
        files: &[(&str, &str)],
    ) -> Result<Settings, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let files: HashMap<PathBuf, String> = files
            .iter()
            .map(|(k, v)| (PathBuf::from(k), v.to_string()))
            .collect();
        resolve(o, &|n| vars.get(n).cloned(), &|p| files.get(p).cloned())
    }

    const CREDS: &str = "[default]\naws_access_key_id = AKD\naws_secret_access_key = SKD\n\n\
                         # comment\n[ops]\naws_access_key_id=AKO\naws_secret_access_key=SKO\n";

    #[test]
    fn flags_beat_everything() {
        let o = Overrides {
            url: Some("127.0.0.1:8773".into()),
            region: Some("eu-west-1".into()),
            access_key_id: Some("AKF".into()),
            secret_key: Some("SKF".into()),
            ..Default::default()
        };
        let s = run(
            &o,
            &[
                ("AWS_ELB_URL", "http://other:1/"),
                ("AWS_ACCESS_KEY_ID", "AKE"),
                ("AWS_SECRET_ACCESS_KEY", "SKE"),
                ("AWS_DEFAULT_REGION", "ap-south-1"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(s.url, "http://127.0.0.1:8773/");
        assert_eq!(s.region, "eu-west-1");
        assert_eq!(
            (s.access_key_id.as_str(), s.secret_key.as_str()),
            ("AKF", "SKF")
        );
    }

    #[test]
    fn environment_then_files() {
        let o = Overrides::default();
        let s = run(
            &o,
            &[
                ("AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING", "http://h:8773"),
                ("EUCA_DEFAULT_REGION", "r1"),
                ("AWS_ACCESS_KEY_ID", "AKE"),
                ("AWS_SECRET_ACCESS_KEY", "SKE"),
                ("HOME", "/home/u"),
            ],
            &[("/home/u/.aws/credentials", CREDS)],
        )
        .unwrap();
        assert_eq!(s.url, "http://h:8773/");
        assert_eq!(s.region, "r1");
        assert_eq!(s.access_key_id, "AKE");

        let s = run(
            &o,
            &[("AWS_ELB_URL", "http://h/"), ("HOME", "/home/u")],
            &[
                ("/home/u/.aws/credentials", CREDS),
                ("/home/u/.aws/config", "[default]\nregion = us-west-2\n"),
            ],
        )
        .unwrap();
        assert_eq!(
            (s.access_key_id.as_str(), s.region.as_str()),
            ("AKD", "us-west-2")
        );

        let s = run(
            &o,
            &[
                ("AWS_ELB_URL", "http://h/"),
                ("AWS_PROFILE", "ops"),
                ("AWS_SHARED_CREDENTIALS_FILE", "/etc/creds"),
            ],
            &[("/etc/creds", CREDS)],
        )
        .unwrap();
        assert_eq!(
            (s.access_key_id.as_str(), s.region.as_str()),
            ("AKO", DEFAULT_REGION)
        );
    }

    #[test]
    fn explicit_profiles() {
        let files = [("/home/u/.aws/credentials", CREDS)];
        let vars = [
            ("AWS_ELB_URL", "http://h/"),
            ("HOME", "/home/u"),
            ("AWS_ACCESS_KEY_ID", "AKE"),
            ("AWS_SECRET_ACCESS_KEY", "SKE"),
        ];
        let o = Overrides {
            region: Some("ops@eu-central-1".into()),
            ..Default::default()
        };
        let s = run(&o, &vars, &files).unwrap();
        assert_eq!(
            (s.access_key_id.as_str(), s.region.as_str()),
            ("AKO", "eu-central-1")
        );
        let o = Overrides {
            profile: Some("nope".into()),
            ..Default::default()
        };
        assert!(
            run(&o, &vars, &files)
                .unwrap_err()
                .contains("'nope' was not found")
        );
    }

    #[test]
    fn credential_file_and_errors() {
        let s = run(
            &Overrides::default(),
            &[("AWS_ELB_URL", "http://h/"), ("AWS_CREDENTIAL_FILE", "/c")],
            &[("/c", "AWSAccessKeyId=AKC\nAWSSecretKey=SKC\n")],
        )
        .unwrap();
        assert_eq!(s.access_key_id, "AKC");
        let e = run(&Overrides::default(), &[("AWS_ELB_URL", "http://h/")], &[]).unwrap_err();
        assert!(e.contains("no credentials"), "{e}");
        let e = run(&Overrides::default(), &[], &[]).unwrap_err();
        assert!(e.contains("AWS_ELB_URL"), "{e}");
        let o = Overrides {
            access_key_id: Some("x".into()),
            ..Default::default()
        };
        assert!(
            run(&o, &[("AWS_ELB_URL", "h")], &[])
                .unwrap_err()
                .contains("needs -S")
        );
        // One flag replaces half of what the environment gives.
        let o = Overrides {
            secret_key: Some("wrong".into()),
            ..Default::default()
        };
        let s = run(
            &o,
            &[
                ("AWS_ELB_URL", "h"),
                ("AWS_ACCESS_KEY_ID", "AKE"),
                ("AWS_SECRET_ACCESS_KEY", "SKE"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            (s.access_key_id.as_str(), s.secret_key.as_str()),
            ("AKE", "wrong")
        );
        assert!(normalize_url("https://h/").unwrap_err().contains("https"));
        assert_eq!(
            normalize_url("http://h:8773/services/LoadBalancing").unwrap(),
            "http://h:8773/services/LoadBalancing"
        );
    }
}
