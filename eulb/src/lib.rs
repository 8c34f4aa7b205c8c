//! `eulb`: the euca2ools-compatible command-line client of the ELB Query API.
//!
//! One binary provides the 28 `eulb-*` commands of euca2ools. It is run as `eulb COMMAND ...`
//! or, through a symlink named `eulb-COMMAND`, as `eulb-COMMAND ...` (the command is taken
//! from the file name the program was started as). Requests are form-encoded POSTs signed
//! with SigV4 (the `elb-sigv4` crate), sent by [`client`]; the endpoint, region and
//! credentials come from the options, the environment and euca2ools' configuration files
//! ([`config`]); options and output follow euca2ools 3.4 ([`commands`], [`argtypes`]).
//!
//! eulb knows the API's shapes, not its rules: values go to the service as given, and what
//! the service refuses is printed with its error code.

pub mod argtypes;
pub mod client;
pub mod commands;
pub mod config;
pub mod xmltree;

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use client::{CliError, HttpApi};
use commands::*;

/// One command of the table.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// The name after `eulb-`.
    pub name: &'static str,
    about: fn() -> String,
    run: fn(&str, Vec<OsString>) -> ExitCode,
}

impl Entry {
    /// The first sentence of the command's description.
    pub fn summary(&self) -> String {
        let about = (self.about)();
        let first = about.lines().next().unwrap_or_default();
        match first.find(".  ") {
            Some(end) => first[..=end].to_string(),
            None => first.to_string(),
        }
    }
}

fn entry<T: EulbCommand>() -> Entry {
    Entry {
        name: T::NAME,
        about: || {
            T::command()
                .get_about()
                .map(ToString::to_string)
                .unwrap_or_default()
        },
        run: run_command::<T>,
    }
}

/// All commands, in alphabetical order.
pub fn commands() -> [Entry; 28] {
    [
        entry::<ApplySecurityGroupsToLb>(),
        entry::<AttachLbToSubnets>(),
        entry::<ConfigureHealthcheck>(),
        entry::<CreateAppCookieStickinessPolicy>(),
        entry::<CreateLb>(),
        entry::<CreateLbCookieStickinessPolicy>(),
        entry::<CreateLbListeners>(),
        entry::<CreateLbPolicy>(),
        entry::<CreateTags>(),
        entry::<DeleteLb>(),
        entry::<DeleteLbListeners>(),
        entry::<DeleteLbPolicy>(),
        entry::<DeleteTags>(),
        entry::<DeregisterInstancesFromLb>(),
        entry::<DescribeInstanceHealth>(),
        entry::<DescribeLbAttributes>(),
        entry::<DescribeLbPolicies>(),
        entry::<DescribeLbPolicyTypes>(),
        entry::<DescribeLbs>(),
        entry::<DescribeTags>(),
        entry::<DetachLbFromSubnets>(),
        entry::<DisableZonesForLb>(),
        entry::<EnableZonesForLb>(),
        entry::<ModifyLbAttributes>(),
        entry::<RegisterInstancesWithLb>(),
        entry::<SetLbListenerSslCert>(),
        entry::<SetLbPoliciesForBackendServer>(),
        entry::<SetLbPoliciesOfListener>(),
    ]
}

/// The `eulb-*` program names, one per command.
pub fn command_names() -> Vec<String> {
    commands()
        .iter()
        .map(|e| format!("eulb-{}", e.name))
        .collect()
}

fn find(name: &str) -> Option<Entry> {
    let name = name.strip_prefix("eulb-").unwrap_or(name);
    commands().into_iter().find(|e| e.name == name)
}

/// Joins fields with tabs; empty fields stay as empty columns, or print `(nil)`.
pub fn tabify(fields: &[String], show_empty: bool) -> String {
    fields
        .iter()
        .map(|f| {
            if f.is_empty() && show_empty {
                "(nil)"
            } else {
                f.as_str()
            }
        })
        .collect::<Vec<_>>()
        .join("\t")
}

