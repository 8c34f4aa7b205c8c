//! Where eulb finds its endpoint, region and credentials, with euca2ools' precedence (its
//! `requestbuilder` rules) first and the AWS tools' sources after them:
//!
//! - **Region and user** ("config view"): `--region [USER@][REGION]`, then `EUCA_DEFAULT_REGION`,
//!   then `AWS_DEFAULT_REGION` (each may be `USER@REGION`), then `default-region` of the
//!   configuration's `[global]` section; then eulb's extras `AWS_REGION`, `EUCA_REGION`. With no
//!   user named, the region section's `user` option names one.
//! - **Endpoint**: `-U/--url`, then `AWS_ELB_URL` (both may be `REGION::URL`), then the selected
//!   region section's `elasticloadbalancing-url`; then eulb's extras `EUCA_ELB_URL`,
//!   `AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING`, `AWS_ENDPOINT_URL`.
//! - **Signing region**: the `REGION::` of the URL, or the region section the URL came from (its
//!   `name` option, else the section name's last `:` part), then `AWS_AUTH_REGION`, then the
//!   selected region, then `~/.aws/config`'s `region`, then `us-east-1`. (euca2ools itself signs
//!   for a placeholder `undefined-<pid>` where eulb uses the selected region.)
//! - **Credentials**: `-I` and `-S` (both, or neither), then `--profile` (AWS files), then
//!   `AWS_ACCESS_KEY_ID`/`AWS_ACCESS_KEY` with `AWS_SECRET_ACCESS_KEY`/`AWS_SECRET_KEY`, then the
//!   file `AWS_CREDENTIAL_FILE` names, then the user section's `key-id`/`secret-key`; then eulb's
//!   extras `EC2_ACCESS_KEY`/`EC2_SECRET_KEY` and the AWS shared credentials and config files.
//!
//! euca2ools' configuration files are read in this order, a later file's value replacing an
//! earlier one's: `/etc/euca2ools/euca2ools.ini`, `/etc/euca2ools/conf.d/*.ini`,
//! `~/.euca/*.ini` (each glob sorted by name). `EUCA_CONFIG_PATH` (colon-separated globs)
//! replaces the list, as in euca2ools; `EULB_SYSCONFDIR` moves `/etc/euca2ools` (eulb's own,
//! for tests and relocated installs). Sections: `[global]`, `[region NAME]`, `[user NAME]`;
//! section names may use `*` wildcards between `:` and option values `use SECTION [OPTION]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the command line says (all optional).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub url: Option<String>,
    /// `REGION`, `USER@REGION` or `USER@`.
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_key: Option<String>,
    pub security_token: Option<String>,
    /// A profile of the AWS shared files.
    pub profile: Option<String>,
}

/// Everything needed to send a request.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// `http://host[:port]/path`.
    pub url: String,
    /// The region of the SigV4 credential scope.
    pub region: String,
    pub access_key_id: String,
    pub secret_key: String,
    pub security_token: Option<String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.url)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// The process environment and file system, as parameters so tests can use their own.
pub struct Sources<'a> {
    /// An environment variable.
    pub var: &'a dyn Fn(&str) -> Option<String>,
    /// A file's text (`None` if it cannot be read).
    pub read: &'a dyn Fn(&Path) -> Option<String>,
    /// The names of a directory's entries.
    pub list_dir: &'a dyn Fn(&Path) -> Vec<String>,
}

