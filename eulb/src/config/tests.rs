//! Resolution against a fake environment and file system.

use std::collections::HashMap;

use super::*;

struct World {
    vars: HashMap<String, String>,
    files: HashMap<PathBuf, String>,
}

impl World {
    fn new(vars: &[(&str, &str)], files: &[(&str, &str)]) -> Self {
        Self {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            files: files
                .iter()
                .map(|(k, v)| (PathBuf::from(k), v.to_string()))
                .collect(),
        }
    }

    fn resolve(&self, o: &Overrides) -> Result<Settings, String> {
        let var = |n: &str| self.vars.get(n).cloned();
        let read = |p: &Path| self.files.get(p).cloned();
        let list_dir = |d: &Path| {
            self.files
                .keys()
                .filter(|p| p.parent() == Some(d))
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect()
        };
        resolve(
            o,
            &Sources {
                var: &var,
                read: &read,
                list_dir: &list_dir,
            },
        )
    }
}

fn run(o: &Overrides, vars: &[(&str, &str)], files: &[(&str, &str)]) -> Result<Settings, String> {
    World::new(vars, files).resolve(o)
}

fn keys(s: &Settings) -> (&str, &str) {
    (s.access_key_id.as_str(), s.secret_key.as_str())
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
    assert_eq!(keys(&s), ("AKF", "SKF"));
}

#[test]
fn one_key_flag_alone_is_an_error_as_in_euca2ools() {
    let vars = [
        ("AWS_ELB_URL", "h"),
        ("AWS_ACCESS_KEY_ID", "AKE"),
        ("AWS_SECRET_ACCESS_KEY", "SKE"),
    ];
    let o = Overrides {
        access_key_id: Some("x".into()),
        ..Default::default()
    };
    assert!(run(&o, &vars, &[]).unwrap_err().contains("with -S"));
    let o = Overrides {
        secret_key: Some("x".into()),
        ..Default::default()
    };
    assert!(run(&o, &vars, &[]).unwrap_err().contains("with -I"));
}

#[test]
fn euca_default_region_is_read_before_aws_default_region() {
    let base = [
        ("AWS_ELB_URL", "http://h/"),
        ("AWS_ACCESS_KEY_ID", "AKE"),
        ("AWS_SECRET_ACCESS_KEY", "SKE"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut vars = base.to_vec();
        vars.extend_from_slice(extra);
        run(&Overrides::default(), &vars, &[]).unwrap().region
    };
    assert_eq!(
        with(&[
            ("AWS_DEFAULT_REGION", "aws-region"),
            ("EUCA_DEFAULT_REGION", "euca-region")
        ]),
        "euca-region"
    );
    assert_eq!(with(&[("AWS_DEFAULT_REGION", "aws-region")]), "aws-region");
    assert_eq!(
        with(&[
            ("AWS_REGION", "extra"),
            ("AWS_DEFAULT_REGION", "aws-region")
        ]),
        "aws-region"
    );
    assert_eq!(with(&[("AWS_REGION", "extra")]), "extra");
    assert_eq!(with(&[]), DEFAULT_REGION);
    // REGION:: in the URL and AWS_AUTH_REGION name the signing region outright.
    assert_eq!(
        with(&[("AWS_AUTH_REGION", "auth"), ("EUCA_DEFAULT_REGION", "r")]),
        "auth"
    );
    let s = run(
        &Overrides {
            url: Some("scoped::http://h:1/".into()),
            ..Default::default()
        },
        &base,
        &[],
    )
    .unwrap();
    assert_eq!(
        (s.url.as_str(), s.region.as_str()),
        ("http://h:1/", "scoped")
    );
}

/// A system file, a conf.d file and a user file, written the way euca2ools' documentation
/// shows them.
const SYSTEM_INI: &str = "\
[global]
default-region = sys-region

[region sys-region]
elasticloadbalancing-url = http://sys.example:8773/
user = sys-user

[region other]
elasticloadbalancing-url = http://other.example:8773/services/LoadBalancing
";
const CONFD_INI: &str = "\
[region sys-region]
elasticloadbalancing-url = http://confd.example:8773/

[user sys-user]
key-id = AK-SYS
secret-key = SK-SYS
";
const USER_INI: &str = "\
[user alice]
key-id = AK-ALICE
secret-key = SK-ALICE

[region sys-region]
user = alice
";

fn euca_files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("/etc/euca2ools/euca2ools.ini", SYSTEM_INI),
        ("/etc/euca2ools/conf.d/site.ini", CONFD_INI),
        ("/home/u/.euca/mine.ini", USER_INI),
    ]
}