/// Parses the arguments of command `T` (`args[0]` is the program name), sends its request
/// and prints the result. Exit status: 0 done, 1 the request failed, 2 bad usage.
fn run_command<T: EulbCommand>(display: &str, args: Vec<OsString>) -> ExitCode {
    let program = format!("eulb-{}", T::NAME);
    let parsed = T::command()
        .bin_name(display)
        .try_get_matches_from(args)
        .and_then(|m| T::from_arg_matches(&m));
    let cmd = match parsed {
        Ok(cmd) => cmd,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let common = cmd.common();
    let overrides = config::Overrides {
        url: common.url.clone(),
        region: common.region.clone(),
        access_key_id: common.access_key_id.clone(),
        secret_key: common.secret_key.clone(),
        security_token: common.security_token.clone(),
        profile: common.profile.clone(),
    };
    let result = config::resolve(&overrides, &config::Sources::system())
        .map_err(CliError::Other)
        .and_then(|settings| HttpApi::new(settings, common.debug))
        .and_then(|api| cmd.run(&api));
    match result {
        Ok(rows) => {
            let mut out = std::io::stdout().lock();
            for row in rows {
                // A closed pipe (`| head`) is not an error worth reporting.
                if writeln!(out, "{}", tabify(&row, common.show_empty_fields)).is_err() {
                    break;
                }
            }
            let _ = out.flush();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{program}: {e}");
            ExitCode::from(1)
        }
    }
}

fn top_help() -> String {
    let mut text = String::from(
        "eulb: euca2ools-compatible client of the Elastic Load Balancing Query API (2012-06-01)\n\
         \n\
         Usage: eulb COMMAND [OPTIONS] [ARGS]...\n\
        \x20      eulb-COMMAND [OPTIONS] [ARGS]...   (through a symlink named eulb-COMMAND)\n\
         \n\
         Commands:\n",
    );
    let width = commands().iter().map(|e| e.name.len()).max().unwrap_or(0);
    for e in commands() {
        text.push_str(&format!("  {:width$}  {}\n", e.name, e.summary()));
    }
    text.push_str(
        "\n\
         Options:\n\
        \x20 -h, --help                 Print this help (eulb COMMAND --help: help of a command)\n\
        \x20 -V, --version              Print the version\n\
        \x20     --print-command-names  Print the eulb-COMMAND names, one a line\n\
         \n\
         Environment:\n\
        \x20 AWS_ELB_URL [REGION::]URL  endpoint (-U); then the region's elasticloadbalancing-url\n\
        \x20 EUCA_DEFAULT_REGION, then AWS_DEFAULT_REGION  [USER@]REGION (--region)\n\
        \x20 AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY  credentials (-I, -S); then \
         AWS_CREDENTIAL_FILE, the [user] section's key-id and secret-key, ~/.aws/credentials\n\
        \x20 EUCA_CONFIG_PATH  colon-separated globs of euca2ools configuration files \
         (default /etc/euca2ools/euca2ools.ini, /etc/euca2ools/conf.d/*.ini, ~/.euca/*.ini; \
         EULB_SYSCONFDIR replaces /etc/euca2ools)\n\
        \x20 AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE  the AWS shared files\n",
    );
    text
}

/// `eulb ARGS...` (the program run under its own name).
fn main_multi(args: Vec<OsString>) -> ExitCode {
    let Some(first) = args.first() else {
        eprint!("{}", top_help());
        return ExitCode::from(2);
    };
    let first = first.to_string_lossy().into_owned();
    match first.as_str() {
        "-h" | "--help" => {
            print!("{}", top_help());
            ExitCode::SUCCESS
        }
        "help" => match args.get(1).map(|a| a.to_string_lossy().into_owned()) {
            None => {
                print!("{}", top_help());
                ExitCode::SUCCESS
            }
            Some(name) => match find(&name) {
                Some(e) => (e.run)(
                    &format!("eulb {}", e.name),
                    vec![OsString::from("eulb"), OsString::from("--help")],
                ),
                None => unknown(&name),
            },
        },
        "-V" | "--version" => {
            println!("eulb {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        "--print-command-names" => {
            for name in command_names() {
                println!("{name}");
            }
            ExitCode::SUCCESS
        }
        name => match find(name) {
            Some(e) => {
                let display = format!("eulb {}", e.name);
                let mut rest = vec![OsString::from(&display)];
                rest.extend(args.into_iter().skip(1));
                (e.run)(&display, rest)
            }
            None => unknown(name),
        },
    }
}

fn unknown(name: &str) -> ExitCode {
    eprintln!("eulb: error: '{name}' is not an eulb command (see 'eulb --help' for the list)");
    ExitCode::from(2)
}

/// The program's entry point: dispatches on the name it was run as, then on the first
/// argument.
pub fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let program = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if args.is_empty() {
        args.push(OsString::from("eulb"));
    }
    if let Some(name) = program.strip_prefix("eulb-") {
        return match find(name) {
            Some(e) => {
                args[0] = OsString::from(&program);
                (e.run)(&program, args)
            }
            None => unknown(name),
        };
    }
    main_multi(args.split_off(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_complete_and_sorted() {
        let names = command_names();
        assert_eq!(names.len(), 28);
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
        assert!(names.contains(&"eulb-set-lb-policies-of-listener".to_string()));
        assert_eq!(find("eulb-create-lb").map(|e| e.name), Some("create-lb"));
        assert_eq!(find("describe-lbs").map(|e| e.name), Some("describe-lbs"));
        assert!(find("frobnicate").is_none());
        for e in commands() {
            assert!(!e.summary().is_empty(), "{} has no description", e.name);
        }
    }

    #[test]
    fn tabify_empty_fields() {
        let fields = vec!["A".to_string(), String::new(), "c".to_string()];
        assert_eq!(tabify(&fields, false), "A\t\tc");
        assert_eq!(tabify(&fields, true), "A\t(nil)\tc");
    }
}