impl Sources<'static> {
    /// The real environment and file system.
    pub fn system() -> Self {
        Sources {
            var: &|name| std::env::var(name).ok(),
            read: &|path| std::fs::read_to_string(path).ok(),
            list_dir: &|dir| {
                std::fs::read_dir(dir)
                    .map(|entries| {
                        entries
                            .filter_map(Result::ok)
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default()
            },
        }
    }
}

/// euca2ools' default configuration directory.
pub const DEFAULT_SYSCONFDIR: &str = "/etc/euca2ools";
/// The region signed for when nothing names one.
pub const DEFAULT_REGION: &str = "us-east-1";
/// euca2ools' name of the load balancing service (its `<service>-url` option).
const SERVICE_NAME: &str = "elasticloadbalancing";

/// Environment variables naming the endpoint after `AWS_ELB_URL` and the configuration files.
pub const EXTRA_URL_VARS: [&str; 3] = [
    "EUCA_ELB_URL",
    "AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING",
    "AWS_ENDPOINT_URL",
];

// ---------------------------------------------------------------------------------------------
// INI files.

/// Sections of an INI file in order: name and `key = value` entries (keys lower-cased, as
/// Python's ConfigParser does; `#`/`;` comment lines; `=` or `:` separates).
pub type Ini = Vec<(String, Vec<(String, String)>)>;

/// Parses an INI file; `source` names it in errors.
pub fn parse_ini(source: &str, text: &str) -> Result<Ini, String> {
    let mut sections: Ini = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push((name.trim().to_string(), Vec::new()));
            continue;
        }
        let split = trimmed
            .find(['=', ':'])
            .map(|at| (&trimmed[..at], &trimmed[at + 1..]));
        match (split, sections.last_mut()) {
            (Some((k, v)), Some((_, entries))) if !k.trim().is_empty() => {
                entries.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
            (_, None) => {
                return Err(format!(
                    "{source} line {}: '{trimmed}' comes before any [section]",
                    i + 1
                ));
            }
            _ => {
                return Err(format!(
                    "{source} line {}: '{trimmed}' is not a [section] or a key = value line",
                    i + 1
                ));
            }
        }
    }
    Ok(sections)
}