#[test]
fn euca2ools_files_later_files_override_earlier_ones() {
    let vars = [("HOME", "/home/u")];
    let s = run(&Overrides::default(), &vars, &euca_files()).unwrap();
    // default-region from [global]; its URL from conf.d (overrides the system file); its user
    // from ~/.euca (overrides the system file's), whose keys are in ~/.euca too.
    assert_eq!(s.url, "http://confd.example:8773/");
    assert_eq!(s.region, "sys-region");
    assert_eq!(keys(&s), ("AK-ALICE", "SK-ALICE"));

    // Without the user file, the system file's user and conf.d's keys.
    let files: Vec<_> = euca_files().into_iter().take(2).collect();
    let s = run(&Overrides::default(), &vars, &files).unwrap();
    assert_eq!(keys(&s), ("AK-SYS", "SK-SYS"));
}

#[test]
fn euca2ools_region_selection_precedence() {
    let files = euca_files();
    let o = |region: &str| Overrides {
        region: Some(region.into()),
        ..Default::default()
    };
    // --region picks another section: its URL and its name for signing.
    let s = run(&o("other"), &[("HOME", "/home/u")], &files);
    // 'other' has no user, so no credentials from the euca files.
    assert!(s.unwrap_err().contains("no credentials"));
    let s = run(&o("sys-user@other"), &[("HOME", "/home/u")], &files).unwrap();
    assert_eq!(s.url, "http://other.example:8773/services/LoadBalancing");
    assert_eq!(s.region, "other");
    assert_eq!(keys(&s), ("AK-SYS", "SK-SYS"));
    // EUCA_DEFAULT_REGION beats AWS_DEFAULT_REGION and [global] default-region.
    let s = run(
        &Overrides::default(),
        &[
            ("HOME", "/home/u"),
            ("EUCA_DEFAULT_REGION", "alice@other"),
            ("AWS_DEFAULT_REGION", "sys-region"),
        ],
        &files,
    )
    .unwrap();
    assert_eq!((s.region.as_str(), keys(&s).0), ("other", "AK-ALICE"));
    // USER@ alone keeps the default region.
    let s = run(&o("sys-user@"), &[("HOME", "/home/u")], &files).unwrap();
    assert_eq!((s.region.as_str(), keys(&s).0), ("sys-region", "AK-SYS"));
    // -U and AWS_ELB_URL beat the files' URL; the environment's keys beat the files' user.
    let s = run(
        &Overrides::default(),
        &[
            ("HOME", "/home/u"),
            ("AWS_ELB_URL", "http://env:1/"),
            ("AWS_ACCESS_KEY", "AKE"),
            ("AWS_SECRET_KEY", "SKE"),
        ],
        &files,
    )
    .unwrap();
    assert_eq!((s.url.as_str(), keys(&s).0), ("http://env:1/", "AKE"));
    assert_eq!(s.region, "sys-region");
    // An unknown user is an error, not a silent fallback.
    let e = run(&o("nobody@"), &[("HOME", "/home/u")], &files).unwrap_err();
    assert!(e.contains("user 'nobody' was not found"), "{e}");
}

#[test]
fn config_path_sysconfdir_and_wildcard_sections() {
    let files = [
        (
            "/opt/euca/euca2ools.ini",
            "[global]\ndefault-region = aws:us-west-2\n",
        ),
        (
            "/opt/euca/conf.d/a.ini",
            "[region aws:*]\nelasticloadbalancing-url = http://wild:1/\nuser = use alias\n",
        ),
        (
            "/opt/euca/conf.d/b.txt",
            "[global]\ndefault-region = ignored\n",
        ),
        (
            "/srv/mine.ini",
            "[user bob]\nkey-id = AKB\nsecret-key = SKB\n\n[region alias]\nuser = bob\n",
        ),
    ];
    // EULB_SYSCONFDIR moves /etc/euca2ools; *.ini only.
    let s = run(
        &Overrides {
            access_key_id: Some("AK".into()),
            secret_key: Some("SK".into()),
            ..Default::default()
        },
        &[("EULB_SYSCONFDIR", "/opt/euca")],
        &files,
    )
    .unwrap();
    assert_eq!(s.url, "http://wild:1/");
    // The section found was the wildcard one: its last part is '*', so the signing region
    // is the section name's tail.
    assert_eq!(s.region, "*");
    // EUCA_CONFIG_PATH replaces the list; `use` follows to another section.
    let s = run(
        &Overrides::default(),
        &[(
            "EUCA_CONFIG_PATH",
            "/opt/euca/euca2ools.ini:/opt/euca/conf.d/*.ini:/srv/*.ini",
        )],
        &files,
    )
    .unwrap();
    assert_eq!(keys(&s), ("AKB", "SKB"));
    // A prefixed section is found by its tail: us-west-2 -> aws:us-west-2.
    let files = [(
        "/etc/euca2ools/euca2ools.ini",
        "[region aws:us-west-2]\nelasticloadbalancing-url = http://w2:1/\n",
    )];
    let s = run(
        &Overrides {
            region: Some("us-west-2".into()),
            access_key_id: Some("AK".into()),
            secret_key: Some("SK".into()),
            ..Default::default()
        },
        &[],
        &files,
    )
    .unwrap();
    assert_eq!(
        (s.url.as_str(), s.region.as_str()),
        ("http://w2:1/", "us-west-2")
    );
}