fn ini_get<'a>(ini: &'a Ini, section: &str, key: &str) -> Option<&'a str> {
    ini.iter()
        .filter(|(name, _)| name == section)
        .flat_map(|(_, entries)| entries.iter())
        .rfind(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn has_section(ini: &Ini, section: &str) -> bool {
    ini.iter().any(|(name, _)| name == section)
}

// ---------------------------------------------------------------------------------------------
// euca2ools' configuration.

/// Options by section name.
type Sections = BTreeMap<String, BTreeMap<String, String>>;

/// The merged euca2ools configuration.
#[derive(Debug, Default)]
pub struct EucaConfig {
    globals: BTreeMap<String, String>,
    regions: Sections,
    users: Sections,
}

impl EucaConfig {
    /// Merges the files in order: a later file's value for a section's option replaces an
    /// earlier one.
    pub fn from_files(files: &[(String, String)]) -> Result<Self, String> {
        let mut config = EucaConfig::default();
        for (source, text) in files {
            for (section, entries) in parse_ini(source, text)? {
                let target = if section == "global" {
                    &mut config.globals
                } else if let Some(name) = section.strip_prefix("region ") {
                    let name = checked_section_name(source, "region", name.trim())?;
                    config.regions.entry(name).or_default()
                } else if let Some(name) = section.strip_prefix("user ") {
                    let name = checked_section_name(source, "user", name.trim())?;
                    config.users.entry(name).or_default()
                } else {
                    // Other sections are ignored, as euca2ools does (forward compatibility).
                    continue;
                };
                target.extend(entries);
            }
        }
        Ok(config)
    }

    /// The files euca2ools reads, in order, with their text (unreadable ones skipped).
    pub fn load(src: &Sources<'_>) -> Result<Self, String> {
        let var = |name: &str| (src.var)(name).filter(|v| !v.is_empty());
        let globs: Vec<String> = match var("EUCA_CONFIG_PATH") {
            Some(path) => path.split(':').map(str::to_string).collect(),
            None => {
                let sysconf = var("EULB_SYSCONFDIR").unwrap_or_else(|| DEFAULT_SYSCONFDIR.into());
                vec![
                    format!("{sysconf}/euca2ools.ini"),
                    format!("{sysconf}/conf.d/*.ini"),
                    "~/.euca/*.ini".into(),
                ]
            }
        };
        let mut files = Vec::new();
        for pattern in globs.iter().filter(|g| !g.is_empty()) {
            for path in glob(&expand(pattern, &var), src) {
                if let Some(text) = (src.read)(&path) {
                    files.push((path.display().to_string(), text));
                }
            }
        }
        Self::from_files(&files)
    }

    fn global(&self, option: &str) -> Option<&str> {
        self.globals.get(option).map(String::as_str)
    }

    /// A region option and the section it was found in.
    pub fn region_option(
        &self,
        region: &str,
        option: &str,
    ) -> Result<Option<(String, String)>, String> {
        lookup(&self.regions, region, option, &mut Vec::new())
    }

    /// A user option.
    pub fn user_option(&self, user: &str, option: &str) -> Result<Option<String>, String> {
        Ok(lookup(&self.users, user, option, &mut Vec::new())?.map(|(v, _)| v))
    }

    fn has_user(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }
}

fn checked_section_name(source: &str, kind: &str, name: &str) -> Result<String, String> {
    if name.is_empty() || name.split(':').any(str::is_empty) {
        return Err(format!(
            "{source}: {kind} section '{name}' must not contain an empty namespace"
        ));
    }
    if name.contains('@') {
        return Err(format!(
            "{source}: {kind} section '{name}' must not contain '@'"
        ));
    }
    Ok(name.to_string())
}

/// requestbuilder's lookup: the section itself, then every wildcard combination of its
/// `:`-separated parts from most to least specific (`a:b`, `a:*`, `*:b`, `*:*`), then the one
/// shortest section that ends with it (`us-east-1` finds `aws:us-east-1`), then `*`. A value
/// `use SECTION [OPTION]` continues the lookup there.
fn lookup(
    sections: &Sections,
    section: &str,
    option: &str,
    seen: &mut Vec<String>,
) -> Result<Option<(String, String)>, String> {
    let bits: Vec<&str> = section.split(':').collect();
    let n = bits.len();
    let found = |name: &str| sections.get(name).and_then(|s| s.get(option));
    for mask in 0..(1u32 << n) {
        // mask bit i set = part i replaced by '*'; counting up goes most to least specific
        // in itertools.product((True, False)) order.
        let candidate: Vec<&str> = (0..n)
            .map(|i| {
                if mask & (1 << (n - 1 - i)) == 0 {
                    bits[i]
                } else {
                    "*"
                }
            })
            .collect();
        let candidate = candidate.join(":");
        if candidate == "*" {
            continue; // the global default comes last
        }
        if let Some(value) = found(&candidate) {
            return follow(sections, section, &candidate, value, option, seen);
        }
    }
    let mut prefixed: Vec<&String> = sections
        .keys()
        .filter(|name| {
            let name_bits: Vec<&str> = name.split(':').collect();
            name_bits.len() > n && name_bits[name_bits.len() - n..] == bits[..]
        })
        .collect();
    if let Some(shortest) = prefixed.iter().map(|s| s.split(':').count()).min() {
        prefixed.retain(|s| s.split(':').count() == shortest);
        if prefixed.len() > 1 {
            let names: Vec<&str> = prefixed.iter().map(|s| s.as_str()).collect();
            return Err(format!(
                "'{section}' is ambiguous; closest matches are {}",
                names.join(", ")
            ));
        }
        let target = prefixed[0].clone();
        if !seen.contains(&target) {
            seen.push(section.to_string());
            return lookup(sections, &target, option, seen);
        }
    }
    match found("*") {
        Some(value) => Ok(Some((value.clone(), "*".to_string()))),
        None => Ok(None),
    }
}

fn follow(
    sections: &Sections,
    section: &str,
    found_in: &str,
    value: &str,
    option: &str,
    seen: &mut Vec<String>,
) -> Result<Option<(String, String)>, String> {
    let Some(target) = value.strip_prefix("use ") else {
        return Ok(Some((value.to_string(), found_in.to_string())));
    };
    let mut words = target.split_whitespace();
    let Some(new_section) = words.next() else {
        return Err(format!("something must follow 'use' in '{value}'"));
    };
    let new_option = words.next().unwrap_or(option);
    if seen.iter().any(|s| s == new_section) {
        // A loop: keep the value as written, as euca2ools does.
        return Ok(Some((value.to_string(), found_in.to_string())));
    }
    seen.push(section.to_string());
    lookup(sections, new_section, new_option, seen)
}

/// `~` and `$VAR`/`${VAR}` expansion (unset variables stay as written, as in Python).
fn expand(pattern: &str, var: &dyn Fn(&str) -> Option<String>) -> String {
    let mut text = pattern.to_string();
    if let Some(rest) = text.strip_prefix('~')
        && (rest.is_empty() || rest.starts_with('/'))
        && let Some(home) = var("HOME")
    {
        text = format!("{home}{rest}");
    }
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match var(name).filter(|_| !name.is_empty()) {
            Some(value) => out.push_str(&value),
            None => out.push_str(&rest[at..at + 1 + len]),
        }
        rest = &rest[at + 1 + len..];
    }
    out.push_str(rest);
    out
}

/// The files a pattern names: wildcards (`*`, `?`) in its last component only, matches sorted
/// by name; a pattern without wildcards names itself.
fn glob(pattern: &str, src: &Sources<'_>) -> Vec<PathBuf> {
    let path = Path::new(pattern);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return vec![path.to_path_buf()];
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut names: Vec<String> = (src.list_dir)(dir)
        .into_iter()
        .filter(|n| !n.starts_with('.') && wildcard_match(&name, n))
        .collect();
    names.sort();
    names.into_iter().map(|n| dir.join(n)).collect()
}