#[test]
fn malformed_configuration_is_an_error() {
    let e = run(
        &Overrides::default(),
        &[("HOME", "/h")],
        &[("/h/.euca/x.ini", "key = value\n")],
    )
    .unwrap_err();
    assert!(
        e.contains("/h/.euca/x.ini line 1") && e.contains("before any [section]"),
        "{e}"
    );
    let e = run(
        &Overrides::default(),
        &[("HOME", "/h")],
        &[("/h/.euca/x.ini", "[user a@b]\nkey-id = 1\n")],
    )
    .unwrap_err();
    assert!(e.contains("must not contain '@'"), "{e}");
}

#[test]
fn aws_files_after_the_euca2ools_sources() {
    let o = Overrides::default();
    let s = run(
        &o,
        &[
            ("AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING", "http://h:8773"),
            ("AWS_ACCESS_KEY_ID", "AKE"),
            ("AWS_SECRET_ACCESS_KEY", "SKE"),
            ("HOME", "/home/u"),
        ],
        &[("/home/u/.aws/credentials", CREDS)],
    )
    .unwrap();
    assert_eq!(s.url, "http://h:8773/");
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

    // The euca2ools user beats the AWS files.
    let s = run(
        &o,
        &[
            ("AWS_ELB_URL", "http://h/"),
            ("HOME", "/home/u"),
            ("EUCA_DEFAULT_REGION", "sys-region"),
        ],
        &[
            ("/home/u/.aws/credentials", CREDS),
            ("/home/u/.euca/mine.ini", USER_INI),
        ],
    )
    .unwrap();
    assert_eq!(s.access_key_id, "AK-ALICE");
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
    // --profile (an AWS concept) beats the environment, as in the AWS CLI.
    let o = Overrides {
        profile: Some("ops".into()),
        ..Default::default()
    };
    assert_eq!(run(&o, &vars, &files).unwrap().access_key_id, "AKO");
    // USER@ (a euca2ools user) names an AWS profile when no [user] section has that name;
    // the environment's keys still come first, as in euca2ools.
    let o = Overrides {
        region: Some("ops@eu-central-1".into()),
        ..Default::default()
    };
    let s = run(&o, &vars, &files).unwrap();
    assert_eq!(
        (s.access_key_id.as_str(), s.region.as_str()),
        ("AKE", "eu-central-1")
    );
    let s = run(&o, &vars[..2], &files).unwrap();
    assert_eq!(s.access_key_id, "AKO");
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
        &[("/c", "AWSAccessKeyId=AKC # mine\nAWSSecretKey=SKC\n")],
    )
    .unwrap();
    assert_eq!(keys(&s), ("AKC", "SKC"));
    let e = run(&Overrides::default(), &[("AWS_ELB_URL", "http://h/")], &[]).unwrap_err();
    assert!(e.contains("no credentials"), "{e}");
    let e = run(&Overrides::default(), &[], &[]).unwrap_err();
    assert!(e.contains("AWS_ELB_URL"), "{e}");
    assert!(normalize_url("https://h/").unwrap_err().contains("https"));
    assert_eq!(
        normalize_url("http://h:8773/services/LoadBalancing").unwrap(),
        "http://h:8773/services/LoadBalancing"
    );
}

#[test]
fn expansion_and_wildcards() {
    let var = |n: &str| match n {
        "HOME" => Some("/home/u".to_string()),
        "X" => Some("x".to_string()),
        _ => None,
    };
    assert_eq!(expand("~/.euca/*.ini", &var), "/home/u/.euca/*.ini");
    assert_eq!(expand("/a/$X/${X}/$NOPE/b", &var), "/a/x/x/$NOPE/b");
    assert!(wildcard_match("*.ini", "a.ini"));
    assert!(!wildcard_match("*.ini", "a.ini.bak"));
    assert!(wildcard_match("a?c*", "abcdef"));
    assert!(!wildcard_match("a?c", "ac"));
}