/// Shell-style `*` and `?` over the bytes of a file name (names are short, so the plain
/// recursive form is fine).
fn wildcard_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.split_first(), t.split_first()) {
            (None, None) => true,
            (Some((b'*', rest)), _) => go(rest, t) || (!t.is_empty() && go(p, &t[1..])),
            (Some((&pc, p_rest)), Some((&tc, t_rest))) if pc == b'?' || pc == tc => {
                go(p_rest, t_rest)
            }
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Resolution.

/// `[USER@][REGION]` -> (user, region), empty parts as `None`.
fn parse_region(text: &str) -> (Option<String>, Option<String>) {
    let (user, region) = match text.split_once('@') {
        Some((user, region)) => (user, region),
        None => ("", text),
    };
    let some = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    (some(user), some(region))
}

/// `REGION::URL` -> (URL, region).
fn parse_endpoint(text: &str) -> (String, Option<String>) {
    match text.split_once("::") {
        Some((region, url)) => (
            url.to_string(),
            Some(region.to_string()).filter(|r| !r.is_empty()),
        ),
        None => (text.to_string(), None),
    }
}

type Credentials = (String, String, Option<String>);

/// Resolves the settings from the command line, the environment and the files.
pub fn resolve(o: &Overrides, src: &Sources<'_>) -> Result<Settings, String> {
    let var = |name: &str| (src.var)(name).filter(|v| !v.trim().is_empty());
    let euca = EucaConfig::load(src)?;

    // Region and user, each half from the first source that names it.
    let (mut user, mut region): (Option<String>, Option<String>) = (None, None);
    let mut offer = |(u, r): (Option<String>, Option<String>)| {
        if user.is_none() {
            user = u;
        }
        if region.is_none() {
            region = r;
        }
    };
    let explicit_user = o.region.as_deref().map(parse_region).and_then(|(u, _)| u);
    if let Some(r) = &o.region {
        offer(parse_region(r));
    }
    if let Some(value) = ["EUCA_DEFAULT_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|v| var(v))
    {
        offer(parse_region(&value));
    }
    offer((None, euca.global("default-region").map(str::to_string)));
    for extra in ["AWS_REGION", "EUCA_REGION"] {
        offer((None, var(extra)));
    }
    if user.is_none()
        && let Some(r) = &region
    {
        user = euca.region_option(r, "user")?.map(|(v, _)| v);
    }

    // Endpoint, and the region it implies.
    let from_config = |r: &Option<String>| -> Result<Option<(String, Option<String>)>, String> {
        let Some(r) = r else { return Ok(None) };
        let Some((url, section)) = euca.region_option(r, &format!("{SERVICE_NAME}-url"))? else {
            return Ok(None);
        };
        let name = match euca.region_option(&section, "name")? {
            Some((name, _)) => name,
            None => section.rsplit(':').next().unwrap_or(&section).to_string(),
        };
        Ok(Some((url, Some(name))))
    };
    let (url, url_region) = match o.url.clone().or_else(|| var("AWS_ELB_URL")) {
        Some(text) => parse_endpoint(&text),
        None => match from_config(&region)? {
            Some(found) => found,
            None => EXTRA_URL_VARS
                .iter()
                .find_map(|v| var(v))
                .map(|text| parse_endpoint(&text))
                .ok_or_else(|| {
                    "no load balancing service URL: use -U/--url, set AWS_ELB_URL, or give the \
                     region's elasticloadbalancing-url in a euca2ools configuration file"
                        .to_string()
                })?,
        },
    };
    let url = normalize_url(&url)?;

    // The AWS shared files (eulb's extras).
    let home = var("HOME").map(PathBuf::from);
    let aws_file = |env: &str, name: &str| -> Result<Ini, String> {
        let path = var(env)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)));
        match path.and_then(|p| (src.read)(&p).map(|t| (p, t))) {
            Some((p, text)) => parse_ini(&p.display().to_string(), &text),
            None => Ok(Ini::new()),
        }
    };
    let aws_credentials = aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")?;
    let aws_config = aws_file("AWS_CONFIG_FILE", "config")?;
    let config_section = |profile: &str| {
        if profile == "default" {
            "default".to_string()
        } else {
            format!("profile {profile}")
        }
    };
    let profile_exists =
        |p: &str| has_section(&aws_credentials, p) || has_section(&aws_config, &config_section(p));
    let env_profile = var("AWS_PROFILE").or_else(|| var("AWS_DEFAULT_PROFILE"));
    let aws_profile = o
        .profile
        .clone()
        .or_else(|| explicit_user.clone().filter(|u| profile_exists(u)))
        .or(env_profile)
        .unwrap_or_else(|| "default".to_string());
    let aws_get = |profile: &str, key: &str| {
        ini_get(&aws_credentials, profile, key)
            .or_else(|| ini_get(&aws_config, &config_section(profile), key))
            .map(str::to_string)
    };

    // Signing region.
    let signing_region = url_region
        .or_else(|| var("AWS_AUTH_REGION"))
        .or(region)
        .or_else(|| aws_get(&aws_profile, "region"))
        .unwrap_or_else(|| DEFAULT_REGION.to_string());

    // Credentials.
    let from_profile = |profile: &str| -> Option<Credentials> {
        Some((
            aws_get(profile, "aws_access_key_id")?,
            aws_get(profile, "aws_secret_access_key")?,
            aws_get(profile, "aws_session_token"),
        ))
    };
    let credentials: Credentials = match (&o.access_key_id, &o.secret_key) {
        (Some(id), Some(secret)) => (id.clone(), secret.clone(), None),
        (Some(_), None) => {
            return Err("missing secret key; please supply one with -S".into());
        }
        (None, Some(_)) => {
            return Err("missing access key ID; please supply one with -I".into());
        }
        (None, None) => {
            if let Some(p) = &o.profile {
                if !profile_exists(p) {
                    return Err(format!("the profile '{p}' was not found in the AWS files"));
                }
                from_profile(p).ok_or_else(|| format!("the profile '{p}' has no credentials"))?
            } else {
                if let Some(u) = &explicit_user
                    && !euca.has_user(u)
                    && !profile_exists(u)
                {
                    return Err(format!(
                        "the user '{u}' was not found: no [user {u}] section in the euca2ools \
                         configuration and no profile '{u}' in the AWS files"
                    ));
                }
                let from_env = || -> Option<Credentials> {
                    let id = var("AWS_ACCESS_KEY_ID").or_else(|| var("AWS_ACCESS_KEY"))?;
                    let secret = var("AWS_SECRET_ACCESS_KEY").or_else(|| var("AWS_SECRET_KEY"))?;
                    let token = var("AWS_SECURITY_TOKEN").or_else(|| var("AWS_SESSION_TOKEN"));
                    Some((id, secret, token))
                };
                let from_credential_file = || -> Option<Credentials> {
                    let path = expand(&var("AWS_CREDENTIAL_FILE")?, &var);
                    let text = (src.read)(Path::new(&path))?;
                    let get = |key: &str| {
                        text.lines()
                            .map(|l| l.split('#').next().unwrap_or_default())
                            .filter_map(|l| l.split_once('='))
                            .find(|(k, _)| k.trim() == key)
                            .map(|(_, v)| v.trim().to_string())
                    };
                    Some((get("AWSAccessKeyId")?, get("AWSSecretKey")?, None))
                };
                let from_euca_user = || -> Result<Option<Credentials>, String> {
                    let Some(u) = &user else { return Ok(None) };
                    let id = euca.user_option(u, "key-id")?;
                    let secret = euca.user_option(u, "secret-key")?;
                    Ok(id.zip(secret).map(|(id, secret)| (id, secret, None)))
                };
                let from_ec2_env = || -> Option<Credentials> {
                    Some((var("EC2_ACCESS_KEY")?, var("EC2_SECRET_KEY")?, None))
                };
                let found = match from_env().or_else(from_credential_file) {
                    Some(c) => Some(c),
                    None => from_euca_user()?,
                };
                found
                    .or_else(from_ec2_env)
                    .or_else(|| from_profile(&aws_profile))
                    .ok_or_else(|| {
                        "no credentials: use -I and -S, set AWS_ACCESS_KEY_ID and \
                         AWS_SECRET_ACCESS_KEY, give key-id and secret-key in a euca2ools \
                         [user] section, or write ~/.aws/credentials"
                            .to_string()
                    })?
            }
        }
    };
    let (access_key_id, secret_key, token) = credentials;
    Ok(Settings {
        url,
        region: signing_region,
        access_key_id,
        secret_key,
        security_token: o.security_token.clone().or(token),
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
mod tests;
